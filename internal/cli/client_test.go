package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
)

func TestEnvironmentDefaults(t *testing.T) {
	var stdout, stderr testenv.Buffer
	app := newApp(&stdout, &stderr)
	env := map[string]string{"TEMPORAL_ADDRESS": "127.0.0.1:1", "TEMPORAL_NAMESPACE": "ops", "TEMPORAL_API_KEY": "secret",
		"SUDO_USER": "carol", "USER": "root"}
	app.Getenv = func(k string) string { return env[k] }
	// history needs a server: the command line is fine, the dial fails, and a.cfg shows
	// what the environment gave.
	code := app.Run(t.Context(), []string{"history", "x", "--tls=false"})
	assert.Equal(t, ExitFailure, code)
	assert.Equal(t, "127.0.0.1:1", app.cfg.Address)
	assert.Equal(t, "ops", app.cfg.Namespace)
	assert.Equal(t, "secret", app.cfg.APIKey)
	assert.True(t, app.cfg.NoTLS)
	assert.Contains(t, app.cfg.Identity, "cdswap:api-key@", "an API key, not sudo's user, is the requester")
	assert.Contains(t, stderr.String(), "cannot reach Temporal at 127.0.0.1:1")

	delete(env, "TEMPORAL_API_KEY")
	assert.Equal(t, ExitFailure, app.Run(t.Context(), []string{"history", "x"}))
	assert.Contains(t, app.cfg.Identity, "cdswap:carol@", "on a plain connection, sudo's user is the requester")
}

// TestBadTLSFiles checks that the TLS files' errors (built by internal/temporalclient, whose
// tests cover every case) reach the operator as failures, exit code 1, before any dial.
func TestBadTLSFiles(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "missing CA", args: []string{"--tls-ca", filepath.Join(dir, "nope.pem")}, want: "cdswap: read CA file: open " + filepath.Join(dir, "nope.pem")},
		{name: "CA not PEM", args: []string{"--tls-ca", notPEM}, want: "cdswap: CA file " + notPEM + " holds no PEM certificate"},
		{name: "bad key pair", args: []string{"--tls-cert", notPEM, "--tls-key", notPEM}, want: "cdswap: load client certificate " + notPEM},
		{name: "tls off with a server name", args: []string{"--tls-server-name", "temporal.example", "--tls=false"}, want: "cdswap: TLS turned off, yet TLS files"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr testenv.Buffer
			app := newApp(&stdout, &stderr)
			app.Getenv = func(string) string { return "" }
			args := append([]string{"list", "--address", "127.0.0.1:1"}, tt.args...)
			code := app.Run(t.Context(), args)
			assert.Equal(t, ExitFailure, code, "cdswap %s\n%s", strings.Join(args, " "), stderr.String())
			assert.Contains(t, stderr.String(), tt.want)
			assert.NotContains(t, stderr.String(), "cannot reach Temporal", "the files are checked before the dial")
		})
	}
}

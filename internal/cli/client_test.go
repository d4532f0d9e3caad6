package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
)

// writeCert writes a self-signed certificate and its key as PEM files in dir.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cdswap-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile
}

func TestClientConfigOptions(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))

	tests := []struct {
		name      string
		in        ClientConfig
		wantTLS   bool
		wantCerts int
		wantCA    bool
		wantNoTLS bool
		wantCreds bool
		wantErr   string
	}{
		{name: "zero value", in: ClientConfig{}},
		{name: "api key", in: ClientConfig{APIKey: "k"}, wantCreds: true},
		{name: "api key in plain text", in: ClientConfig{APIKey: "k", NoTLS: true}, wantCreds: true, wantNoTLS: true},
		{name: "tls with system roots", in: ClientConfig{TLS: true}, wantTLS: true},
		{name: "server name only", in: ClientConfig{TLSServerName: "temporal.example"}, wantTLS: true},
		{name: "mtls", in: ClientConfig{TLSCert: cert, TLSKey: key, TLSCA: cert}, wantTLS: true, wantCerts: 1, wantCA: true},
		{name: "cert without key", in: ClientConfig{TLSCert: cert}, wantErr: "--tls-cert and --tls-key go together"},
		{name: "missing CA", in: ClientConfig{TLSCA: filepath.Join(dir, "nope.pem")}, wantErr: "read CA file"},
		{name: "CA not PEM", in: ClientConfig{TLSCA: notPEM}, wantErr: "holds no PEM certificate"},
		{name: "key not matching", in: ClientConfig{TLSCert: cert, TLSKey: notPEM}, wantErr: "load client certificate"},
		{name: "tls off with files", in: ClientConfig{TLSCA: cert, NoTLS: true}, wantErr: "TLS turned off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := tt.in.Options()
			if tt.wantErr != "" {
				assert.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, DefaultAddress, opts.HostPort)
			assert.Equal(t, "default", opts.Namespace)
			tlsConf := opts.ConnectionOptions.TLS
			assert.Equal(t, tt.wantTLS, tlsConf != nil, "TLS config")
			assert.Equal(t, tt.wantNoTLS, opts.ConnectionOptions.TLSDisabled, "TLSDisabled")
			assert.Equal(t, tt.wantCreds, opts.Credentials != nil, "credentials")
			if tlsConf != nil {
				assert.Len(t, tlsConf.Certificates, tt.wantCerts)
				assert.Equal(t, tt.wantCA, tlsConf.RootCAs != nil, "RootCAs")
				assert.Equal(t, tt.in.TLSServerName, tlsConf.ServerName)
			}
		})
	}
}

func TestEnvironmentDefaults(t *testing.T) {
	var stdout, stderr testenv.Buffer
	app := newApp(&stdout, &stderr)
	env := map[string]string{"TEMPORAL_ADDRESS": "127.0.0.1:1", "TEMPORAL_API_KEY": "secret", "SUDO_USER": "carol", "USER": "root"}
	app.Getenv = func(k string) string { return env[k] }
	// history needs a server: the command line is fine, the dial fails, and a.cfg shows
	// what the environment gave.
	code := app.Run(t.Context(), []string{"history", "x", "--tls=false"})
	assert.Equal(t, ExitFailure, code)
	assert.Equal(t, "127.0.0.1:1", app.cfg.Address)
	assert.Equal(t, "secret", app.cfg.APIKey)
	assert.True(t, app.cfg.NoTLS)
	assert.Contains(t, app.cfg.Identity, "cdswap:carol@", "sudo's user is the requester")
	assert.Contains(t, stderr.String(), "cannot reach Temporal at 127.0.0.1:1")
}

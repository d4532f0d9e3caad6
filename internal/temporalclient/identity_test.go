package temporalclient

import (
	"crypto/x509/pkix"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// jwt builds an unsigned-looking JWT around claims (the signature is never checked here).
func jwt(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc([]byte(claims)) + "." + enc([]byte("sig"))
}

func TestPrincipal(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCertFor(t, dir, pkix.Name{CommonName: "alice", OrganizationalUnit: []string{"ops"}, Organization: []string{"Example"}})
	evilDir := t.TempDir()
	evilCert, evilKey := writeCertFor(t, evilDir, pkix.Name{CommonName: "mallory\x1b]0;owned\a" + strings.Repeat("x", 400)})
	tests := []struct {
		name string
		cfg  Config
		want Principal
	}{
		{"plain", Config{}, Principal{}},
		{"TLS without a client certificate", Config{TLS: true, TLSCA: cert}, Principal{}},
		{"mTLS", Config{TLSCert: cert, TLSKey: key}, Principal{Name: "CN=alice,OU=ops,O=Example", Source: SourceMTLS}},
		{"mTLS wins over an API key", Config{TLSCert: cert, TLSKey: key, APIKey: jwt(`{"sub":"bob"}`)},
			Principal{Name: "CN=alice,OU=ops,O=Example", Source: SourceMTLS}},
		{"JWT API key", Config{APIKey: jwt(`{"sub":"svc-deploy@example.com","exp":1}`)}, Principal{Name: "svc-deploy@example.com", Source: SourceJWT}},
		{"JWT without sub", Config{APIKey: jwt(`{"exp":1}`)}, Principal{Name: "api-key", Source: SourceAPIKey}},
		{"JWT payload not JSON", Config{APIKey: "a." + base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".c"}, Principal{Name: "api-key", Source: SourceAPIKey}},
		{"opaque API key", Config{APIKey: "tmprl_abcdef"}, Principal{Name: "api-key", Source: SourceAPIKey}},
		{"JWT sub with escapes", Config{APIKey: jwt(`{"sub":"eve\u001b[2J"}`)}, Principal{Name: `eve\x1b[2J`, Source: SourceJWT}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.Principal()
			require.NoError(t, err)
			assert.Equal(t, tt.want, got, "Principal(%+v)", tt.cfg)
		})
	}

	got, err := Config{TLSCert: evilCert, TLSKey: evilKey}.Principal()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(got.Name, `CN=mallory\x1b]0\\;owned\x07xxx`), "Principal().Name = %q", got.Name)
	assert.LessOrEqual(t, len(got.Name), MaxPrincipal)

	_, err = Config{TLSCert: filepath.Join(dir, "missing.pem"), TLSKey: key}.Principal()
	assert.ErrorContains(t, err, "missing.pem")
}

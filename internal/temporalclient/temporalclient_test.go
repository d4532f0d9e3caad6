package temporalclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/internal/testenv"
)

// writeCert writes a self-signed certificate and its key as PEM files in dir.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	return writeCertFor(t, dir, pkix.Name{CommonName: "cdswap-test"})
}

// writeCertFor writes a self-signed certificate for subject and its key as PEM files in dir.
func writeCertFor(t *testing.T, dir string, subject pkix.Name) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: subject,
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

func TestOptions(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))

	tests := []struct {
		name          string
		in            Config
		wantHostPort  string
		wantNamespace string
		wantTLS       bool
		wantCerts     int
		wantCA        bool
		wantNoTLS     bool
		wantCreds     bool
		wantErr       string
	}{
		{name: "zero value", in: Config{}},
		{name: "address, namespace and identity", in: Config{Address: "temporal.example:7233", Namespace: "ops", Identity: "me@here",
			Logger: slog.New(slog.DiscardHandler)}, wantHostPort: "temporal.example:7233", wantNamespace: "ops"},
		{name: "api key", in: Config{APIKey: "k"}, wantCreds: true},
		{name: "api key in plain text", in: Config{APIKey: "k", NoTLS: true}, wantCreds: true, wantNoTLS: true},
		{name: "plain text", in: Config{NoTLS: true}, wantNoTLS: true},
		{name: "tls with system roots", in: Config{TLS: true}, wantTLS: true},
		{name: "server name only", in: Config{TLSServerName: "temporal.example"}, wantTLS: true},
		{name: "CA only", in: Config{TLSCA: cert}, wantTLS: true, wantCA: true},
		{name: "mtls", in: Config{TLSCert: cert, TLSKey: key}, wantTLS: true, wantCerts: 1},
		{name: "mtls with CA and api key", in: Config{TLSCert: cert, TLSKey: key, TLSCA: cert, APIKey: "k"},
			wantTLS: true, wantCerts: 1, wantCA: true, wantCreds: true},
		{name: "cert without key", in: Config{TLSCert: cert}, wantErr: "--tls-cert and --tls-key go together: give both, or neither"},
		{name: "key without cert", in: Config{TLSKey: key}, wantErr: "--tls-cert and --tls-key go together: give both, or neither"},
		{name: "missing CA", in: Config{TLSCA: filepath.Join(dir, "nope.pem")}, wantErr: "read CA file: open " + filepath.Join(dir, "nope.pem")},
		{name: "CA not PEM", in: Config{TLSCA: notPEM}, wantErr: "CA file " + notPEM + " holds no PEM certificate"},
		{name: "key not matching", in: Config{TLSCert: cert, TLSKey: notPEM}, wantErr: "load client certificate " + cert + " and key " + notPEM + ": "},
		{name: "tls off with files", in: Config{TLSCA: cert, NoTLS: true}, wantErr: "TLS turned off, yet TLS files or a server name were given"},
		{name: "tls off with a server name", in: Config{TLSServerName: "temporal.example", NoTLS: true}, wantErr: "TLS turned off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := tt.in.Options()
			if tt.wantErr != "" {
				assert.ErrorContains(t, err, tt.wantErr, "Options(%+v)", tt.in)
				assert.Equal(t, client.Options{}, opts, "Options(%+v) on error", tt.in)
				return
			}
			require.NoError(t, err, "Options(%+v)", tt.in)
			wantHostPort, wantNamespace := tt.wantHostPort, tt.wantNamespace
			if wantHostPort == "" {
				wantHostPort = DefaultAddress
			}
			if wantNamespace == "" {
				wantNamespace = DefaultNamespace
			}
			assert.Equal(t, wantHostPort, opts.HostPort, "HostPort")
			assert.Equal(t, wantHostPort, tt.in.HostPort(), "Config.HostPort()")
			assert.Equal(t, wantNamespace, opts.Namespace, "Namespace")
			assert.Equal(t, wantNamespace, tt.in.NamespaceName(), "Config.NamespaceName()")
			assert.Equal(t, tt.in.Identity, opts.Identity, "Identity")
			assert.NotNil(t, opts.Logger, "Logger (nil would let the SDK log on its own)")
			tlsConf := opts.ConnectionOptions.TLS
			assert.Equal(t, tt.wantTLS, tlsConf != nil, "TLS config")
			assert.Equal(t, tt.wantNoTLS, opts.ConnectionOptions.TLSDisabled, "TLSDisabled")
			assert.Equal(t, tt.wantCreds, opts.Credentials != nil, "credentials")
			if tlsConf != nil {
				assert.Len(t, tlsConf.Certificates, tt.wantCerts)
				assert.Equal(t, tt.wantCA, tlsConf.RootCAs != nil, "RootCAs")
				assert.Equal(t, tt.in.TLSServerName, tlsConf.ServerName)
				assert.GreaterOrEqual(t, tlsConf.MinVersion, uint16(0x0303), "MinVersion is at least TLS 1.2")
			}
		})
	}
}

// TestOptionsOnTheWire dials a loopback listener with the options and looks at the first
// bytes the SDK sends: a TLS handshake record, or HTTP/2's plain-text preface. It shows
// that an API key alone gets TLS from the SDK (as the worker's and the CLI's --api-key
// promise) and that NoTLS keeps it off.
func TestOptionsOnTheWire(t *testing.T) {
	const (
		tlsHandshake = "\x16\x03" // a TLS record of type handshake, version 3.x
		h2Preface    = "PR"       // of "PRI * HTTP/2.0", gRPC's plain-text start
	)
	tests := []struct {
		name string
		in   Config
		want string
	}{
		{name: "zero value", in: Config{}, want: h2Preface},
		{name: "api key", in: Config{APIKey: "k"}, want: tlsHandshake},
		{name: "api key in plain text", in: Config{APIKey: "k", NoTLS: true}, want: h2Preface},
		{name: "tls", in: Config{TLS: true}, want: tlsHandshake},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(t, err)
			defer ln.Close()
			// Accept and Read get deadlines so that a client that never dials fails the
			// test instead of hanging it.
			deadline := time.Now().Add(15 * time.Second)
			require.NoError(t, ln.SetDeadline(deadline))
			cfg := tt.in
			cfg.Address = ln.Addr().String()
			opts, err := cfg.Options()
			require.NoError(t, err)

			ctx, cancel := context.WithCancel(testenv.Context(t, 20*time.Second))
			dialed := make(chan error, 1)
			go func() {
				c, err := client.DialContext(ctx, opts)
				if err == nil {
					c.Close()
				}
				dialed <- err
			}()
			defer func() {
				cancel()
				<-dialed
			}()

			conn, err := ln.Accept()
			require.NoError(t, err)
			defer conn.Close()
			require.NoError(t, conn.SetReadDeadline(deadline))
			got := make([]byte, 2)
			_, err = io.ReadFull(conn, got)
			require.NoError(t, err)
			assert.Equal(t, []byte(tt.want), got, "first bytes sent with Options(%+v)", tt.in)
		})
	}
}

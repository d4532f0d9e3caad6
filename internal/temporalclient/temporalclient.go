// Package temporalclient is how cdswap's programs reach Temporal: one set of connection
// flags (--address, --namespace, --tls, --tls-cert, --tls-key, --tls-ca, --tls-server-name,
// --api-key) with one environment fallback ($TEMPORAL_ADDRESS, $TEMPORAL_NAMESPACE,
// $TEMPORAL_API_KEY), registered by AddFlags on the worker's and the CLI's command lines,
// and a Config that turns them into the SDK's client.Options, so that every program reaches
// a server, and Temporal Cloud, the same way.
package temporalclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
)

// DefaultAddress is the frontend dialled when Config.Address is empty: the local dev server
// of `make demo` and `cdswap dev-server`.
const DefaultAddress = "127.0.0.1:7233"

// DefaultNamespace is the namespace used when Config.Namespace is empty.
const DefaultNamespace = "default"

// Config says how to reach Temporal. The zero value dials DefaultAddress, namespace
// DefaultNamespace, in plain text, with the SDK's own log messages dropped.
type Config struct {
	// Address is the frontend host:port ("" = DefaultAddress).
	Address string
	// Namespace ("" = DefaultNamespace).
	Namespace string
	// TLSCert and TLSKey are a client certificate and its key (PEM files) for mTLS: both or
	// neither.
	TLSCert, TLSKey string
	// TLSCA is a PEM file of CAs to verify the server with ("" = the system's roots).
	TLSCA string
	// TLSServerName overrides the name checked in the server's certificate ("" = the host
	// of Address).
	TLSServerName string
	// TLS turns TLS on with the system's roots even without any of the settings above. An
	// API key or any TLS setting turns it on too (default false).
	TLS bool
	// NoTLS keeps the connection in plain text even with an API key, which the SDK would
	// otherwise send over TLS (default false). Credentials then travel in the clear: for
	// tests against a local server only. It conflicts with the TLS files and server name.
	NoTLS bool
	// APIKey is sent as a bearer token, as Temporal Cloud wants ("" = none).
	APIKey string
	// Identity is the client identity recorded in the histories of what the client starts,
	// signals or cancels, and of the tasks a worker polls ("" = the SDK's pid@hostname).
	Identity string
	// Logger receives the SDK's log messages (nil = they are dropped).
	Logger *slog.Logger
}

// HostPort is the frontend Options dials: Address, or DefaultAddress when it is empty.
func (c Config) HostPort() string {
	if c.Address == "" {
		return DefaultAddress
	}
	return c.Address
}

// NamespaceName is the namespace Options uses: Namespace, or DefaultNamespace when it is
// empty.
func (c Config) NamespaceName() string {
	if c.Namespace == "" {
		return DefaultNamespace
	}
	return c.Namespace
}

// Options returns the SDK client options for c. It reads the TLS files, so its errors are
// about them (a missing or unreadable file, a certificate without its key) or about NoTLS
// given together with TLS settings; each names the file or the flags at fault.
//
// An API key alone leaves ConnectionOptions.TLS nil: the SDK then turns TLS on with the
// system's roots when it dials, unless NoTLS set TLSDisabled.
func (c Config) Options() (client.Options, error) {
	logger := c.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	opts := client.Options{
		HostPort:  c.HostPort(),
		Namespace: c.NamespaceName(),
		Identity:  c.Identity,
		Logger:    tlog.NewStructuredLogger(logger),
	}
	tlsConf, err := c.tlsConfig()
	if err != nil {
		return client.Options{}, err
	}
	opts.ConnectionOptions.TLS = tlsConf
	if c.NoTLS {
		if tlsConf != nil {
			return client.Options{}, errors.New("TLS turned off, yet TLS files or a server name were given: drop one or the other")
		}
		opts.ConnectionOptions.TLSDisabled = true
	}
	if c.APIKey != "" {
		opts.Credentials = client.NewAPIKeyStaticCredentials(c.APIKey)
	}
	return opts, nil
}

// tlsConfig is nil when no TLS setting was given (an API key alone lets the SDK turn TLS
// on).
func (c Config) tlsConfig() (*tls.Config, error) {
	if !c.TLS && c.TLSCert == "" && c.TLSKey == "" && c.TLSCA == "" && c.TLSServerName == "" {
		return nil, nil
	}
	conf := &tls.Config{ServerName: c.TLSServerName, MinVersion: tls.VersionTLS12}
	switch {
	case c.TLSCert != "" && c.TLSKey != "":
		cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s and key %s: %w", c.TLSCert, c.TLSKey, err)
		}
		conf.Certificates = []tls.Certificate{cert}
	case c.TLSCert != "" || c.TLSKey != "":
		return nil, errCertKeyPair
	}
	if c.TLSCA != "" {
		pem, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", c.TLSCA)
		}
		conf.RootCAs = pool
	}
	return conf, nil
}

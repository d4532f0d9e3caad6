package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"google.golang.org/grpc/codes"
)

// DefaultAddress is the Temporal frontend the CLI talks to when neither --address nor
// TEMPORAL_ADDRESS says otherwise: the dev server of `make demo`.
const DefaultAddress = "127.0.0.1:7233"

// DefaultConnectTimeout bounds the first contact with the server.
const DefaultConnectTimeout = 5 * time.Second

// ClientConfig says how to reach Temporal. The zero value dials DefaultAddress, namespace
// "default", in plain text.
type ClientConfig struct {
	// Address is the frontend host:port ("" = DefaultAddress).
	Address string
	// Namespace ("" = "default").
	Namespace string
	// TLSCert and TLSKey are a client certificate and its key for mTLS (both or neither).
	TLSCert, TLSKey string
	// TLSCA is a PEM file of CAs to verify the server with ("" = the system's roots).
	TLSCA string
	// TLSServerName overrides the name checked in the server's certificate.
	TLSServerName string
	// TLS turns TLS on with the system's roots even without any of the files above. An
	// API key or any TLS file turns it on too.
	TLS bool
	// NoTLS turns TLS off even with an API key (plain-text credentials: tests only).
	NoTLS bool
	// APIKey is sent as a bearer token (Temporal Cloud).
	APIKey string
	// Identity is the client identity recorded in the history of what it starts, cancels
	// or signals ("" = the SDK's pid@hostname).
	Identity string
	// ConnectTimeout bounds Dial (0 = DefaultConnectTimeout).
	ConnectTimeout time.Duration
}

func (c ClientConfig) address() string {
	if c.Address == "" {
		return DefaultAddress
	}
	return c.Address
}

func (c ClientConfig) namespace() string {
	if c.Namespace == "" {
		return "default"
	}
	return c.Namespace
}

// Options returns the SDK client options for c, with the SDK's own logging turned off (the
// CLI reports errors itself).
func (c ClientConfig) Options() (client.Options, error) {
	opts := client.Options{
		HostPort:  c.address(),
		Namespace: c.namespace(),
		Identity:  c.Identity,
		Logger:    tlog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
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
// on with the system's roots).
func (c ClientConfig) tlsConfig() (*tls.Config, error) {
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
		return nil, errors.New("--tls-cert and --tls-key go together: give both, or neither")
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

// Dial connects to Temporal and checks that it answers. Errors are for a person: an
// unreachable server says how to start one, a missing namespace how to create it.
func Dial(ctx context.Context, cfg ClientConfig) (client.Client, error) {
	opts, err := cfg.Options()
	if err != nil {
		return nil, &userError{msg: err.Error()}
	}
	timeout := cfg.ConnectTimeout
	if timeout <= 0 {
		timeout = DefaultConnectTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := client.DialContext(dctx, opts)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, explainServerError(cfg, err)
	}
	// DialContext only asks for the system info; a wrong namespace shows on first use, so
	// check it here where the message can say which flag to fix.
	if _, err := c.WorkflowService().DescribeNamespace(dctx, describeNamespaceRequest(cfg.namespace())); err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, explainServerError(cfg, err)
	}
	return c, nil
}

// explainServerError turns a failure to talk to the server into a userError: a missing
// namespace or refused credentials say which flag to fix, anything else is an unreachable
// server.
func explainServerError(cfg ClientConfig, err error) *userError {
	var nsNotFound *serviceerror.NamespaceNotFound
	var denied *serviceerror.PermissionDenied
	switch {
	case errors.As(err, &nsNotFound):
		return &userError{msg: fmt.Sprintf("namespace %q does not exist at %s: set --namespace, or create it (temporal operator namespace create -n %s)",
			cfg.namespace(), cfg.address(), cfg.namespace())}
	case errors.As(err, &denied), serviceerror.ToStatus(err).Code() == codes.Unauthenticated:
		return &userError{msg: fmt.Sprintf("Temporal at %s refused this client: check --api-key, or --tls-cert and --tls-key", cfg.address()), cause: err}
	}
	return unreachable(cfg, err)
}

// unreachable is the error for a server that does not answer.
func unreachable(cfg ClientConfig, err error) *userError {
	return &userError{msg: fmt.Sprintf("cannot reach Temporal at %s: is the server running? (make demo starts one; or set --address)", cfg.address()),
		cause: err}
}

func describeNamespaceRequest(ns string) *workflowservice.DescribeNamespaceRequest {
	return &workflowservice.DescribeNamespaceRequest{Namespace: ns}
}

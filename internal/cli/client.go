package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/grpc/codes"

	"github.com/cdswap/cdswap/internal/temporalclient"
)

// DefaultConnectTimeout bounds the first contact with the server.
const DefaultConnectTimeout = 5 * time.Second

// ClientConfig says how to reach Temporal: the settings the worker shares
// (temporalclient.Config, whose zero value dials temporalclient.DefaultAddress, namespace
// "default", in plain text, with the SDK's own logging off since the CLI reports errors
// itself) and the CLI's bound on the first contact.
type ClientConfig struct {
	temporalclient.Config
	// ConnectTimeout bounds Dial (0 = DefaultConnectTimeout).
	ConnectTimeout time.Duration
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
	if _, err := c.WorkflowService().DescribeNamespace(dctx, describeNamespaceRequest(cfg.NamespaceName())); err != nil {
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
			cfg.NamespaceName(), cfg.HostPort(), cfg.NamespaceName())}
	case errors.As(err, &denied), serviceerror.ToStatus(err).Code() == codes.Unauthenticated:
		return &userError{msg: fmt.Sprintf("Temporal at %s refused this client: check --api-key, or --tls-cert and --tls-key", cfg.HostPort()), cause: err}
	}
	return unreachable(cfg, err)
}

// unreachable is the error for a server that does not answer.
func unreachable(cfg ClientConfig, err error) *userError {
	return &userError{msg: fmt.Sprintf("cannot reach Temporal at %s: is the server running? (make demo starts one; or set --address)", cfg.HostPort()),
		cause: err}
}

func describeNamespaceRequest(ns string) *workflowservice.DescribeNamespaceRequest {
	return &workflowservice.DescribeNamespaceRequest{Namespace: ns}
}

// describe returns the server's description of a run: DescribeWorkflow's raw response,
// which holds the memo, the search attributes and the pending activities as the server
// sent them.
func describe(ctx context.Context, c client.Client, id, runID string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	d, err := c.DescribeWorkflow(ctx, id, runID)
	if err != nil {
		return nil, err
	}
	return d.RawResponse, nil
}

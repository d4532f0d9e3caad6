package devserver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/operatorservice/v1"

	"github.com/cdswap/cdswap/internal/testenv"
)

func TestStartRegistersSearchAttributes(t *testing.T) {
	_, err := CLIPath()
	testenv.Require(t, "the Temporal CLI", err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := Start(ctx, Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })

	resp, err := srv.Client().OperatorService().ListSearchAttributes(ctx,
		&operatorservice.ListSearchAttributesRequest{Namespace: "default"})
	require.NoError(t, err)
	for _, sa := range SearchAttributes {
		_, ok := resp.GetCustomAttributes()[sa]
		require.True(t, ok, "search attribute %s not registered; have %v", sa, resp.GetCustomAttributes())
	}
}

func TestCLIPathExplainsMissingBinary(t *testing.T) {
	t.Setenv("CDSWAP_TEMPORAL_CLI", "/nonexistent/temporal")
	_, err := CLIPath()
	require.ErrorIs(t, err, ErrNoCLI)
	require.Contains(t, err.Error(), "make deps")
}

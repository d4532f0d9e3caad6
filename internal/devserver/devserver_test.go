package devserver

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCLIPathExplainsMissingBinary(t *testing.T) {
	t.Setenv("CDSWAP_TEMPORAL_CLI", "/nonexistent/temporal")
	_, err := CLIPath()
	require.ErrorIs(t, err, ErrNoCLI)
	require.Contains(t, err.Error(), "make deps")
}

package cli

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/workflows"
)

// TestDescribeBatchBusy: a result as read back from Temporal (JSON) has its busy drives
// in the list only, and the line must count them.
func TestDescribeBatchBusy(t *testing.T) {
	in := workflows.FleetSwapResult{Batch: "b", Status: workflows.FleetDone, Total: 3,
		FleetCounters: workflows.FleetCounters{Done: 3, Changed: 1, Busy: 2},
		Busy:          []workflows.DriveRef{{Page: 0, Row: 1}, {Page: 0, Row: 2}}}
	b, err := json.Marshal(in)
	require.NoError(t, err)
	var back workflows.FleetSwapResult
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Contains(t, describeBatch(back), "0 canceled, 2 busy;")
	assert.Contains(t, describeBatch(in), "0 canceled, 2 busy;")
}

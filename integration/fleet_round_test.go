package integration

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdswap/cdswap/internal/fleetround"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// TestFleetRoundStartsOnce calls the FleetRound local activity itself, against the dev
// server and a host with its worker, the way a batch whose worker died before its round was
// recorded calls it again: the same start, made twice while the swap runs and once more
// after it ended, is one swap; a start of the drive under another key while that swap runs
// is busy; and the ends are the swap's.
func TestFleetRoundStartsOnce(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{QEMU: xensim.QEMUFake, StubdomGuests: 1, AgentDelay: 5 * time.Millisecond})
	startWorker(t, h, workerOpts{})
	ctx := testenv.Context(t, 2*time.Minute)
	d := h.Domains()[0]
	in := swapInput(h, d, iso(h, xensim.ISOTools), "")
	in.BatchID = "cdswap-batch-round-" + h.Name()
	id := workflows.WorkflowID(in.Host, in.DomID, in.Vdev)
	ref := workflows.DriveRef{Page: 0, Row: 3}
	start := workflows.FleetStart{Ref: ref, Key: "run-1/0/3/0", Input: in}
	// Long enough for the second call to find the swap running.
	require.NoError(t, h.SetFault(ctx, d.Name, xensim.KnobAddFDDelay, "2s"))

	r := &fleetround.Rounds{Client: the.client}
	first, err := r.FleetRound(ctx, workflows.FleetRoundInput{Start: []workflows.FleetStart{start}, Wait: time.Millisecond})
	require.NoError(t, err)
	require.Len(t, first.Started, 1, "%+v", first)
	run := first.Started[0]
	assert.Equal(t, workflows.FleetSwapRun{Ref: ref, ID: id, RunID: run.RunID}, run)
	assert.Empty(t, first.Ended, "the swap cannot have ended within a millisecond")

	// Another worker runs the same round again: the start is found, not made.
	again, err := (&fleetround.Rounds{Client: the.client}).FleetRound(ctx, workflows.FleetRoundInput{
		Start: []workflows.FleetStart{start}, Wait: time.Millisecond})
	require.NoError(t, err)
	assert.Equal(t, []workflows.FleetSwapRun{run}, again.Started)
	// A start under another key (another batch, or a later try) finds the drive busy.
	other := start
	other.Key = "run-2/0/3/0"
	busy, err := r.FleetRound(ctx, workflows.FleetRoundInput{Start: []workflows.FleetStart{other}, Wait: time.Millisecond})
	require.NoError(t, err)
	assert.Equal(t, []workflows.FleetSwapRun{{Ref: ref, ID: id}}, busy.Busy)
	assert.Empty(t, busy.Started)

	// The wait reports the swap's end.
	ended, err := r.FleetRound(ctx, workflows.FleetRoundInput{Watch: []workflows.FleetSwapRun{run}, Wait: time.Minute, Enough: 1})
	require.NoError(t, err)
	assert.Equal(t, []workflows.FleetSwapEnd{{Ref: ref, End: workflows.SwapEndChanged}}, ended.Ended)

	// Made again after the swap ended (the round re-run late), the start is still found.
	late, err := r.FleetRound(ctx, workflows.FleetRoundInput{Start: []workflows.FleetStart{start}, Wait: time.Minute, Enough: 1})
	require.NoError(t, err)
	assert.Equal(t, []workflows.FleetSwapRun{run}, late.Started)
	assert.Equal(t, []workflows.FleetSwapEnd{{Ref: ref, End: workflows.SwapEndChanged}}, late.Ended)

	runs, err := the.client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: namespace,
		Query: "WorkflowId = '" + id + "'"})
	require.NoError(t, err)
	assert.Len(t, runs.GetExecutions(), 1, "one swap of the drive")
	checkDrive(t, h, d, in.Medium, d.Medium)
}

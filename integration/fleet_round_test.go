package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/cdswap/cdswap/internal/fleetround"
	"github.com/cdswap/cdswap/internal/plan"
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

// pauseAfterEnds is a FleetRound that, the first time a round reports a swap's end, asks
// the batch to pause before it returns: the update then comes in the workflow task after
// the round's, when the batch has queued its next starts, as it does in the next attempt
// of a workflow task whose worker was lost in the middle of the round that made them.
type pauseAfterEnds struct {
	rounds *fleetround.Rounds
	batch  string
	once   sync.Once
	asked  chan error
}

func (p *pauseAfterEnds) FleetRound(ctx context.Context, in workflows.FleetRoundInput) (workflows.FleetRoundResult, error) {
	out, err := p.rounds.FleetRound(ctx, in)
	if err != nil || len(out.Ended) == 0 {
		return out, err
	}
	p.once.Do(func() {
		go func() {
			_, err := the.client.UpdateWorkflow(context.WithoutCancel(ctx), client.UpdateWorkflowOptions{
				WorkflowID: p.batch, UpdateName: workflows.UpdatePause, WaitForStage: client.WorkflowUpdateStageCompleted,
				Args: []any{workflows.FleetUpdate{Requester: "integration-test", Reason: "pause with starts queued"}}})
			p.asked <- err
		}()
		// Long enough for the server to hold the update before this round's task completes.
		time.Sleep(500 * time.Millisecond)
	})
	return out, nil
}

// TestFleetPauseWithStartsQueued pauses a batch between the round that saw its first swaps
// end and the round that would start the next: the batch looks for those starts (FindOnly),
// finds none made, and starts them only after the resume. Its batch runs on a worker of its
// own (a queue only this test uses) whose rounds send the pause; the history, recorded as
// pause-queued, has the path that version 2 of fleet-rounds added.
func TestFleetPauseWithStartsQueued(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{QEMU: xensim.QEMUFake, StubdomGuests: 4, AgentDelay: 5 * time.Millisecond})
	startWorker(t, h, workerOpts{})
	ctx := testenv.Context(t, 3*time.Minute)
	medium := iso(h, xensim.ISOTools)
	var drives []workflows.FleetDrive
	for _, d := range h.Domains() {
		drives = append(drives, workflows.FleetDrive{Host: h.Name(), Domain: d.Name, DomID: d.DomID, Vdev: d.Vdev, Medium: medium, Old: d.Medium})
	}
	in := workflows.FleetSwapInput{
		Batch: "cdswap-batch-queued-" + h.Name(), Total: len(drives), HostTotals: map[string]int{h.Name(): len(drives)},
		Limits: workflows.FleetLimits{Global: 2, PerHost: 2}, Canary: workflows.FleetCanary{Off: true},
		Requester: "integration-test", Reason: "pause with starts queued",
	}
	queue := "cdswap-test-batch-" + h.Name()
	rounds := &pauseAfterEnds{rounds: &fleetround.Rounds{Client: the.client}, batch: in.Batch, asked: make(chan error, 1)}
	w := worker.New(the.client, queue, worker.Options{})
	workflows.RegisterFleet(w)
	w.RegisterActivityWithOptions(rounds.FleetRound, activity.RegisterOptions{Name: workflows.FleetRoundName})
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)

	pages := plan.Paginate(drives, 0, 0)
	in.Pages = len(pages)
	require.NoError(t, plan.SavePages(ctx, the.client, in.Batch, pages))
	opts := workflows.FleetStartOptions(in)
	opts.TaskQueue = queue
	_, err := the.client.ExecuteWorkflow(ctx, opts, workflows.FleetSwapName, in)
	require.NoError(t, err)

	select {
	case err := <-rounds.asked:
		require.NoError(t, err, "pause")
	case <-ctx.Done():
		t.Fatal("no round saw a swap end")
	}
	held := waitProgress(t, in.Batch, "the running swaps end", func(p workflows.FleetProgress) bool { return p.Running == 0 })
	assert.Equal(t, workflows.FleetPaused, held.Status)
	hist, err := fetchHistory(ctx, in.Batch, "")
	require.NoError(t, err)
	var lookedFor []workflows.FleetSwapRun
	for _, e := range hist.GetEvents() {
		if res, ok := roundResult(t, e); ok {
			lookedFor = append(lookedFor, res.NotStarted...)
		}
	}
	assert.NotEmpty(t, lookedFor, "no round looked for the starts queued when the pause came")
	changed := 0
	for _, d := range h.Domains() {
		if qemuView(t, h, d).file != d.Medium {
			changed++
		}
	}
	assert.Equal(t, held.Changed, changed, "xensim's drives changed while paused against the batch's count")

	_, err = the.client.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: in.Batch, UpdateName: workflows.UpdateResume, WaitForStage: client.WorkflowUpdateStageCompleted,
		Args: []any{workflows.FleetUpdate{Requester: "integration-test", Reason: "go on"}}})
	require.NoError(t, err)
	res := batchResult(t, in.Batch)
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, len(drives), res.Changed, "%+v", res)
	for _, d := range h.Domains() {
		checkDrive(t, h, d, medium, d.Medium)
	}
	recorded := recordBatch(t, in.Batch, "pause-queued")
	runs := map[string]int{}
	for _, s := range batchStarts(t, recorded) {
		runs[s.id]++
	}
	for id, n := range runs {
		assert.Equal(t, 1, n, "swap %s started %d times", id, n)
	}
	assert.Len(t, runs, len(drives))
}

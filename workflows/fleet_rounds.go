package workflows

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// changeFleetRounds: a batch starts its swaps and learns of their ends in rounds, each one
// local activity (FleetRoundName) on the worker that runs the batch's workflow task, instead
// of one ChangeMedium child per drive. A child cost the batch two workflow tasks, one as it
// started and one as it ended, and nine history events; a round costs one workflow task and
// one marker for all the swaps it starts and all those that end while it waits
// (BENCHMARKS.md, the fleet). The swaps are the same ChangeMedium runs, with the drive's
// workflow id, CdswapBatch and the batch's memo, but no parent: the Web UI lists a batch's
// swaps by CdswapBatch (`cdswap list --batch`), not under the batch. Runs recorded before it
// replay with their children.
const changeFleetRounds = "fleet-rounds"

// roundsFindDroppedVersion of changeFleetRounds: the starts queued for a round when the
// batch is paused, stopped or canceled before the round runs are looked for (FindOnly)
// instead of dropped at once. The round may have run already, in an attempt of the same
// workflow task whose worker was lost before it completed: its starts were made, and the
// next attempt, which has the pause in the same task, used to requeue them as never
// started. A stopped batch then reported as not started drives it had changed, a canceled
// one left them changed, and a paused one showed them as waiting while they ran (seen in a
// clean-clone CI run, whose tests stop their workers while others' batches run).
const roundsFindDroppedVersion workflow.Version = 2

// FleetRoundName is the local activity of a round (internal/fleetround.Rounds).
const FleetRoundName = "FleetRound"

const (
	// roundWait is how long a round waits for a first swap to end. Updates (pause, stop,
	// cancel) reach the batch in the workflow task after the round's, so this is also how
	// long they can wait.
	roundWait = time.Second
	// roundLinger is how long a round goes on waiting, once a swap ended, for others to end
	// too (up to a quarter of those running): each round costs the server a workflow task.
	roundLinger = 50 * time.Millisecond
	// roundYield is the timer that ends the workflow task before each round; the server
	// fires it at once (its timer queue's max time shift, 10 ms with cdswap's tuning).
	roundYield = time.Millisecond
	// roundIdleMax bounds the pause before a round that follows rounds that saw nothing.
	roundIdleMax = time.Minute
	// roundStartToClose bounds one attempt of a round: its wait, and the starts and cancels
	// of up to Limits.Global swaps before it.
	roundStartToClose = 2 * time.Minute
)

// FleetRoundInput is one round of a batch: swaps to start and to cancel, then a wait for
// the running ones to end.
type FleetRoundInput struct {
	// Start are the swaps to start. A start already made by an earlier attempt of the
	// round (its worker died before the round was recorded) is found by its Key, not made
	// again.
	Start []FleetStart
	// Cancel are running swaps to cancel (each puts its old medium back).
	Cancel []FleetSwapRun
	// Watch are the swaps started by earlier rounds and not ended.
	Watch []FleetSwapRun
	// Wait bounds the wait for a first end; Linger is how long to go on once one ended,
	// unless Enough have.
	Wait, Linger time.Duration
	Enough       int
}

// FleetStart is a swap a round starts.
type FleetStart struct {
	Ref DriveRef
	// Key names this start of the drive by this batch run (FleetStartMemo).
	Key   string
	Input ChangeMediumInput
	// FindOnly looks for the swap started under Key, and starts none: a start a failed
	// round may have made, once the batch no longer starts swaps.
	FindOnly bool `json:",omitempty"`
}

// FleetStartMemo is the memo key of a swap started by a round, holding FleetStart.Key.
const FleetStartMemo = "fleet-start"

// FleetSwapRun is a running swap of a batch.
type FleetSwapRun struct {
	Ref   DriveRef
	ID    string
	RunID string
}

// FleetRoundResult is what a round did and saw.
type FleetRoundResult struct {
	// Started are the swaps started (or found started) by this round.
	Started []FleetSwapRun `json:",omitempty"`
	// Busy are the drives whose swap someone else runs: not started (no RunID).
	Busy []FleetSwapRun `json:",omitempty"`
	// NotStarted are the FindOnly starts that were never made.
	NotStarted []FleetSwapRun `json:",omitempty"`
	// Canceled are the swaps of Cancel the round asked to cancel, for the record.
	Canceled []FleetSwapRun `json:",omitempty"`
	// Ended are the swaps that ended, of Watch and Started.
	Ended []FleetSwapEnd `json:",omitempty"`
}

// FleetSwapEnd is how a swap of a batch ended: End is one of the SwapEnd* values, Error
// the failure's message.
type FleetSwapEnd struct {
	Ref   DriveRef
	End   string
	Error string `json:",omitempty"`
}

// Values of FleetSwapEnd.End.
const (
	SwapEndChanged   = "changed"
	SwapEndUnchanged = "unchanged"
	SwapEndFailed    = "failed"
	SwapEndRestored  = "restored"
	SwapEndCanceled  = "canceled"
)

// swapEndNames names the ends a swap can have in FleetSwapEnd.End.
var swapEndNames = [...]string{endChanged: SwapEndChanged, endUnchanged: SwapEndUnchanged,
	endFailed: SwapEndFailed, endRestored: SwapEndRestored, endCanceled: SwapEndCanceled}

// endNamed is the end FleetSwapEnd.End names (failed for a name it does not know).
func endNamed(name string) driveEnd {
	for e, n := range swapEndNames {
		if n == name {
			return driveEnd(e)
		}
	}
	return endFailed
}

// EndOf is how a swap that returned res and err ended, for a round's result: the same
// judgement a batch makes of a child's end.
func EndOf(ref DriveRef, res ChangeMediumResult, err error) FleetSwapEnd {
	e, msg := judge(res, err)
	return FleetSwapEnd{Ref: ref, End: swapEndNames[e], Error: msg}
}

// judge is how a swap that returned res and err ended, and what a failed one's end says
// ("" for the others).
func judge(res ChangeMediumResult, err error) (driveEnd, string) {
	e := classify(res, err)
	if e != endFailed && e != endRestored {
		return e, ""
	}
	msg := ErrorMessage(err, "the swap")
	if r, ok := ResultFromError(err); ok && r.Error != "" {
		msg = r.Error
	}
	return e, msg
}

// roundDrive is a drive a round started or will start.
type roundDrive struct {
	d       FleetDrive
	requeue func(int)
}

// queueStart counts d as running and queues its start for the next round.
func (f *fleet) queueStart(ctx workflow.Context, d FleetDrive, ref DriveRef, requeue func(int)) {
	key := fmt.Sprintf("%s/%d/%d/%d", workflow.GetInfo(ctx).WorkflowExecution.RunID, ref.Page, ref.Row, f.tries[ref])
	f.toStart = append(f.toStart, FleetStart{Ref: ref, Key: key, Input: f.changeInput(d)})
	f.drives[ref] = roundDrive{d: d, requeue: requeue}
	f.inFlight++
	f.running[d.Host]++
	f.tick++
}

// cancelRounds cancels the batch's swaps in rounds: those not started yet are dropped (or
// looked for first, dropStarts), the running ones are canceled by the next round.
func (f *fleet) cancelRounds() {
	if f.findDropped {
		f.dropStarts()
	}
	for _, s := range f.toStart {
		f.forget(s.Ref)
	}
	f.toStart = nil
	for _, ref := range sortedRefs(f.runs) {
		if !f.cancelSent[ref] {
			f.cancelSent[ref] = true
			f.toCancel = append(f.toCancel, f.runs[ref])
		}
	}
}

// dropStarts hands the starts queued for the next round to it as unsure: made or not,
// since a lost attempt of this workflow task may have run the round. Once the batch starts
// no more, the round only looks for them (FindOnly); a start it finds is watched (and
// canceled, when the batch cancels), one it does not is requeued or dropped.
func (f *fleet) dropStarts() {
	f.unsure = append(f.unsure, f.toStart...)
	f.toStart = nil
}

// forget uncounts a drive that is no longer running.
func (f *fleet) forget(ref DriveRef) roundDrive {
	rd := f.drives[ref]
	delete(f.drives, ref)
	delete(f.runs, ref)
	delete(f.cancelSent, ref)
	f.inFlight--
	f.running[rd.d.Host]--
	f.tick++
	return rd
}

// sortedRefs returns the keys of m in plan order.
func sortedRefs[V any](m map[DriveRef]V) []DriveRef {
	// Sorted before use, so the map's order never shows.
	//workflowcheck:ignore
	return slices.SortedFunc(maps.Keys(m), func(a, b DriveRef) int {
		return cmp.Or(cmp.Compare(a.Page, b.Page), cmp.Compare(a.Row, b.Row))
	})
}

// round runs one round and counts what it saw. It runs on a disconnected context: a
// cancel of the batch must not cut a round whose starts went out.
//
// It first ends the workflow task (a timer of roundYield): the SDK keeps a workflow task
// open while the workflow goes from one local activity to the next, so without it the
// rounds' markers would be recorded, and updates and queries answered, only every 80 % of
// the task's timeout. After rounds that saw nothing (swaps that wait on a paused guest, or
// on a slow backend), the timer grows, up to roundIdleMax: an idle round costs the history
// six events, and a batch must not reach Temporal's history limit while a swap waits for
// hours. An update, or a busy drive's next try, ends the wait.
func (f *fleet) round(ctx workflow.Context) {
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	wait := roundYield
	if f.idle > 0 {
		wait = min(roundWait<<min(f.idle-1, 8), roundIdleMax)
	}
	seen := f.tick
	_, _ = workflow.AwaitWithTimeout(dctx, wait, func() bool { return f.tick != seen })
	if f.st.Status != FleetRunning {
		// Paused, stopped or halted while the task ended: what was to start is looked for
		// (dropStarts), or, in runs before that, waits in its host's queue at once, to start
		// after a resume or never.
		if f.findDropped {
			f.dropStarts()
		}
		for _, s := range f.toStart {
			f.forget(s.Ref).requeue(s.Ref.Row)
		}
		f.toStart = nil
	}
	if f.inFlight == 0 && len(f.toCancel) == 0 {
		return
	}
	in := FleetRoundInput{Start: f.toStart, Cancel: f.toCancel,
		Wait: roundWait, Linger: roundLinger, Enough: max(1, f.inFlight/4)}
	for _, s := range f.unsure {
		// Made or not by a failed round: started again under its key (found if made), or
		// only looked for once the batch starts no more.
		s.FindOnly = f.st.Status != FleetRunning
		in.Start = append(in.Start, s)
	}
	for _, ref := range sortedRefs(f.runs) {
		in.Watch = append(in.Watch, f.runs[ref])
	}
	f.toStart, f.toCancel, f.unsure = nil, nil, nil
	lctx := workflow.WithLocalActivityOptions(dctx, workflow.LocalActivityOptions{
		StartToCloseTimeout: roundStartToClose,
		// A server out of reach fails a round's attempt: the next tries again. A round
		// that fails all the same is taken over by the next round (below).
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumInterval: 30 * time.Second},
	})
	var out FleetRoundResult
	if err := workflow.ExecuteLocalActivity(lctx, FleetRoundName, in).Get(lctx, &out); err != nil {
		// Cut short (its worker stopped) or out of retries: its starts may or may not have
		// been made, and are made sure of by the next round; its cancels are asked again.
		f.log.Warn("Batch round failed; the next round takes over", "error", err)
		f.unsure = append(f.unsure, in.Start...)
		f.toCancel = append(in.Cancel, f.toCancel...)
		f.idle++
		return
	}
	f.mustHold(out)
	for _, r := range out.Started {
		f.runs[r.Ref] = r
	}
	if f.st.Status == FleetCanceling {
		f.cancelRounds() // swaps a failed round had started
	}
	for _, r := range out.NotStarted {
		rd := f.forget(r.Ref)
		if f.st.Status != FleetCanceling {
			rd.requeue(r.Ref.Row)
		}
	}
	for _, b := range out.Busy {
		rd := f.forget(b.Ref)
		// Counted as retrying from now: the loop must not see the drive neither running
		// nor retrying before its coroutine runs.
		f.retrying++
		workflow.Go(dctx, func(gctx workflow.Context) {
			f.retrying--
			f.busy(ctx, gctx, rd.d, b.Ref, rd.requeue)
		})
	}
	for _, e := range out.Ended {
		rd := f.forget(e.Ref)
		f.record(rd.d, endNamed(e.End), e.Error)
	}
	if len(out.Started)+len(out.Busy)+len(out.Ended)+len(out.NotStarted)+len(in.Cancel) == 0 {
		f.idle++
	} else {
		f.idle = 0
	}
}

// mustHold panics unless every drive out names is one the batch counts in flight. Only a
// history replayed by code that did not make it, whose round results fall to other rounds,
// breaks this; the panic fails the workflow task, as the SDK's own non-determinism checks
// do, instead of corrupting the counts.
func (f *fleet) mustHold(out FleetRoundResult) {
	refs := make([]DriveRef, 0, len(out.Started)+len(out.NotStarted)+len(out.Busy)+len(out.Ended))
	for _, rs := range [][]FleetSwapRun{out.Started, out.NotStarted, out.Busy} {
		for _, r := range rs {
			refs = append(refs, r.Ref)
		}
	}
	for _, e := range out.Ended {
		refs = append(refs, e.Ref)
	}
	for _, ref := range refs {
		if _, ok := f.drives[ref]; !ok {
			panic(fmt.Sprintf("batch %s: a round's result names page %d row %d, which the batch does not have in flight: the history was not made by this code",
				f.in.Batch, ref.Page, ref.Row))
		}
	}
}

// runningOn counts the swaps started and not ended, in all and per host: in rounds, a swap
// queued for the next round is still waiting.
func (f *fleet) runningOn() (int, map[string]int) {
	if !f.rounds {
		return f.inFlight, f.running
	}
	per := map[string]int{}
	// A count, whatever the order; and a query issues no commands.
	//workflowcheck:ignore
	for ref := range f.runs {
		per[f.drives[ref].d.Host]++
	}
	return len(f.runs), per
}

// Package fleetround runs the rounds of a batch (workflows.FleetSwap): the local activity
// that starts a round's swaps, cancels the ones the batch cancels, and waits for swaps to
// end, so that the batch learns of many ends in one workflow task instead of one task per
// swap started and one per swap ended.
//
// A swap's end is watched by a long poll of its history for its close event, kept across
// rounds in the process: the next round on the same worker, the usual case, finds the
// watches of the swaps still running and starts none again.
package fleetround

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/workflows"
)

const (
	// startParallel bounds the starts a round makes at once.
	startParallel = 8
	// keepEnded is how long the end of a swap no round collected is kept (its batch moved
	// to another worker, or was terminated).
	keepEnded = 10 * time.Minute
	// retryFirst and retryMax pace a watch's long poll while the server cannot be reached.
	retryFirst = time.Second
	retryMax   = 30 * time.Second
)

// Rounds is the FleetRound local activity; a worker of workflows.BatchTaskQueue registers
// it. It is safe for concurrent use, by the rounds of any number of batches.
type Rounds struct {
	// Client starts, cancels and watches the swaps.
	Client client.Client

	mu      sync.Mutex
	watches map[string]*watch // by run id
	bell    chan struct{}     // closed, and replaced, whenever a watched swap ends
}

// watch is one swap's end, once done is closed.
type watch struct {
	done  chan struct{}
	res   workflows.ChangeMediumResult
	err   error
	ended time.Time
}

// FleetRound starts in.Start (a start an earlier attempt made is found, not made again),
// cancels in.Cancel, then waits up to in.Wait for a swap of in.Watch and of those started
// to end, and once one has, up to in.Linger more unless in.Enough have.
func (r *Rounds) FleetRound(ctx context.Context, in workflows.FleetRoundInput) (workflows.FleetRoundResult, error) {
	var out workflows.FleetRoundResult
	for _, c := range in.Cancel {
		// A swap that ended meanwhile is no matter: the wait below reports its end.
		if err := r.Client.CancelWorkflow(ctx, c.ID, c.RunID); err != nil && !isNotFound(err) {
			return out, fmt.Errorf("cancel swap %s: %w", c.ID, err)
		}
	}
	out.Canceled = in.Cancel
	started, busy, notStarted, err := r.startAll(ctx, in.Start)
	if err != nil {
		return out, err
	}
	out.Started, out.Busy, out.NotStarted = started, busy, notStarted
	ended, err := r.wait(ctx, slices.Concat(in.Watch, started), in.Wait, in.Linger, max(1, in.Enough))
	out.Ended = ended
	return out, err
}

// startAll starts every swap of starts, startParallel at a time.
func (r *Rounds) startAll(ctx context.Context, starts []workflows.FleetStart) (started, busy, notStarted []workflows.FleetSwapRun, err error) {
	type result struct {
		run        workflows.FleetSwapRun
		busy, none bool
		err        error
	}
	results := make([]result, len(starts))
	sem := make(chan struct{}, startParallel)
	var wg sync.WaitGroup
	for i, s := range starts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i].run, results[i].busy, results[i].none, results[i].err = r.start(ctx, s)
		})
	}
	wg.Wait()
	var errs []error
	for _, res := range results {
		switch {
		case res.err != nil:
			errs = append(errs, res.err)
		case res.busy:
			busy = append(busy, res.run)
		case res.none:
			notStarted = append(notStarted, res.run)
		default:
			started = append(started, res.run)
		}
	}
	// A failed start fails the round, which is tried again: the starts it made are found
	// then by their keys.
	return started, busy, notStarted, errors.Join(errs...)
}

// start starts one swap, unless this start was made already (by an attempt of the round
// on a worker that died before the round was recorded), or someone else's swap runs on
// the drive (busy), or s.FindOnly and it was never made (none).
func (r *Rounds) start(ctx context.Context, s workflows.FleetStart) (run workflows.FleetSwapRun, busy, none bool, err error) {
	opts := workflows.StartOptions(s.Input)
	run = workflows.FleetSwapRun{Ref: s.Ref, ID: opts.ID}
	runID, ours, running, err := r.current(ctx, opts.ID, s.Key)
	switch {
	case err != nil:
		return run, false, false, err
	case ours:
		run.RunID = runID
		return run, false, false, nil
	case s.FindOnly:
		return run, false, true, nil
	case running:
		return run, true, false, nil
	}
	opts.Memo = maps.Clone(opts.Memo)
	if opts.Memo == nil {
		opts.Memo = map[string]any{}
	}
	opts.Memo[workflows.FleetStartMemo] = s.Key
	we, err := r.Client.ExecuteWorkflow(ctx, opts, workflows.ChangeMediumName, s.Input)
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) {
		return run, true, false, nil // someone else's swap started since current looked
	}
	if err != nil {
		return run, false, false, fmt.Errorf("start swap %s: %w", opts.ID, err)
	}
	run.RunID = we.GetRunID()
	return run, false, false, nil
}

// current looks at the drive's last swap: whether it is the one started with key (ours,
// with its run id), and whether it runs.
func (r *Rounds) current(ctx context.Context, id, key string) (runID string, ours, running bool, err error) {
	desc, err := r.Client.DescribeWorkflow(ctx, id, "")
	if isNotFound(err) {
		return "", false, false, nil
	}
	if err != nil {
		return "", false, false, fmt.Errorf("describe swap %s: %w", id, err)
	}
	info := desc.RawResponse.GetWorkflowExecutionInfo()
	running = info.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING
	if p := info.GetMemo().GetFields()[workflows.FleetStartMemo]; p != nil {
		var k string
		if converter.GetDefaultDataConverter().FromPayload(p, &k) == nil && k == key {
			return info.GetExecution().GetRunId(), true, running, nil
		}
	}
	return "", false, running, nil
}

// wait waits for runs to end as FleetRound says, and returns the ends it saw.
func (r *Rounds) wait(ctx context.Context, runs []workflows.FleetSwapRun, wait, linger time.Duration, enough int) ([]workflows.FleetSwapEnd, error) {
	r.dropOld()
	ws := make([]*watch, len(runs))
	for i, run := range runs {
		ws[i] = r.watch(run)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	var lingering <-chan time.Time
	for len(runs) > 0 {
		r.mu.Lock()
		bell := r.bell
		r.mu.Unlock()
		n := 0
		for _, w := range ws {
			if isDone(w) {
				n++
			}
		}
		if n >= enough {
			break
		}
		if n > 0 && lingering == nil {
			t := time.NewTimer(linger)
			defer t.Stop()
			lingering = t.C
		}
		stop := false
		select {
		case <-bell:
		case <-lingering:
			stop = true
		case <-deadline.C:
			stop = true
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if stop {
			break
		}
	}
	var ends []workflows.FleetSwapEnd
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, w := range ws {
		if isDone(w) {
			ends = append(ends, workflows.EndOf(runs[i].Ref, w.res, w.err))
			delete(r.watches, runs[i].RunID)
		}
	}
	return ends, nil
}

func isDone(w *watch) bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// watch returns the watch of run, started if it is not yet.
func (r *Rounds) watch(run workflows.FleetSwapRun) *watch {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watches == nil {
		r.watches = map[string]*watch{}
		r.bell = make(chan struct{})
	}
	if w, ok := r.watches[run.RunID]; ok {
		return w
	}
	w := &watch{done: make(chan struct{})}
	r.watches[run.RunID] = w
	go r.follow(run, w)
	return w
}

// dropOld drops the ends no round collected once they are old: their batches went on on
// another worker, or ended.
func (r *Rounds) dropOld() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, w := range r.watches {
		if isDone(w) && time.Since(w.ended) > keepEnded {
			delete(r.watches, id)
		}
	}
}

// follow waits for run to close, through any outage of the server, and rings the bell.
func (r *Rounds) follow(run workflows.FleetSwapRun, w *watch) {
	ctx := context.Background()
	pause := retryFirst
	for {
		var res workflows.ChangeMediumResult
		err := r.Client.GetWorkflow(ctx, run.ID, run.RunID).Get(ctx, &res)
		var ended *temporal.WorkflowExecutionError
		if err == nil || errors.As(err, &ended) || isNotFound(err) {
			w.res, w.err = res, err
			break
		}
		// The server cannot be reached: the swap runs on, and is watched again.
		time.Sleep(pause)
		pause = min(2*pause, retryMax)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	w.ended = time.Now()
	close(w.done)
	close(r.bell)
	r.bell = make(chan struct{})
}

func isNotFound(err error) bool {
	var nf *serviceerror.NotFound
	return errors.As(err, &nf)
}

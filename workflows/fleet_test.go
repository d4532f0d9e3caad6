package workflows_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/cdswap/cdswap/workflows"
)

// fleetRig runs FleetSwap in a test environment whose swaps are a fake that takes a
// drive's time (per drive, on the test clock) and ends as the test says, counting the swaps
// in flight, per host and in all. The swaps run in rounds (a fake FleetRound local activity
// that waits on the test clock), or with children as ChangeMedium children.
type fleetRig struct {
	t        *testing.T
	children bool
	env      *testsuite.TestWorkflowEnvironment
	pages    [][]workflows.FleetDrive

	mu        sync.Mutex // guards the fields below
	fail      map[string]bool
	took      map[string]time.Duration
	inFlight  int
	perHost   map[string]int
	maxFlight int
	maxHost   map[string]int
	started   []string // child ids in start order
	canceled  []string
	released  []string // plan pages released
	// The fake rounds' swaps: when each running one ends, its host and ref, and the
	// cancels asked.
	ends      map[string]time.Time
	hostOf    map[string]string
	refOf     map[string]workflows.DriveRef
	cancelReq map[string]bool
	viaChild  int // swaps run by the fake child
	// keys are the fake rounds' starts by key (the swap id); failRounds makes that many
	// rounds fail after their starts were made, as a round whose worker stopped.
	keys       map[string]string
	failRounds int
	// lost, once the fake rounds have seen lostAfter swaps end, makes the starts of the
	// next round as a lost attempt of its workflow task would have (its worker died before
	// the task completed), and sends the update lostUpdate before the round runs again.
	lost       []workflows.DriveRef
	lostAfter  int
	lostUpdate string
	ended      int
}

// fleetModes runs a test of FleetSwap with its swaps in rounds, then as children.
func fleetModes(t *testing.T, test func(t *testing.T, children bool)) {
	t.Run("rounds", func(t *testing.T) { test(t, false) })
	t.Run("children", func(t *testing.T) { test(t, true) })
}

// newFleetRig makes a plan of hosts × perHost drives cut into pages of pageRows.
func newFleetRig(t *testing.T, children bool, hosts, perHost, pageRows int) *fleetRig {
	r := &fleetRig{t: t, children: children, fail: map[string]bool{}, took: map[string]time.Duration{}, perHost: map[string]int{}, maxHost: map[string]int{},
		ends: map[string]time.Time{}, hostOf: map[string]string{}, refOf: map[string]workflows.DriveRef{}, cancelReq: map[string]bool{},
		keys: map[string]string{}}
	var drives []workflows.FleetDrive
	for i := range perHost {
		for h := range hosts {
			drives = append(drives, workflows.FleetDrive{Line: len(drives) + 2, Host: fmt.Sprintf("h%d", h+1),
				Domain: fmt.Sprintf("web%d", i+1), DomID: uint32(10 + i), Vdev: "hdc", Medium: "/isos/new.iso", Old: "/isos/old.iso"})
		}
	}
	for len(drives) > 0 {
		n := min(pageRows, len(drives))
		r.pages = append(r.pages, drives[:n])
		drives = drives[n:]
	}
	r.newEnv()
	t.Cleanup(func() {
		if len(r.started) > 0 {
			assert.Equal(t, children, r.viaChild > 0, "swaps run as children: %d of %d", r.viaChild, len(r.started))
		}
	})
	return r
}

func (r *fleetRig) newEnv() {
	r.env = newTestEnv()
	r.env.SetTestTimeout(30 * time.Second)
	workflows.RegisterFleet(r.env)
	r.env.RegisterWorkflowWithOptions(r.child, workflow.RegisterOptions{Name: workflows.ChangeMediumName})
	r.env.RegisterActivityWithOptions(func(in workflows.ReadPlanPageInput) (workflows.ReadPlanPageResult, error) {
		return workflows.ReadPlanPageResult{Drives: r.pages[in.Page]}, nil
	}, activity.RegisterOptions{Name: workflows.ReadPlanPageName})
	r.env.RegisterActivityWithOptions(r.round, activity.RegisterOptions{Name: workflows.FleetRoundName})
	// The mock makes each round wait on the test clock, up to the next end.
	r.env.OnActivity(workflows.FleetRoundName, mock.Anything, mock.Anything).Return(r.round).AfterFn(r.roundWait)
	r.env.OnSignalExternalWorkflow(mock.Anything, mock.Anything, "", workflows.FleetReleaseSignal, mock.Anything).Return(
		func(_, id, _, _ string, _ any) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.released = append(r.released, id)
			return nil
		})
}

// roundWait is how long the next fake round waits: until the first running swap ends, a
// second at most (as the real round's Wait).
func (r *fleetRig) roundWait() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.waitLocked()
}

func (r *fleetRig) waitLocked() time.Duration {
	wait := time.Second
	for _, at := range r.ends {
		wait = min(wait, at.Sub(r.env.Now()))
	}
	return max(wait, time.Millisecond)
}

// round is the fake FleetRound: it starts the round's swaps and reports those whose time is
// up, or whose cancel was asked, as ended, with the ends the fake child would give.
func (r *fleetRig) round(ctx context.Context, in workflows.FleetRoundInput) (workflows.FleetRoundResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.env.Now()
	defer r.loseRound(ctx, now)
	var out workflows.FleetRoundResult
	for _, c := range in.Cancel {
		r.cancelReq[c.ID] = true
	}
	for _, s := range in.Start {
		id := workflows.WorkflowID(s.Input.Host, s.Input.DomID, s.Input.Vdev)
		if got, ok := r.keys[s.Key]; ok {
			out.Started = append(out.Started, workflows.FleetSwapRun{Ref: s.Ref, ID: got, RunID: "run-" + got})
			continue
		}
		if s.FindOnly {
			out.NotStarted = append(out.NotStarted, workflows.FleetSwapRun{Ref: s.Ref, ID: id})
			continue
		}
		r.keys[s.Key] = id
		r.started = append(r.started, id)
		r.inFlight++
		r.perHost[s.Input.Host]++
		r.maxFlight = max(r.maxFlight, r.inFlight)
		r.maxHost[s.Input.Host] = max(r.maxHost[s.Input.Host], r.perHost[s.Input.Host])
		took := r.took[id]
		if took == 0 {
			took = 10 * time.Second
		}
		r.ends[id], r.hostOf[id], r.refOf[id] = now.Add(took), s.Input.Host, s.Ref
		out.Started = append(out.Started, workflows.FleetSwapRun{Ref: s.Ref, ID: id, RunID: "run-" + id})
	}
	if r.failRounds > 0 && len(in.Start) > 0 {
		r.failRounds--
		return workflows.FleetRoundResult{}, temporal.NewCanceledError("the worker stopped")
	}
	for _, id := range slices.Sorted(maps.Keys(r.ends)) {
		res := workflows.ChangeMediumResult{Old: "/isos/old.iso", New: "/isos/new.iso", Outcome: workflows.OutcomeChanged}
		var err error
		switch {
		case r.cancelReq[id]:
			r.canceled = append(r.canceled, id)
			res.Outcome = workflows.OutcomeCanceled
			err = temporal.NewCanceledError(res)
		case now.Before(r.ends[id]):
			continue
		case r.fail[id]:
			res.Outcome, res.Error = workflows.OutcomeFailedRestored, "the fdset never came"
			err = temporal.NewApplicationErrorWithOptions("change failed", workflows.ErrSwapFailedRestored,
				temporal.ApplicationErrorOptions{NonRetryable: true, Details: []any{res}})
		}
		out.Ended = append(out.Ended, workflows.EndOf(r.refOf[id], res, err))
		r.ended++
		r.inFlight--
		r.perHost[r.hostOf[id]]--
		delete(r.ends, id)
		delete(r.cancelReq, id)
	}
	return out, nil
}

// loseRound makes r.lost's starts, once lostAfter swaps ended, with the keys the batch
// gives them (try 0), and sends lostUpdate 0.5 ms after this round's result: the batch
// queues those starts and waits 1 ms (its yield) before the round that would make them,
// and the update comes in between, as it comes first in the next attempt of a workflow
// task whose worker was lost. (The mock waits before it calls the fake, so the result
// comes at the fake's now.)
func (r *fleetRig) loseRound(ctx context.Context, now time.Time) {
	if len(r.lost) == 0 || r.ended < r.lostAfter {
		return
	}
	run := activity.GetInfo(ctx).WorkflowExecution.RunID
	for _, ref := range r.lost {
		d := r.pages[ref.Page][ref.Row]
		id := d.ID()
		r.keys[fmt.Sprintf("%s/%d/%d/0", run, ref.Page, ref.Row)] = id
		r.started = append(r.started, id)
		r.inFlight++
		r.perHost[d.Host]++
		r.ends[id], r.hostOf[id], r.refOf[id] = now.Add(10*time.Second), d.Host, ref
	}
	r.lost = nil
	r.update(500*time.Microsecond, r.lostUpdate, true, nil)
}

// child is the fake ChangeMedium.
func (r *fleetRig) child(ctx workflow.Context, in workflows.ChangeMediumInput) (workflows.ChangeMediumResult, error) {
	id := workflow.GetInfo(ctx).WorkflowExecution.ID
	r.mu.Lock()
	r.started = append(r.started, id)
	r.viaChild++
	r.inFlight++
	r.perHost[in.Host]++
	r.maxFlight = max(r.maxFlight, r.inFlight)
	r.maxHost[in.Host] = max(r.maxHost[in.Host], r.perHost[in.Host])
	took, fail := r.took[id], r.fail[id]
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inFlight--
		r.perHost[in.Host]--
		r.mu.Unlock()
	}()
	if took == 0 {
		took = 10 * time.Second
	}
	res := workflows.ChangeMediumResult{Old: "/isos/old.iso", New: in.Medium, Outcome: workflows.OutcomeChanged}
	if err := workflow.Sleep(ctx, took); err != nil {
		r.mu.Lock()
		r.canceled = append(r.canceled, id)
		r.mu.Unlock()
		res.Outcome = workflows.OutcomeCanceled
		return workflows.ChangeMediumResult{}, temporal.NewCanceledError(res)
	}
	if fail {
		res.Outcome, res.Error = workflows.OutcomeFailedRestored, "the fdset never came"
		return workflows.ChangeMediumResult{}, temporal.NewApplicationErrorWithOptions("change failed", workflows.ErrSwapFailedRestored,
			temporal.ApplicationErrorOptions{NonRetryable: true, Details: []any{res}})
	}
	return res, nil
}

func (r *fleetRig) input(mod func(*workflows.FleetSwapInput)) workflows.FleetSwapInput {
	in := workflows.FleetSwapInput{Batch: "b1", Pages: len(r.pages), HostTotals: map[string]int{}, Requester: "ops", BenchChildren: r.children}
	for _, p := range r.pages {
		in.Total += len(p)
		for _, d := range p {
			in.HostTotals[d.Host]++
		}
	}
	if mod != nil {
		mod(&in)
	}
	return in
}

// id is the child id of drive i of page p.
func (r *fleetRig) id(p, i int) string { return r.pages[p][i].ID() }

// run runs the batch to its end and returns its result.
func (r *fleetRig) run(in workflows.FleetSwapInput) workflows.FleetSwapResult {
	r.t.Helper()
	r.env.ExecuteWorkflow(workflows.FleetSwapName, in)
	require.True(r.t, r.env.IsWorkflowCompleted())
	require.NoError(r.t, r.env.GetWorkflowError())
	var res workflows.FleetSwapResult
	require.NoError(r.t, r.env.GetWorkflowResult(&res))
	return res
}

// update sends an update after d and checks whether it was accepted.
func (r *fleetRig) update(d time.Duration, name string, accept bool, got *workflows.FleetProgress) {
	r.env.RegisterDelayedCallback(func() {
		r.env.UpdateWorkflow(name, "", &testsuite.TestUpdateCallback{
			OnReject: func(err error) {
				if accept {
					r.t.Errorf("update %s rejected: %v", name, err)
				}
			},
			OnAccept: func() {
				if !accept {
					r.t.Errorf("update %s accepted, want a rejection", name)
				}
			},
			OnComplete: func(v any, err error) {
				if got != nil && err == nil {
					*got = v.(workflows.FleetProgress)
				}
			},
		}, workflows.FleetUpdate{Requester: "ops", Reason: "test"})
	}, d)
}

func (r *fleetRig) query() workflows.FleetProgress {
	v, err := r.env.QueryWorkflow(workflows.ProgressQuery)
	require.NoError(r.t, err)
	var p workflows.FleetProgress
	require.NoError(r.t, v.Get(&p))
	return p
}

// The limits are never exceeded, and are used: 3 hosts of 10 drives, 4 in flight at most,
// 2 per host.
func TestFleetLimits(t *testing.T) { fleetModes(t, testFleetLimits) }

func testFleetLimits(t *testing.T, children bool) {
	r := newFleetRig(t, children, 3, 10, 100)
	for i, d := range r.pages[0] {
		r.took[d.ID()] = time.Duration(1+i%4) * time.Second // uneven, so the window slides
	}
	res := r.run(r.input(func(in *workflows.FleetSwapInput) {
		in.Limits = workflows.FleetLimits{Global: 4, PerHost: 2}
	}))
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, 30, res.Done)
	assert.Equal(t, 30, res.Changed)
	assert.Zero(t, res.NotStarted)
	assert.Equal(t, 4, r.maxFlight, "the global limit is used, never passed")
	assert.Equal(t, []string{"b1-plan-00000"}, r.released)
	for h, n := range r.maxHost {
		assert.LessOrEqual(t, n, 2, "host %s", h)
	}
	assert.Len(t, r.started, 30)
	// The canary wave came first: the first drive of each of the 3 hosts.
	assert.ElementsMatch(t, []string{r.id(0, 0), r.id(0, 1), r.id(0, 2)}, r.started[:3])
}

// A failed canary halts the batch: nothing but the canaries ran.
func TestFleetCanaryHalts(t *testing.T) { fleetModes(t, testFleetCanaryHalts) }

func testFleetCanaryHalts(t *testing.T, children bool) {
	r := newFleetRig(t, children, 3, 4, 100)
	r.fail[r.id(0, 1)] = true
	res := r.run(r.input(nil))
	assert.Equal(t, workflows.FleetHalted, res.Status)
	assert.Contains(t, res.Reason, "canary "+r.id(0, 1))
	assert.Contains(t, res.Reason, "the fdset never came")
	assert.Len(t, r.started, 3)
	assert.Equal(t, 3, res.Done)
	assert.Equal(t, 1, res.Failed)
	assert.Equal(t, 1, res.Restored)
	assert.Equal(t, 9, res.NotStarted)
}

// The failure budget stops new swaps at its count; the running ones finish.
func TestFleetFailureBudget(t *testing.T) { fleetModes(t, testFleetFailureBudget) }

func testFleetFailureBudget(t *testing.T, children bool) {
	r := newFleetRig(t, children, 2, 10, 100)
	for _, i := range []int{4, 6, 7} {
		r.fail[r.id(0, i)] = true
	}
	res := r.run(r.input(func(in *workflows.FleetSwapInput) {
		in.Canary.Off = true
		in.Limits = workflows.FleetLimits{Global: 2, PerHost: 1}
		in.Budget.Failures = 2
	}))
	assert.Equal(t, workflows.FleetHalted, res.Status)
	assert.Contains(t, res.Reason, "failure budget spent: 2 of 20 drives failed (budget 2)")
	// Drives 0-5 end in pairs; 6 and 7 ran together, 7's failure came with the budget
	// already spent by 6's: nothing after them started.
	assert.Len(t, r.started, 8)
	assert.Equal(t, 3, res.Failed)
	assert.Equal(t, 12, res.NotStarted)
}

func TestFleetBudgetAllowed(t *testing.T) {
	tests := []struct {
		name  string
		b     workflows.FleetBudget
		total int
		want  int
	}{
		{"default share", workflows.FleetBudget{}, 1000, 50},
		{"default share, small plan", workflows.FleetBudget{}, 3, 1},
		{"count", workflows.FleetBudget{Failures: 7}, 1000, 7},
		{"share", workflows.FleetBudget{Share: 0.01}, 1000, 10},
		{"both: the smaller", workflows.FleetBudget{Failures: 7, Share: 0.5}, 100, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.b.Allowed(tt.total), "%+v.Allowed(%d)", tt.b, tt.total)
		})
	}
}

// Pause stops new starts; resume goes on; the validators refuse what makes no sense.
func TestFleetPauseResume(t *testing.T) { fleetModes(t, testFleetPauseResume) }

func testFleetPauseResume(t *testing.T, children bool) {
	r := newFleetRig(t, children, 1, 6, 100)
	in := r.input(func(in *workflows.FleetSwapInput) {
		in.Canary.Off = true
		in.Limits = workflows.FleetLimits{Global: 1, PerHost: 1}
	})
	r.update(5*time.Second, workflows.UpdateResume, false, nil) // running: nothing to resume
	var paused workflows.FleetProgress
	r.update(15*time.Second, workflows.UpdatePause, true, &paused)
	r.update(16*time.Second, workflows.UpdatePause, false, nil) // paused already
	var during workflows.FleetProgress
	r.env.RegisterDelayedCallback(func() { during = r.query() }, 100*time.Second)
	r.update(200*time.Second, workflows.UpdateResume, true, nil)
	res := r.run(in)
	assert.Equal(t, workflows.FleetPaused, paused.Status)
	assert.Equal(t, workflows.FleetPaused, during.Status)
	// Paused at 15 s, with drive 2 running: it finished; nothing started until 200 s.
	assert.Equal(t, 2, during.Done)
	assert.Zero(t, during.Running)
	assert.Equal(t, 4, during.Waiting)
	assert.Equal(t, workflows.HostProgress{FleetCounters: workflows.FleetCounters{Done: 2, Changed: 2}, Total: 6, Waiting: 4}, during.Hosts["h1"])
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, 6, res.Changed)
}

// Stop lets the running swaps finish and starts no more.
func TestFleetStop(t *testing.T) { fleetModes(t, testFleetStop) }

func testFleetStop(t *testing.T, children bool) {
	r := newFleetRig(t, children, 2, 5, 100)
	in := r.input(func(in *workflows.FleetSwapInput) {
		in.Canary.Off = true
		in.Limits = workflows.FleetLimits{Global: 2, PerHost: 1}
	})
	r.update(15*time.Second, workflows.UpdateStop, true, nil)
	r.update(16*time.Second, workflows.UpdateStop, false, nil)
	r.update(17*time.Second, workflows.UpdatePause, false, nil)
	res := r.run(in)
	assert.Equal(t, workflows.FleetStopped, res.Status)
	assert.Contains(t, res.Reason, "stopped by ops (test)")
	assert.Equal(t, 4, res.Changed, "the two running at 15 s finished")
	assert.Empty(t, r.canceled)
	assert.Equal(t, 6, res.NotStarted)
}

// Cancel cancels the running swaps (which put their media back) and starts no more.
func TestFleetCancel(t *testing.T) { fleetModes(t, testFleetCancel) }

func testFleetCancel(t *testing.T, children bool) {
	r := newFleetRig(t, children, 2, 5, 100)
	in := r.input(func(in *workflows.FleetSwapInput) {
		in.Canary.Off = true
		in.Limits = workflows.FleetLimits{Global: 2, PerHost: 1}
	})
	r.update(15*time.Second, workflows.UpdateCancel, true, nil)
	r.update(16*time.Second, workflows.UpdateCancel, false, nil)
	r.update(17*time.Second, workflows.UpdateResume, false, nil)
	res := r.run(in)
	assert.Equal(t, workflows.FleetCanceled, res.Status)
	assert.Equal(t, 2, res.Changed)
	assert.Equal(t, 2, res.Canceled)
	assert.Len(t, r.canceled, 2)
	// The two started before the cancel, one per host; the test environment starts the
	// children of one workflow task in no fixed order.
	assert.ElementsMatch(t, []string{r.id(0, 2), r.id(0, 3)}, r.started[2:])
	assert.Equal(t, 6, res.NotStarted)
}

// Temporal's own cancel of the batch cancels the running swaps too, waits for them, and
// ends the batch Canceled.
func TestFleetWorkflowCanceled(t *testing.T) { fleetModes(t, testFleetWorkflowCanceled) }

func testFleetWorkflowCanceled(t *testing.T, children bool) {
	r := newFleetRig(t, children, 2, 5, 100)
	r.env.RegisterDelayedCallback(r.env.CancelWorkflow, 15*time.Second)
	r.env.ExecuteWorkflow(workflows.FleetSwapName, r.input(func(in *workflows.FleetSwapInput) {
		in.Canary.Off = true
		in.Limits = workflows.FleetLimits{Global: 2, PerHost: 1}
	}))
	require.True(t, r.env.IsWorkflowCompleted())
	var canceled *temporal.CanceledError
	require.True(t, errors.As(r.env.GetWorkflowError(), &canceled), "%v", r.env.GetWorkflowError())
	assert.Len(t, r.canceled, 2)
	assert.Equal(t, 4, len(r.started))
}

// A run continues as new at a page boundary once DrivesPerRun drives ran, with no child
// running, carrying the cursor and counters; the next run picks up at the next page.
func TestFleetContinueAsNew(t *testing.T) { fleetModes(t, testFleetContinueAsNew) }

func testFleetContinueAsNew(t *testing.T, children bool) {
	r := newFleetRig(t, children, 2, 6, 5) // pages of 5, 5, 2
	in := r.input(func(in *workflows.FleetSwapInput) {
		in.Limits = workflows.FleetLimits{Global: 3, PerHost: 2}
		in.DrivesPerRun = 4
		in.Budget.Failures = 5
	})
	r.fail[r.id(1, 0)] = true
	runs := 0
	for {
		runs++
		r.env.ExecuteWorkflow(workflows.FleetSwapName, in)
		require.True(t, r.env.IsWorkflowCompleted())
		var can *workflow.ContinueAsNewError
		if err := r.env.GetWorkflowError(); errors.As(err, &can) {
			assert.Zero(t, r.inFlight, "no child runs across a continue-as-new")
			var next workflows.FleetSwapInput
			require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
			require.NotNil(t, next.State)
			assert.Equal(t, runs, next.State.Page, "one page per run")
			assert.Equal(t, 5*runs, next.State.Counters.Done)
			assert.True(t, next.State.CanaryDone)
			in = next
			r.newEnv()
			continue
		}
		require.NoError(t, r.env.GetWorkflowError())
		break
	}
	var res workflows.FleetSwapResult
	require.NoError(t, r.env.GetWorkflowResult(&res))
	assert.Equal(t, 3, runs)
	assert.Equal(t, 3, res.Runs)
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, 12, res.Done)
	assert.Equal(t, 11, res.Changed)
	assert.Equal(t, 1, res.Failed)
	assert.Len(t, r.started, 12)
	assert.LessOrEqual(t, r.maxFlight, 3)
}

// A round that fails after its starts were made (its worker stopped) loses nothing: the next
// round finds those starts by their keys and starts none twice, and the batch ends done.
func TestFleetRoundFails(t *testing.T) {
	r := newFleetRig(t, false, 2, 4, 100)
	r.failRounds = 2
	res := r.run(r.input(func(in *workflows.FleetSwapInput) {
		in.Limits = workflows.FleetLimits{Global: 4, PerHost: 2}
	}))
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, 8, res.Changed)
	assert.Len(t, r.started, 8, "every drive started once: %v", r.started)
	assert.Zero(t, r.failRounds)
}

// A round that fails after its starts were made, then a cancel: the next round only looks
// for those starts (FindOnly), and cancels the ones it finds.
func TestFleetRoundFailsThenCancel(t *testing.T) {
	r := newFleetRig(t, false, 2, 4, 100)
	r.failRounds = 1
	r.update(500*time.Millisecond, workflows.UpdateCancel, true, nil)
	res := r.run(r.input(func(in *workflows.FleetSwapInput) {
		in.Canary.Off = true
		in.Limits = workflows.FleetLimits{Global: 4, PerHost: 2}
	}))
	assert.Equal(t, workflows.FleetCanceled, res.Status)
	assert.Len(t, r.started, 4, "the first round's starts, none after: %v", r.started)
	assert.ElementsMatch(t, r.started, r.canceled, "every swap started was canceled")
	assert.Equal(t, 4, res.Canceled)
}

// newLostRoundRig is a batch of 2 hosts × 4 drives, two at a time (one per host), whose
// second round of starts (rows 2 and 3) was made by a lost attempt of its workflow task,
// and which gets update before that round runs again.
func newLostRoundRig(t *testing.T, update string) (*fleetRig, workflows.FleetSwapInput) {
	r := newFleetRig(t, false, 2, 4, 100)
	r.lost = []workflows.DriveRef{{Page: 0, Row: 2}, {Page: 0, Row: 3}}
	r.lostAfter, r.lostUpdate = 2, update
	return r, r.input(func(in *workflows.FleetSwapInput) {
		in.Canary.Off = true
		in.Limits = workflows.FleetLimits{Global: 2, PerHost: 1}
	})
}

// A stop that comes between a lost attempt's starts and the round run again: the batch
// looks for the starts it had queued, finds them, and waits for those swaps, which it
// reports as changed, not as not started.
func TestFleetLostRoundThenStop(t *testing.T) {
	r, in := newLostRoundRig(t, workflows.UpdateStop)
	res := r.run(in)
	assert.Empty(t, r.lost, "the lost round's starts were made")
	assert.Equal(t, workflows.FleetStopped, res.Status)
	assert.Equal(t, 4, res.Changed, "%+v", res)
	assert.Equal(t, 4, res.NotStarted)
	assert.Len(t, r.started, 4, "no drive started twice: %v", r.started)
	assert.Zero(t, r.inFlight, "a swap the batch never waited for")
}

// A cancel in the same place: the swaps the lost attempt started are canceled (each puts
// its old medium back), not left to change their drives.
func TestFleetLostRoundThenCancel(t *testing.T) {
	r, in := newLostRoundRig(t, workflows.UpdateCancel)
	res := r.run(in)
	assert.Equal(t, workflows.FleetCanceled, res.Status)
	assert.Equal(t, 2, res.Changed)
	assert.Equal(t, 2, res.Canceled)
	assert.ElementsMatch(t, []string{r.id(0, 2), r.id(0, 3)}, r.canceled)
	assert.Len(t, r.started, 4, "no drive started twice: %v", r.started)
	assert.Zero(t, r.inFlight, "a swap the batch never waited for")
}

// A pause in the same place: while paused the batch counts the swaps the lost attempt
// started (running, then done), and after the resume starts none of them again.
func TestFleetLostRoundThenPause(t *testing.T) {
	r, in := newLostRoundRig(t, workflows.UpdatePause)
	var during workflows.FleetProgress
	r.env.RegisterDelayedCallback(func() { during = r.query() }, 100*time.Second)
	r.update(200*time.Second, workflows.UpdateResume, true, nil)
	res := r.run(in)
	assert.Equal(t, workflows.FleetPaused, during.Status)
	assert.Equal(t, 4, during.Done, "%+v", during)
	assert.Zero(t, during.Running)
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, 8, res.Changed)
	assert.Len(t, r.started, 8, "no drive started twice: %v", r.started)
}

package integration

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/qmp/qmptest"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// holdFor is how long a slowed QMP command or a held lock keeps a step open: long enough to
// see the step start and kill the worker inside it.
const holdFor = 3 * time.Second

// crashEnv is what a crash case's hold works on.
type crashEnv struct {
	h     *xensim.Host
	dom   xensim.DomainInfo
	fake  *qmptest.Server
	proxy *xsProxy
}

// A crashCase kills the worker inside one step of a change. hold slows that step down
// before the change starts and returns what undoes it once the worker is dead.
type crashCase struct {
	step string
	kind xensim.Kind
	hold func(t *testing.T, e *crashEnv) (release func())
}

// changedOnce says whether the kill lands after a dom0 change took: the run is one workflow
// task, whose steps all run again on the next worker but those Inspect finds done
// (InspectInput.Resume), so that the medium the run put in is never ejected.
func (c crashCase) changedOnce() bool {
	return c.kind == xensim.KindDom0 && (c.step == activities.NameRecord || c.step == activities.NameVerify)
}

// delayQMP holds a step that sends command to QEMU: the fake answers it holdFor late (and,
// like QEMU, still runs it after the client died; the next client of the monitor waits for
// it). Earlier steps that send the same command are slowed down too, which only costs time.
func delayQMP(command string) func(*testing.T, *crashEnv) func() {
	return func(t *testing.T, e *crashEnv) func() {
		e.fake.Delay(command, holdFor)
		return func() { e.fake.Delay(command, 0) }
	}
}

// holdLock holds a step that takes one of libxl's lock files of the guest: the test holds it
// (flock, as xl would), and the step fails with ErrLockBusy, or waits, until it is free.
func holdLock(path func(e *crashEnv) string) func(*testing.T, *crashEnv) func() {
	return func(t *testing.T, e *crashEnv) func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l, err := xen.Lock(ctx, path(e))
		require.NoError(t, err)
		return func() { require.NoError(t, l.Unlock()) }
	}
}

// setKnob holds a step with one of xensim's fault knobs, set to on and back to off.
func setKnob(knob, on, off string) func(*testing.T, *crashEnv) func() {
	return func(t *testing.T, e *crashEnv) func() {
		ctx := testenv.Context(t, 10*time.Second)
		require.NoError(t, e.h.SetFault(ctx, e.dom.Name, knob, on))
		return func() { require.NoError(t, e.h.SetFault(ctx, e.dom.Name, knob, off)) }
	}
}

// crashCases are the steps of a stubdom insert and the dom0 insert's own step, and how
// each is held open.
var crashCases = []crashCase{
	// Inspect reads query-block.
	{activities.NameInspect, xensim.KindStubdom, delayQMP("query-block")},
	// Lock takes libxl-device-changes-lock, which the test holds as xl would.
	{activities.NameLock, xensim.KindStubdom, holdLock(func(e *crashEnv) string {
		return xen.DeviceChangesLockPath(e.h.LibDir(), e.dom.DomID, e.dom.UUID)
	})},
	// Eject sends eject.
	{activities.NameEject, xensim.KindStubdom, delayQMP("eject")},
	// ReleaseFdset sends remove-fd for the set of the first insert.
	{activities.NameReleaseFdset, xensim.KindStubdom, delayQMP("remove-fd")},
	// DetachVBD waits for the backend to reach Closed, which blkback refuses (never-close).
	{activities.NameDetachVBD, xensim.KindStubdom, setKnob(xensim.KnobNeverClose, "true", "false")},
	// AttachVBD writes the new vbd in a transaction; the proxy holds its WRITE of the
	// backend's script node.
	{activities.NameAttachVBD, xensim.KindStubdom, func(t *testing.T, e *crashEnv) func() {
		_, release := e.proxy.holdNext(isWrite(func(p string) bool {
			return strings.Contains(p, "/backend/vbd/") && strings.HasSuffix(p, "/script")
		}))
		return release
	}},
	// WaitFdset polls query-fdsets until the stubdom adds the fd, which it does 6 s late
	// (add-fd-delay): after the new worker's WaitFdset is polling, so that a monitor is
	// connected when the set appears (QEMU before 9.1 drops an unused set when no monitor
	// is; see TestCrashAddFDWhileNoWorker). The knob stays on: the stubdom reads it when the
	// vbd connects, which may be after the kill, and no later step attaches a vbd.
	{activities.NameWaitFdset, xensim.KindStubdom, func(t *testing.T, e *crashEnv) func() {
		setKnob(xensim.KnobAddFDDelay, "6s", "0s")(t, e)
		return func() {}
	}},
	// ChangeMedium sends blockdev-change-medium.
	{activities.NameChangeMedium, xensim.KindStubdom, delayQMP("blockdev-change-medium")},
	// Record rewrites libxl's JSON config under the domain-userdata lock, which the test
	// holds.
	{activities.NameRecord, xensim.KindStubdom, holdLock(func(e *crashEnv) string {
		return xen.UserdataLockPath(e.h.LibDir(), e.dom.DomID, e.dom.UUID)
	})},
	// Verify reads query-block (as do Inspect, Eject and ChangeMedium before it, which are
	// slowed down too).
	{activities.NameVerify, xensim.KindStubdom, delayQMP("query-block")},
	// AddFD (dom0) sends add-fd.
	{activities.NameAddFD, xensim.KindDom0, delayQMP("add-fd")},
	// Record (dom0), after the change took: the run is one workflow task, all of whose steps
	// run again but those Inspect finds done.
	{activities.NameRecord, xensim.KindDom0, holdLock(func(e *crashEnv) string {
		return xen.UserdataLockPath(e.h.LibDir(), e.dom.DomID, e.dom.UUID)
	})},
}

// crashRoundsFlag is how many times TestCrash kills the worker in each step (one change per
// kill); -report prints the recovery table over all of them.
var crashRoundsFlag = flag.Int("crash-rounds", 1, "TestCrash: kills per step (3 gives 33 kills for -report's table)")

// TestCrash kills the worker (SIGKILL) inside each step of a change in turn, starts a new
// one, and checks that the change finishes: the guest's QEMU holds the new medium and no
// longer the old one (no fdset left behind), xenstore has exactly one vbd for the drive with
// the new params, libxl's config names the new medium, the step was indeed retried after the
// crash (an attempt > 1), and the history replays.
//
// Each case runs a first insert (so that the drive holds a medium from a stubdom fdset, which
// the crashed change must release) and then -crash-rounds crashed ones, each on a new worker,
// on its own host, all cases in parallel. Every step heartbeats, so a killed worker's step is
// retried within its 2 s heartbeat timeout, and a workflow task it had taken within the 2 s
// workflow task timeout. With -report it prints how long each recovery took, from the new
// worker's start (BENCHMARKS.md); nothing here asserts a time.
//
//	go test ./integration -run 'TestCrash$' -count=1 -v -args -report -crash-rounds 3
func TestCrash(t *testing.T) {
	need(t)
	t.Parallel()
	var mu sync.Mutex
	var all []recovery
	t.Cleanup(func() {
		if *reportFlag && !t.Failed() {
			fmt.Println(recoveryTable(all))
		}
	})
	for _, c := range crashCases {
		t.Run(c.step+"/"+string(c.kind), func(t *testing.T) {
			t.Parallel()
			rs, _ := runCrash(t, c, max(*crashRoundsFlag, 1))
			mu.Lock()
			all = append(all, rs...)
			mu.Unlock()
		})
	}
}

// recovery is how long a change took to recover from one kill, from the new worker's start
// (its process start) to: the crashed step's new attempt starting (retried), that attempt
// ending (done; it includes what the test's hold left of the step's own work), and the run's
// next workflow task done on the new worker (resumed), which includes the wait for the dead
// worker's sticky queue.
type recovery struct {
	step                   string
	retried, done, resumed time.Duration
	failed                 bool // the retried attempt failed
}

// runCrash runs one crash case, rounds kills in a row, and returns their recoveries and the
// last crashed change's run.
func runCrash(t *testing.T, c crashCase, rounds int) ([]recovery, client.WorkflowRun) {
	h := startHost(t, xensim.Config{
		HostName:   hostName("crash-" + strings.ToLower(c.step)),
		Domains:    []xensim.DomainSpec{{Kind: c.kind}},
		QEMU:       xensim.QEMUFake,
		AgentDelay: -1, // the stubdom adds the fd at once
	})
	e := &crashEnv{h: h, dom: domainOf(t, h, c.kind)}
	e.fake = h.QEMU(e.dom.DomID).Fake()
	require.NotNil(t, e.fake)
	e.proxy = startXSProxy(t, h.Dir(), h.XenstoredPath())
	opts := workerOpts{xenstore: e.proxy.path}

	media := []string{iso(h, xensim.ISOTools), iso(h, xensim.ISORescue)}
	w := startWorker(t, h, opts)
	swapOK(t, h, e.dom, media[0], workflows.OutcomeChanged)

	var out []recovery
	var last client.WorkflowRun
	for round := 1; round <= rounds; round++ {
		old, medium := media[(round-1)%2], media[round%2]
		release := c.hold(t, e)
		h.ResetMedia()
		ctx := testenv.Context(t, 2*time.Minute)
		run := startSwap(t, ctx, swapInput(h, e.dom, medium, ""))
		waitStepStarted(t, testenv.Context(t, 60*time.Second), run, w, c.step)
		w.kill()
		release()
		w = startWorker(t, h, opts)
		t.Logf("step %s round %d: worker killed; new worker polling %s after its start", c.step, round, time.Since(w.started).Round(time.Millisecond))

		res, err := waitSwap(ctx, run)
		require.NoError(t, err, "change after a crash in %s: result %+v", c.step, res)
		assert.Equal(t, workflows.OutcomeChanged, res.Outcome, "result %+v", res)
		checkDrive(t, h, e.dom, medium, old)
		if c.changedOnce() {
			m := h.Media()
			assert.Equal(t, 1, m.Ejects, "the resumed run ejected the medium it had put in: %+v", m)
			assert.Equal(t, 1, m.Changes, "%+v", m)
		}

		hist := requireReplays(t, run)
		var r recovery
		if workflows.RunsLocal(c.step) {
			// A local step's attempts start again at 1 on the new worker, which replays the
			// run and runs again every local step since the last completed workflow task:
			// the proof that the kill landed inside it is that the new worker ran it.
			again, ok := stepStarted(w.logs.String(), run, c.step)
			require.True(t, ok, "local step %s did not run again on the new worker after the crash", c.step)
			r = localRecoveryOf(hist, c.step, w.started, again)
			require.NotZero(t, r.done, "history of %s has no LocalActivity marker of %s", run.GetID(), c.step)
		} else {
			attempts := stepAttempts(hist, c.step)
			require.NotEmpty(t, attempts, "history of %s has no finished %s", run.GetID(), c.step)
			require.Greater(t, slices.Max(attempts), int32(1), "step %s was not retried after the crash (attempts %v): the kill did not land inside it", c.step, attempts)
			r = recoveryOf(hist, c.step, w.started)
		}
		t.Logf("step %s round %d: retried %s, done %s, resumed %s after the new worker's start", c.step, round, r.retried, r.done, r.resumed)
		out, last = append(out, r), run
	}
	return out, last
}

// recoveryOf reads a crashed run's history: the first attempt > 1 of step to start, its end,
// and the first workflow task completed after it, each from started.
func recoveryOf(h *historypb.History, step string, started time.Time) recovery {
	r := recovery{step: step}
	types := map[int64]string{}
	var sched int64
	for _, e := range h.GetEvents() {
		at := e.GetEventTime().AsTime().Sub(started)
		switch {
		case e.GetActivityTaskScheduledEventAttributes() != nil:
			types[e.GetEventId()] = e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName()
		case e.GetActivityTaskStartedEventAttributes() != nil:
			a := e.GetActivityTaskStartedEventAttributes()
			if sched == 0 && types[a.GetScheduledEventId()] == step && a.GetAttempt() > 1 {
				sched, r.retried = a.GetScheduledEventId(), at
			}
		case e.GetActivityTaskCompletedEventAttributes() != nil:
			if sched != 0 && r.done == 0 && e.GetActivityTaskCompletedEventAttributes().GetScheduledEventId() == sched {
				r.done = at
			}
		case e.GetActivityTaskFailedEventAttributes() != nil:
			// WaitFdset may find the set gone (QEMU dropped it with the dead worker's
			// monitor) and fail, and the run then cycles the PV disk: the step ended all
			// the same.
			if sched != 0 && r.done == 0 && e.GetActivityTaskFailedEventAttributes().GetScheduledEventId() == sched {
				r.done, r.failed = at, true
			}
		case e.GetWorkflowTaskCompletedEventAttributes() != nil:
			if r.done != 0 && r.resumed == 0 {
				r.resumed = at
			}
		}
	}
	return r
}

// localRecoveryOf reads a crashed run's history for a local step, which the new worker ran
// again at again (its log): the step ended at its first LocalActivity marker's time (the
// dead worker's run of it left none) (the workflow's
// time when it ended), and the run resumed when the workflow task that ran it completed
// (the marker is written with it), each from started.
func localRecoveryOf(h *historypb.History, step string, started, again time.Time) recovery {
	r := recovery{step: step, retried: again.Sub(started)}
	var taskDone time.Time
	for _, e := range h.GetEvents() {
		if e.GetWorkflowTaskCompletedEventAttributes() != nil {
			taskDone = e.GetEventTime().AsTime()
		}
		a := e.GetMarkerRecordedEventAttributes()
		if a == nil || a.GetMarkerName() != "LocalActivity" {
			continue
		}
		var d struct {
			ActivityType string
			ReplayTime   time.Time
		}
		if ps := a.GetDetails()["data"].GetPayloads(); len(ps) == 0 || converter.GetDefaultDataConverter().FromPayload(ps[0], &d) != nil || d.ActivityType != step {
			continue
		}
		r.done, r.resumed, r.failed = d.ReplayTime.Sub(started), taskDone.Sub(started), a.GetFailure() != nil
		break
	}
	return r
}

// recoveryTable renders the recoveries as markdown: per step and over all kills.
func recoveryTable(rs []recovery) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%d kills; seconds from the new worker's start\n\n", len(rs))
	b.WriteString("| step | kills | retried p50 | done p50 | done max | resumed p50 | resumed max |\n|---|---:|---:|---:|---:|---:|---:|\n")
	by := map[string][]recovery{}
	var steps []string
	for _, r := range rs {
		if by[r.step] == nil {
			steps = append(steps, r.step)
		}
		by[r.step] = append(by[r.step], r)
	}
	col := func(rs []recovery, f func(recovery) time.Duration) []time.Duration {
		var ds []time.Duration
		for _, r := range rs {
			ds = append(ds, f(r))
		}
		slices.Sort(ds)
		return ds
	}
	retried := func(r recovery) time.Duration { return r.retried }
	done := func(r recovery) time.Duration { return r.done }
	resumed := func(r recovery) time.Duration { return r.resumed }
	sec := func(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }
	for _, s := range steps {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s |\n", s, len(by[s]),
			sec(pct(col(by[s], retried), 50)), sec(pct(col(by[s], done), 50)), sec(slices.Max(col(by[s], done))),
			sec(pct(col(by[s], resumed), 50)), sec(slices.Max(col(by[s], resumed))))
	}
	failed := 0
	for _, r := range rs {
		if r.failed {
			failed++
		}
	}
	fmt.Fprintf(&b, "\n%d of the retried attempts failed; their step was retried again, or the run went on (WaitFdset: a lost fdset, the PV disk cycled).\n", failed)
	b.WriteString("\n| all kills | p50 | p95 | max |\n|---|---:|---:|---:|\n")
	for _, c := range []struct {
		name string
		f    func(recovery) time.Duration
	}{{"retried", retried}, {"done", done}, {"resumed", resumed}} {
		ds := col(rs, c.f)
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.name, sec(pct(ds, 50)), sec(pct(ds, 95)), sec(slices.Max(ds)))
	}
	return b.String()
}

// pct is the p-th percentile of sorted ds (nearest rank).
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := (p*len(ds) + 99) / 100
	return ds[max(i-1, 0)]
}

// TestCrashBeforeStubdomAddFD kills the worker in the gap between the stubdom's new vbd
// connecting and the stubdom adding its fd, and starts the new worker only after the add-fd:
// the set is added while no QMP client is connected, and QEMU before 9.1 (which xensim's fake
// follows) closes an unused set's fd when its last monitor connection closes. The change
// cannot then finish as asked; it must still end safely: either the new medium or the old
// one in the drive, with exactly one vbd for it, no fdset for the other, and a history that
// replays. The test logs which it was.
func TestCrashBeforeStubdomAddFD(t *testing.T) {
	need(t)
	t.Parallel()
	h, logs := startHostLogs(t, xensim.Config{
		HostName:   hostName("crash-gap"),
		Domains:    []xensim.DomainSpec{{Kind: xensim.KindStubdom}},
		QEMU:       xensim.QEMUFake,
		AgentDelay: 500 * time.Millisecond,
	})
	dom := domainOf(t, h, xensim.KindStubdom)
	first, second := iso(h, xensim.ISOTools), iso(h, xensim.ISORescue)
	w1 := startWorker(t, h, workerOpts{})
	swapOK(t, h, dom, first, workflows.OutcomeChanged)
	const added = "stub domain added the fd"
	require.Equal(t, 1, strings.Count(logs.String(), added))

	ctx := testenv.Context(t, 2*time.Minute)
	run := startSwap(t, ctx, swapInput(h, dom, second, ""))
	waitStepStarted(t, ctx, run, w1, activities.NameWaitFdset)
	w1.kill()
	require.NoError(t, logs.waitForCount(ctx, added, 2), "the stubdom did not add the new fd")
	t.Logf("fdsets after the add-fd with no worker connected: %+v", h.QEMU(dom.DomID).Fake().Fdsets())
	startWorker(t, h, workerOpts{})

	// The new worker's WaitFdset finds the vbd connected and no set (QEMU dropped it with its
	// last client): it reports ErrFdsetGone and the workflow cycles the PV disk, so the swap
	// still finishes with the new medium.
	res, err := waitSwap(ctx, run)
	require.NoError(t, err, "outcome %s: %s", res.Outcome, res.Error)
	require.Equal(t, workflows.OutcomeChanged, res.Outcome)
	checkDrive(t, h, dom, second, first)
	require.Equal(t, 3, strings.Count(logs.String(), added), "the stubdom adds the fd again after the PV disk is cycled")
	requireReplays(t, run)
}

// TestCrashInEjectRestoresOldMedium shows what Inspect's note is for, now that Eject is a
// local step in the workflow task that ran Inspect: the worker is killed inside Eject (the
// fake QEMU still carries the eject out, as QEMU does), so that nothing of that task reaches
// the history, and the new medium disappears while no worker runs. The next worker runs
// Inspect again on a drive that is now empty; answered afresh, it would know no old medium
// and the restore after the failed change would leave the drive empty. From its note it
// answers as before: the change fails at the missing medium and the old one is put back.
//
// Canceled instead while no worker runs, the run is canceled from the start of the next
// worker's task, before its Inspect answers: it asks the note, finds the lost attempt's
// answer and puts the old medium back (cancel-at-inspect-checks-note), where it used to end
// canceled with the drive empty.
func TestCrashInEjectRestoresOldMedium(t *testing.T) {
	need(t)
	t.Parallel()
	for _, kind := range []xensim.Kind{xensim.KindStubdom, xensim.KindDom0} {
		for _, then := range []string{"medium gone", "canceled"} {
			t.Run(string(kind)+"/"+then, func(t *testing.T) {
				t.Parallel()
				crashInEject(t, kind, then == "canceled")
			})
		}
	}
}

// crashInEject is a case of TestCrashInEjectRestoresOldMedium: after the kill, the new
// medium disappears, or with cancel the run is canceled.
func crashInEject(t *testing.T, kind xensim.Kind, cancel bool) {
	name := "crash-eject-note-" + string(kind)
	if cancel {
		name = "crash-eject-cancel-" + string(kind)
	}
	h := startHost(t, xensim.Config{
		HostName: hostName(name), Domains: []xensim.DomainSpec{{Kind: kind}},
		QEMU: xensim.QEMUFake, AgentDelay: -1,
	})
	dom := domainOf(t, h, kind)
	fake := h.QEMU(dom.DomID).Fake()
	w := startWorker(t, h, workerOpts{})
	old := iso(h, xensim.ISOTools)
	swapOK(t, h, dom, old, workflows.OutcomeChanged)

	doomed := filepath.Join(h.ISODir(), "doomed.iso")
	b, err := os.ReadFile(iso(h, xensim.ISORescue))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(doomed, b, 0o644))

	ejects := func() int { return countOf(fake.Commands(), "eject") }
	before := ejects()
	fake.Delay("eject", holdFor)
	ctx := testenv.Context(t, 2*time.Minute)
	// A workflow task timeout of 10 s instead of 2: the SDK completes a task whose
	// local steps run past 80 % of it, which on a loaded machine could record
	// Inspect's answer in the history before the kill and leave the note unused.
	in := swapInput(h, dom, doomed, "")
	opts := workflows.StartOptions(in)
	opts.WorkflowTaskTimeout = 10 * time.Second
	run, err := the.client.ExecuteWorkflow(ctx, opts, workflows.ChangeMediumName, in)
	require.NoError(t, err)
	waitStepStarted(t, testenv.Context(t, 60*time.Second), run, w, activities.NameEject)
	// The step starts before it sends the eject: kill only once QEMU has it (the
	// fake logs a command as it arrives, then holds its answer holdFor).
	require.Eventually(t, func() bool { return ejects() > before }, holdFor, 5*time.Millisecond,
		"Eject did not send the eject to QEMU")
	w.kill()
	fake.Delay("eject", 0)
	require.Eventually(t, func() bool { return !qemuView(t, h, dom).inserted }, 10*time.Second, 20*time.Millisecond,
		"the eject the dead worker sent did not happen")
	if cancel {
		require.NoError(t, the.client.CancelWorkflow(ctx, run.GetID(), run.GetRunID()))
		startWorker(t, h, workerOpts{})
		res, err := waitSwap(ctx, run)
		var canceled *temporal.CanceledError
		require.True(t, errors.As(err, &canceled), "error %v is not a CanceledError (result %+v)", err, res)
		assert.Equal(t, workflows.OutcomeCanceled, res.Outcome, "result %+v", res)
		assert.Equal(t, old, res.Old, "the old medium, as Inspect's note kept it")
		checkDrive(t, h, dom, old, doomed)
		hist := requireReplays(t, run)
		assert.Equal(t, workflow.Version(1), testenv.VersionMarkers(t, hist)["cancel-at-inspect-checks-note"])
		if kind == xensim.KindStubdom && recording() {
			writeHistory(t, run, workflows.ChangeMediumName, "worker-crash-in-eject-canceled-restored", historyNow)
		}
		return
	}
	require.NoError(t, os.Remove(doomed))
	w = startWorker(t, h, workerOpts{})

	res, err := waitSwap(ctx, run)
	require.Error(t, err, "the change of a vanished medium cannot succeed")
	assert.Equal(t, workflows.OutcomeFailedRestored, res.Outcome, "result %+v", res)
	assert.Equal(t, old, res.Old, "the old medium, as Inspect's note kept it")
	assert.Equal(t, activities.ErrMediumNotFound, res.ErrorType, "result %+v", res)
	checkDrive(t, h, dom, old, doomed)
	// The new worker ran Inspect again: proof that the kill lost the first task.
	_, again := stepStarted(w.logs.String(), run, activities.NameInspect)
	assert.True(t, again, "Inspect did not run again on the new worker")
	requireReplays(t, run)
}

// countOf counts the elements of xs equal to x.
func countOf(xs []string, x string) int {
	n := 0
	for _, v := range xs {
		if v == x {
			n++
		}
	}
	return n
}

package integration

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

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
}

// TestCrash kills the worker (SIGKILL) inside each step of a change in turn, starts a new
// one, and checks that the change finishes: the guest's QEMU holds the new medium and no
// longer the old one (no fdset left behind), xenstore has exactly one vbd for the drive with
// the new params, libxl's config names the new medium, the step was indeed retried after the
// crash (an attempt > 1), and the history replays.
//
// Each case runs a first insert (so that the drive holds a medium from a stubdom fdset, which
// the crashed change must release) and then the crashed one, on its own host and worker, all
// cases in parallel. A killed worker's activity is noticed only at its StartToClose timeout
// (its heartbeat timeout for WaitFdset), and its sticky workflow task waits for the sticky
// queue's schedule-to-start timeout (5 s) before it moves to the new worker: so each case
// takes 10-30 s.
func TestCrash(t *testing.T) {
	need(t)
	t.Parallel()
	for _, c := range crashCases {
		t.Run(c.step, func(t *testing.T) {
			t.Parallel()
			runCrash(t, c)
		})
	}
}

// runCrash runs one crash case and returns the crashed change's run.
func runCrash(t *testing.T, c crashCase) client.WorkflowRun {
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

	first, second := iso(h, xensim.ISOTools), iso(h, xensim.ISORescue)
	w1 := startWorker(t, h, opts)
	swapOK(t, h, e.dom, first, workflows.OutcomeChanged)

	release := c.hold(t, e)
	ctx := testenv.Context(t, 2*time.Minute)
	run := startSwap(t, ctx, swapInput(h, e.dom, second, ""))
	waitStepStarted(t, testenv.Context(t, 60*time.Second), run, c.step)
	w1.kill()
	release()
	w2 := startWorker(t, h, opts)
	t.Logf("step %s: worker killed; new worker polling %s after its start", c.step, time.Since(w2.started).Round(time.Millisecond))

	res, err := waitSwap(ctx, run)
	require.NoError(t, err, "change after a crash in %s: result %+v", c.step, res)
	assert.Equal(t, workflows.OutcomeChanged, res.Outcome, "result %+v", res)
	checkDrive(t, h, e.dom, second, first)

	hist := requireReplays(t, run)
	attempts := stepAttempts(hist, c.step)
	require.NotEmpty(t, attempts, "history of %s has no finished %s", run.GetID(), c.step)
	assert.Greater(t, slices.Max(attempts), int32(1), "step %s was not retried after the crash (attempts %v): the kill did not land inside it", c.step, attempts)
	return run
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
	waitStepStarted(t, ctx, run, activities.NameWaitFdset)
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

package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// verdictDeadline is how long a change may take to end once its guest's QEMU died.
const verdictDeadline = 30 * time.Second

// TestDeadDeviceModel kills the guest's QEMU inside each step of a change in turn (held
// open as TestCrash holds it) and checks that the change ends within verdictDeadline,
// saying the device model is gone, without Go type names, and that libxl's records of the
// drive are intact: one vbd, naming the old or the new medium, and one cdrom entry in the
// JSON config naming one of them.
func TestDeadDeviceModel(t *testing.T) {
	need(t)
	t.Parallel()
	for _, c := range crashCases {
		t.Run(c.step, func(t *testing.T) {
			t.Parallel()
			h := startHost(t, xensim.Config{
				HostName:   hostName("dead-" + strings.ToLower(c.step)),
				Domains:    []xensim.DomainSpec{{Kind: c.kind}},
				QEMU:       xensim.QEMUFake,
				AgentDelay: -1,
			})
			e := &crashEnv{h: h, dom: domainOf(t, h, c.kind)}
			e.fake = h.QEMU(e.dom.DomID).Fake()
			e.proxy = startXSProxy(t, h.Dir(), h.XenstoredPath())
			w := startWorker(t, h, workerOpts{xenstore: e.proxy.path})
			first, second := iso(h, xensim.ISOTools), iso(h, xensim.ISORescue)
			swapOK(t, h, e.dom, first, workflows.OutcomeChanged)

			release := c.hold(t, e)
			ctx := testenv.Context(t, 2*time.Minute)
			run := startSwap(t, ctx, swapInput(h, e.dom, second, ""))
			waitStepStarted(t, testenv.Context(t, 60*time.Second), run, w, c.step)
			require.NoError(t, h.SetFault(ctx, e.dom.Name, xensim.KnobKillQEMU, "true"))
			killed := time.Now()
			release()
			res, err := waitSwap(ctx, run)
			took := time.Since(killed)
			t.Logf("QEMU killed in %s: verdict %s after %s: %s", c.step, res.Outcome, took.Round(time.Millisecond), res.Error)

			require.Error(t, err, "a change whose QEMU died ended well: %+v", res)
			assert.Less(t, took, verdictDeadline, "verdict on a dead QEMU")
			assert.Contains(t, []workflows.Outcome{workflows.OutcomeFailed, workflows.OutcomeRestoreFailed}, res.Outcome)
			assert.Equal(t, activities.ErrDeviceModelGone, res.ErrorType, "result %+v", res)
			assert.Contains(t, res.Error, "is gone")
			for _, s := range res.Steps {
				assert.NotContains(t, s.ErrorType+s.Error, "wrapError", "step %s", s.Name)
			}
			checkRecordsIntact(t, h, e.dom, first, second)
			requireReplays(t, run)
		})
	}
}

// checkRecordsIntact checks that libxl's records still describe the drive: exactly one vbd
// for it whose params name one of media, and one cdrom entry in the JSON config naming one
// of them.
func checkRecordsIntact(t testing.TB, h *xensim.Host, dom xensim.DomainInfo, media ...string) {
	t.Helper()
	fe := dom.DomID
	var want []string
	for _, m := range media {
		if dom.Kind == xensim.KindStubdom {
			fe = dom.StubDomID
			want = append(want, m)
		} else {
			want = append(want, "aio:"+m)
		}
	}
	assert.Equal(t, []string{itoa(uint32(dom.DevID))}, xsDir(h, fmt.Sprintf("/libxl/%d/device/vbd", fe)), "vbds of domain %d in /libxl", fe)
	lp := xen.LibxlPath(fe, dom.DevID)
	assert.Contains(t, want, xsRead(h, lp+"/params"), "%s/params", lp)
	d := configDisk(t, dom)
	assert.Equal(t, 1, d.IsCDROM, "%s: is_cdrom", dom.ConfigPath)
	assert.Contains(t, media, d.PdevPath, "%s: pdev_path", dom.ConfigPath)
}

// TestPausedGuestRefused pauses a stubdom guest and a dom0 guest: a change is refused before
// anything is touched, saying the guest is paused, and the medium stays in.
func TestPausedGuestRefused(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{
		HostName: hostName("paused"),
		Domains:  []xensim.DomainSpec{{Kind: xensim.KindStubdom}, {Kind: xensim.KindDom0}},
		QEMU:     xensim.QEMUFake,
	})
	startWorker(t, h, workerOpts{})
	for _, dom := range []xensim.DomainInfo{domainOf(t, h, xensim.KindStubdom), domainOf(t, h, xensim.KindDom0)} {
		ctx := testenv.Context(t, time.Minute)
		require.NoError(t, h.SetFault(ctx, dom.Name, xensim.KnobPaused, "true"))
		before := qemuView(t, h, dom)
		res, err := waitSwap(ctx, startSwap(t, ctx, swapInput(h, dom, iso(h, xensim.ISORescue), "")))
		require.Error(t, err)
		assert.Equal(t, workflows.OutcomeRefused, res.Outcome, "%s: result %+v", dom.Name, res)
		assert.Equal(t, activities.ErrGuestPaused, res.ErrorType, "%s: result %+v", dom.Name, res)
		assert.Contains(t, res.Error, "is paused")
		requireUntouched(t, h, dom)
		after := qemuView(t, h, dom)
		assert.True(t, after.inserted, "%s: the medium left the drive", dom.Name)
		assert.Equal(t, before.file, after.file, "%s: the drive's medium changed", dom.Name)
	}
}

// TestPausedMidSwap pauses a stubdom guest while ReleaseFdset's remove-fd is on its way, so
// that QEMU keeps the released fd and the PV disk cannot be detached, and unpauses it 20 s
// later: the change waits (its progress says so) and ends changed or failed-restored, with a
// medium in the drive.
func TestPausedMidSwap(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{
		HostName:   hostName("paused-mid"),
		Domains:    []xensim.DomainSpec{{Kind: xensim.KindStubdom}},
		QEMU:       xensim.QEMUFake,
		AgentDelay: -1,
	})
	dom := domainOf(t, h, xensim.KindStubdom)
	fake := h.QEMU(dom.DomID).Fake()
	w := startWorker(t, h, workerOpts{})
	first, second := iso(h, xensim.ISOTools), iso(h, xensim.ISORescue)
	swapOK(t, h, dom, first, workflows.OutcomeChanged)

	fake.Delay("remove-fd", time.Second)
	ctx := testenv.Context(t, 3*time.Minute)
	run := startSwap(t, ctx, swapInput(h, dom, second, ""))
	waitStepStarted(t, testenv.Context(t, time.Minute), run, w, activities.NameReleaseFdset)
	require.NoError(t, h.SetFault(ctx, dom.Name, xensim.KnobPaused, "true"))
	paused := time.Now()
	fake.Delay("remove-fd", 0)

	sawWaiting := false
	for time.Since(paused) < 20*time.Second {
		v, err := the.client.QueryWorkflow(ctx, run.GetID(), run.GetRunID(), workflows.ProgressQuery)
		if err == nil {
			var p workflows.Progress
			require.NoError(t, v.Get(&p))
			sawWaiting = sawWaiting || p.Waiting == workflows.WaitingUnpause
			require.Empty(t, p.Outcome, "the change ended while the guest was paused: %+v", p)
		}
		time.Sleep(500 * time.Millisecond)
	}
	assert.True(t, sawWaiting, "the change's progress never said it waits for the guest to be unpaused")
	require.NoError(t, h.SetFault(ctx, dom.Name, xensim.KnobPaused, "false"))

	res, err := waitSwap(ctx, run)
	t.Logf("paused mid-swap for 20 s: outcome %s (%v)", res.Outcome, err)
	assert.Contains(t, []workflows.Outcome{workflows.OutcomeChanged, workflows.OutcomeFailedRestored}, res.Outcome, "result %+v", res)
	v := qemuView(t, h, dom)
	assert.True(t, v.inserted, "no medium in the drive after the pause: %+v", v)
	if res.Outcome == workflows.OutcomeChanged {
		checkDrive(t, h, dom, second, first)
	} else {
		checkDrive(t, h, dom, first, second)
	}
	requireReplays(t, run)
}

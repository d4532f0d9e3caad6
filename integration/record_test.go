package integration

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/proto"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// historiesDir is where the workflows package's replay test finds recorded histories.
const historiesDir = "../workflows/testdata/histories"

// Workflow versions, the -v<N> of history file names (see
// workflows/testdata/histories/README.md): the ChangeMedium code a history was recorded
// with, one more for each workflow.GetVersion change. A scenario is written with the version
// that introduced its path.
const (
	// historyV1 is ChangeMedium before any GetVersion change.
	historyV1 = 1
	// historyV2 adds GetVersion "stubdom-reattach-on-fdset-gone": a stubdom's lost fdset
	// cycles the PV disk instead of restoring the old medium.
	historyV2 = 2
	// v3 (no constant: nothing records it any more) was the code of the morning of
	// 2026-12-05, which added GetVersion "validate-input-limits", "cancel-too-late-recorded",
	// "restore-stops-on-device-model-gone", "wait-while-guest-paused" and
	// "local-short-steps" (the short steps as local activities). Every path was recorded
	// with it.

	// v4 (no constant either) recorded version 2 of GetVersion "local-short-steps"
	// (DetachVBD and AttachVBD as local activities too). Every path was recorded with it.

	// v5 (no constant either) recorded version 3 of "local-short-steps" (Eject as a local
	// activity too, Inspect keeping its answer on the host until Unlock). Every path was
	// recorded with it.

	// v6 (no constant either) recorded version 4 of "local-short-steps", which implies
	// "validate-input-limits": a run records no marker of the latter, one GetVersion (a
	// marker and an upsert) fewer. Every path was recorded with it.

	// historyV7 records version 5 of "local-short-steps": a dom0 change's AddFD is a local
	// step too, and a run resumed after its change took records it without ejecting.
	// Every path is recorded with it.
	historyV7 = 7
	// historyNow is the version of today's code, which TestRecordHistoriesEveryPath records.
	historyNow = historyV7
)

// Change ids of v3 to historyV7 (the workflows package's change* constants), but
// "validate-input-limits", which v6 and later no longer record.
const (
	cancelTooLate   = "cancel-too-late-recorded"
	deviceModelGone = "restore-stops-on-device-model-gone"
	waitPaused      = "wait-while-guest-paused"
	localSteps      = "local-short-steps"
)

// stubdomReattach is the change id of historyV2 (workflows' changeStubdomReattach).
const stubdomReattach = "stubdom-reattach-on-fdset-gone"

// rerecordFlag makes a recording run overwrite histories already recorded.
var rerecordFlag = flag.Bool("rerecord", false, "TestRecordHistories: overwrite the histories already recorded too (with -record)")

// recording reports whether this run records histories.
func recording() bool {
	return *recordFlag || os.Getenv("CDSWAP_RECORD_HISTORIES") == "1"
}

// historyPath is the file of a workflow's scenario recorded with workflow version v.
func historyPath(workflowType, scenario string, v int) string {
	return filepath.Join(historiesDir, fmt.Sprintf("%s-%s-v%d.json", workflowType, scenario, v))
}

// skipRecorded skips t when every file in paths exists and -rerecord was not given: a
// history stays as the code of its version recorded it (it stands for the runs of that code
// that may still be in flight), and re-running a scenario costs tens of seconds.
func skipRecorded(t *testing.T, paths ...string) {
	t.Helper()
	if *rerecordFlag {
		return
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			return
		}
	}
	t.Skipf("already recorded (-rerecord overwrites): %v", paths)
}

// writeHistory writes a run's history to historyPath(workflowType, scenario, v) as
// `temporal workflow show -o json` does, which worker.WorkflowReplayer's
// ReplayWorkflowHistoryFromJSONFile and client.HistoryFromJSON read. An existing file is
// kept unless -rerecord was given. It returns the history.
func writeHistory(t testing.TB, run client.WorkflowRun, workflowType, scenario string, v int) *historypb.History {
	t.Helper()
	h, err := fetchHistory(testenv.Context(t, 30*time.Second), run.GetID(), run.GetRunID())
	require.NoError(t, err)
	require.NoError(t, replay(h, workflows.Register), "a history that does not replay is not worth keeping")
	p := historyPath(workflowType, scenario, v)
	if _, err := os.Stat(p); err == nil && !*rerecordFlag {
		t.Logf("kept %s (-rerecord overwrites it)", p)
		return h
	}
	b, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(h)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, append(b, '\n'), 0o644))
	t.Logf("wrote %s (%d events)", p, len(h.GetEvents()))
	return h
}

// TestRecordHistories records one history per path of ChangeMedium (and ResolveDrive) from
// real runs on the dev server and xensim, into workflows/testdata/histories, where
// workflows' TestReplayHistories replays them. It runs only when asked:
//
//	go test ./integration -run TestRecordHistories -count=1 -args -record
//
// (or with CDSWAP_RECORD_HISTORIES=1). Files already there are kept, and a subtest whose
// files all exist skips: they are the runs of their version's code that may still be in
// flight when the code changes. -rerecord (after -args) overwrites them with runs of the
// current code.
//
// ChangeMedium-stubdom-fdset-gone-restored-v1.json, the historyV1 run of the path that
// historyV2 changed, cannot be recorded here: it was recorded with loseFdsetInChangeMedium
// in a worktree of the commit before the change (see the histories' README.md).
func TestRecordHistories(t *testing.T) {
	if !recording() {
		t.Skip("records histories only when asked: go test ./integration -run TestRecordHistories -count=1 -args -record")
	}
	need(t)
	const cm = workflows.ChangeMediumName

	t.Run("stubdom and dom0", func(t *testing.T) {
		t.Parallel()
		var files []string
		for _, sc := range []string{"stubdom-insert", "stubdom-eject", "dom0-insert", "dom0-eject", "refused-traditional"} {
			files = append(files, historyPath(cm, sc, historyV1))
		}
		skipRecorded(t, append(files, historyPath(workflows.ResolveDriveName, "ok", historyV1))...)
		h := startHost(t, xensim.Config{HostName: hostName("rec"), StubdomGuests: 1, Dom0Guests: 1, TradGuests: 1, QEMU: xensim.QEMUFake})
		startWorker(t, h, workerOpts{})
		for _, kind := range []xensim.Kind{xensim.KindStubdom, xensim.KindDom0} {
			dom := domainOf(t, h, kind)
			run, _ := recordSwap(t, h, dom, iso(h, xensim.ISOTools), workflows.OutcomeChanged)
			writeHistory(t, run, cm, string(kind)+"-insert", historyV1)
			run, _ = recordSwap(t, h, dom, "", workflows.OutcomeEjected)
			writeHistory(t, run, cm, string(kind)+"-eject", historyV1)
		}
		run, _ := recordSwap(t, h, domainOf(t, h, xensim.KindTraditional), iso(h, xensim.ISOTools), workflows.OutcomeRefused)
		writeHistory(t, run, cm, "refused-traditional", historyV1)

		ctx := testenv.Context(t, 30*time.Second)
		stub := domainOf(t, h, xensim.KindStubdom)
		in := activities.ResolveDriveInput{Host: h.Name(), Domain: stub.Name, Vdev: stub.Vdev}
		rrun, err := the.client.ExecuteWorkflow(ctx, workflows.ResolveDriveStartOptions(in), workflows.ResolveDriveName, in)
		require.NoError(t, err)
		require.NoError(t, rrun.Get(ctx, nil))
		writeHistory(t, rrun, workflows.ResolveDriveName, "ok", historyV1)
	})
	t.Run("rolled back", func(t *testing.T) {
		t.Parallel()
		skipRecorded(t, historyPath(cm, "fdset-timeout-restored", historyV1))
		h, logs := startHostLogs(t, xensim.Config{HostName: hostName("rec-rollback"), Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}}, QEMU: xensim.QEMUFake, AgentDelay: -1})
		dom := domainOf(t, h, xensim.KindStubdom)
		startWorker(t, h, workerOpts{})
		first := iso(h, xensim.ISOTools)
		swapOK(t, h, dom, first, workflows.OutcomeChanged)
		run, res, err := rollback(t, h, logs, dom, first, iso(h, xensim.ISORescue))
		require.Error(t, err)
		require.Equal(t, workflows.OutcomeFailedRestored, res.Outcome, "result %+v", res)
		writeHistory(t, run, cm, "fdset-timeout-restored", historyV1)
	})
	t.Run("resumed after a crash", func(t *testing.T) {
		t.Parallel()
		skipRecorded(t, historyPath(cm, "worker-crash-resumed", historyV1))
		for _, c := range crashCases {
			if c.step == activities.NameWaitFdset {
				_, run := runCrash(t, c, 1)
				writeHistory(t, run, cm, "worker-crash-resumed", historyV1)
			}
		}
	})
	t.Run("stubdom fdset lost, PV disk cycled", func(t *testing.T) {
		t.Parallel()
		const scenario = "stubdom-fdset-lost-recycled"
		skipRecorded(t, historyPath(cm, scenario, historyV2))
		r := loseFdsetInChangeMedium(t)
		require.NoError(t, r.err, "result %+v", r.res)
		require.Equal(t, workflows.OutcomeChanged, r.res.Outcome, "result %+v", r.res)
		checkDrive(t, r.h, r.dom, r.second, r.first)
		hist := writeHistory(t, r.run, cm, scenario, historyV2)
		require.Equal(t, map[string]workflow.Version{stubdomReattach: 1}, testenv.VersionMarkers(t, hist),
			"the run must have taken the path behind GetVersion %q", stubdomReattach)
	})
}

// TestRecordHistoriesEveryPath records every path of ChangeMedium with today's code
// (historyNow), with the version markers each path must carry, so that the replay test proves
// each of today's GetVersion changes; the files of older versions are kept (the v3 to v6
// files were written by this test before versions 2 to 5 of local-short-steps). It runs
// only when asked, as TestRecordHistories:
//
//	go test ./integration -run 'TestRecordHistories' -count=1 -args -record
func TestRecordHistoriesEveryPath(t *testing.T) {
	if !recording() {
		t.Skip("records histories only when asked: go test ./integration -run TestRecordHistories -count=1 -args -record")
	}
	need(t)
	const cm = workflows.ChangeMediumName
	// every is what every run records: version 5 of local-short-steps, which implies
	// validate-input-limits (since version 4), which a run no longer records.
	every := map[string]workflow.Version{localSteps: 5}
	with := func(extra map[string]workflow.Version) map[string]workflow.Version {
		m := maps.Clone(every)
		maps.Copy(m, extra)
		return m
	}
	write := func(t *testing.T, run client.WorkflowRun, scenario string, markers map[string]workflow.Version) {
		t.Helper()
		hist := writeHistory(t, run, cm, scenario, historyNow)
		require.Equal(t, markers, testenv.VersionMarkers(t, hist), "version markers of %s", scenario)
	}

	t.Run("stubdom and dom0", func(t *testing.T) {
		t.Parallel()
		var files []string
		for _, sc := range []string{"stubdom-insert", "stubdom-eject", "dom0-insert", "dom0-eject", "refused-traditional"} {
			files = append(files, historyPath(cm, sc, historyNow))
		}
		skipRecorded(t, files...)
		h := startHost(t, xensim.Config{HostName: hostName("recnow"), StubdomGuests: 1, Dom0Guests: 1, TradGuests: 1, QEMU: xensim.QEMUFake})
		startWorker(t, h, workerOpts{})
		for _, kind := range []xensim.Kind{xensim.KindStubdom, xensim.KindDom0} {
			dom := domainOf(t, h, kind)
			run, _ := recordSwap(t, h, dom, iso(h, xensim.ISOTools), workflows.OutcomeChanged)
			write(t, run, string(kind)+"-insert", every)
			run, _ = recordSwap(t, h, dom, "", workflows.OutcomeEjected)
			write(t, run, string(kind)+"-eject", every)
		}
		run, _ := recordSwap(t, h, domainOf(t, h, xensim.KindTraditional), iso(h, xensim.ISOTools), workflows.OutcomeRefused)
		write(t, run, "refused-traditional", every)
	})
	t.Run("rolled back", func(t *testing.T) {
		t.Parallel()
		skipRecorded(t, historyPath(cm, "fdset-timeout-restored", historyNow))
		h, logs := startHostLogs(t, xensim.Config{HostName: hostName("recnow-rollback"), Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}}, QEMU: xensim.QEMUFake, AgentDelay: -1})
		dom := domainOf(t, h, xensim.KindStubdom)
		startWorker(t, h, workerOpts{})
		first := iso(h, xensim.ISOTools)
		swapOK(t, h, dom, first, workflows.OutcomeChanged)
		run, res, err := rollback(t, h, logs, dom, first, iso(h, xensim.ISORescue))
		require.Error(t, err)
		require.Equal(t, workflows.OutcomeFailedRestored, res.Outcome, "result %+v", res)
		write(t, run, "fdset-timeout-restored", every)
	})
	for _, c := range []struct {
		step     string
		kind     xensim.Kind
		scenario string
	}{
		{activities.NameWaitFdset, xensim.KindStubdom, "worker-crash-resumed"},
		// Killed in the middle of a run of local steps (ChangeMedium Record Verify Unlock).
		{activities.NameRecord, xensim.KindStubdom, "worker-crash-in-local-steps-resumed"},
		// Killed in a local PV disk step: ReleaseFdset DetachVBD AttachVBD run again.
		{activities.NameAttachVBD, xensim.KindStubdom, "worker-crash-in-local-vbd-resumed"},
		// Killed in the local Eject: Inspect answers from its note, Lock and Eject run again.
		{activities.NameEject, xensim.KindStubdom, "worker-crash-in-local-eject-resumed"},
		// Killed in a dom0 Record, after the change took: Inspect says so (Taken), and only
		// Lock, Record, Verify and Unlock run again.
		{activities.NameRecord, xensim.KindDom0, "worker-crash-after-dom0-change-resumed"},
	} {
		t.Run(c.scenario, func(t *testing.T) {
			t.Parallel()
			skipRecorded(t, historyPath(cm, c.scenario, historyNow))
			i := slices.IndexFunc(crashCases, func(cc crashCase) bool { return cc.step == c.step && cc.kind == c.kind })
			require.GreaterOrEqual(t, i, 0)
			_, run := runCrash(t, crashCases[i], 1)
			hist := writeHistory(t, run, cm, c.scenario, historyNow)
			// The dead worker's monitor may take the stubdom's new fdset with it (QEMU before
			// 9.1), and the run then cycles the PV disk (stubdom-reattach-on-fdset-gone).
			markers := testenv.VersionMarkers(t, hist)
			delete(markers, stubdomReattach)
			require.Equal(t, every, markers, "version markers of %s", c.scenario)
		})
	}
	t.Run("stubdom fdset lost, PV disk cycled", func(t *testing.T) {
		t.Parallel()
		const scenario = "stubdom-fdset-lost-recycled"
		skipRecorded(t, historyPath(cm, scenario, historyNow))
		r := loseFdsetInChangeMedium(t)
		require.NoError(t, r.err, "result %+v", r.res)
		require.Equal(t, workflows.OutcomeChanged, r.res.Outcome, "result %+v", r.res)
		write(t, r.run, scenario, with(map[string]workflow.Version{stubdomReattach: 1}))
	})
	t.Run("device model gone", func(t *testing.T) {
		t.Parallel()
		const scenario = "device-model-gone-restore-failed"
		skipRecorded(t, historyPath(cm, scenario, historyNow))
		h := startHost(t, xensim.Config{HostName: hostName("recnow-dead"), Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}}, QEMU: xensim.QEMUFake, AgentDelay: -1})
		dom := domainOf(t, h, xensim.KindStubdom)
		w := startWorker(t, h, workerOpts{})
		swapOK(t, h, dom, iso(h, xensim.ISOTools), workflows.OutcomeChanged)
		// The QEMU dies while ReleaseFdset's remove-fd is on its way: the drive was touched
		// (ejected), so the run restores, and its first restore round finds QEMU gone.
		h.QEMU(dom.DomID).Fake().Delay("remove-fd", time.Second)
		ctx := testenv.Context(t, 2*time.Minute)
		run := startSwap(t, ctx, swapInput(h, dom, iso(h, xensim.ISORescue), ""))
		waitStepStarted(t, ctx, run, w, activities.NameReleaseFdset)
		require.NoError(t, h.SetFault(ctx, dom.Name, xensim.KnobKillQEMU, "true"))
		res, err := waitSwap(ctx, run)
		require.Error(t, err)
		require.Equal(t, workflows.OutcomeRestoreFailed, res.Outcome, "result %+v", res)
		write(t, run, scenario, with(map[string]workflow.Version{deviceModelGone: 1}))
	})
	t.Run("guest paused mid-swap", func(t *testing.T) {
		t.Parallel()
		const scenario = "guest-paused-waited"
		skipRecorded(t, historyPath(cm, scenario, historyNow))
		h := startHost(t, xensim.Config{HostName: hostName("recnow-paused"), Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}}, QEMU: xensim.QEMUFake, AgentDelay: -1})
		dom := domainOf(t, h, xensim.KindStubdom)
		fake := h.QEMU(dom.DomID).Fake()
		w := startWorker(t, h, workerOpts{})
		first, second := iso(h, xensim.ISOTools), iso(h, xensim.ISORescue)
		swapOK(t, h, dom, first, workflows.OutcomeChanged)
		fake.Delay("remove-fd", time.Second)
		ctx := testenv.Context(t, 2*time.Minute)
		run := startSwap(t, ctx, swapInput(h, dom, second, ""))
		waitStepStarted(t, ctx, run, w, activities.NameReleaseFdset)
		require.NoError(t, h.SetFault(ctx, dom.Name, xensim.KnobPaused, "true"))
		fake.Delay("remove-fd", 0)
		// Long enough for DetachVBD to be refused and the run to wait (its first pause is 2 s).
		time.Sleep(5 * time.Second)
		require.NoError(t, h.SetFault(ctx, dom.Name, xensim.KnobPaused, "false"))
		res, err := waitSwap(ctx, run)
		require.NoError(t, err, "result %+v", res)
		require.Equal(t, workflows.OutcomeChanged, res.Outcome, "result %+v", res)
		checkDrive(t, h, dom, second, first)
		write(t, run, scenario, with(map[string]workflow.Version{waitPaused: 1}))
	})
	t.Run("canceled and restored", func(t *testing.T) {
		t.Parallel()
		const scenario = "canceled-restored"
		skipRecorded(t, historyPath(cm, scenario, historyNow))
		h := startHost(t, xensim.Config{HostName: hostName("recnow-cancel"), Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}}, QEMU: xensim.QEMUFake, AgentDelay: -1})
		dom := domainOf(t, h, xensim.KindStubdom)
		w := startWorker(t, h, workerOpts{})
		first := iso(h, xensim.ISOTools)
		swapOK(t, h, dom, first, workflows.OutcomeChanged)
		ctx := testenv.Context(t, 2*time.Minute)
		require.NoError(t, h.SetFault(ctx, dom.Name, xensim.KnobNeverClose, "true"))
		run := startSwap(t, ctx, swapInput(h, dom, iso(h, xensim.ISORescue), ""))
		waitStepStarted(t, ctx, run, w, activities.NameDetachVBD)
		require.NoError(t, the.client.CancelWorkflow(ctx, run.GetID(), run.GetRunID()))
		require.NoError(t, h.SetFault(ctx, dom.Name, xensim.KnobNeverClose, "false"))
		res, err := waitSwap(ctx, run)
		require.Error(t, err)
		require.Equal(t, workflows.OutcomeCanceled, res.Outcome, "result %+v", res)
		checkDrive(t, h, dom, first, iso(h, xensim.ISORescue))
		write(t, run, scenario, every)
	})
	t.Run("cancel too late", func(t *testing.T) {
		t.Parallel()
		const scenario = "cancel-too-late"
		skipRecorded(t, historyPath(cm, scenario, historyNow))
		run := cancelDuringUnlock(t)
		write(t, run, scenario, with(map[string]workflow.Version{cancelTooLate: 1}))
	})
}

// cancelDuringUnlock runs a change on a fake host (no hold is possible in Unlock on xensim:
// it only closes a lock file) whose Unlock waits until the run's cancellation is in its
// history: the run ends changed, the cancellation too late.
func cancelDuringUnlock(t *testing.T) client.WorkflowRun {
	t.Helper()
	host := hostName("recnow-late")
	fh := &fakehost.Host{Name: host, Kind: activities.KindStubdom}
	ctx := testenv.Context(t, time.Minute)
	var run client.WorkflowRun
	started := make(chan struct{})
	fh.On(activities.NameUnlock, func(actx context.Context, n int, _ any) error {
		if n != 1 {
			return nil
		}
		<-started
		for actx.Err() == nil {
			h, err := fetchHistory(actx, run.GetID(), run.GetRunID())
			if err == nil && countEvents(h, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED) > 0 {
				return nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return actx.Err()
	})
	w := worker.New(the.client, activities.TaskQueue(host), worker.Options{
		Interceptors: []interceptor.WorkerInterceptor{activities.NewHeartbeatInterceptor()},
	})
	workflows.Register(w)
	fh.Register(w)
	require.NoError(t, w.Start())
	t.Cleanup(w.Stop)
	in := workflows.ChangeMediumInput{Host: host, Domain: fakehost.Domain, DomID: fakehost.DomID, Vdev: fakehost.Vdev, Medium: fakehost.NewISO}
	run = startSwap(t, ctx, in)
	close(started)
	// The cancellation is asked for once Unlock runs (the fake's first Unlock call).
	require.Eventually(t, func() bool { return slices.Contains(fh.Names(), activities.NameUnlock) }, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, the.client.CancelWorkflow(ctx, run.GetID(), run.GetRunID()))
	res, err := waitSwap(ctx, run)
	require.NoError(t, err, "result %+v", res)
	require.Equal(t, workflows.OutcomeChanged, res.Outcome)
	require.True(t, res.CancelTooLate, "result %+v", res)
	return run
}

// lostFdsetRun is a run of loseFdsetInChangeMedium.
type lostFdsetRun struct {
	h             *xensim.Host
	dom           xensim.DomainInfo
	first, second string // the media of the first change and of the one that lost its fdset
	run           client.WorkflowRun
	res           workflows.ChangeMediumResult
	err           error
}

// loseFdsetInChangeMedium runs, for real, the path that GetVersion stubdomReattach changed:
// a stubdom insert (over a first one) whose worker is killed (SIGKILL) inside ChangeMedium,
// after WaitFdset saw the stubdom's new fdset and before ChangeMedium looked at it. The
// killed worker's QMP connection was QEMU's last one, and QEMU before 9.1 (as xensim's fake)
// then closes the set's fd, which no medium uses yet: the new worker's ChangeMedium finds the
// set gone and fails with ErrFdsetGone, which is not retried. query-block, ChangeMedium's
// first QMP command, answers holdFor late to hold the step open for the kill (Inspect, Eject
// and Verify send it too and are slowed down, which only costs time).
//
// ChangeMedium of historyV2 then cycles the PV disk and finishes the change; that of
// historyV1 put the old medium back. The run's end is returned as it is, for the caller to
// check.
func loseFdsetInChangeMedium(t *testing.T) lostFdsetRun {
	t.Helper()
	h := startHost(t, xensim.Config{
		HostName:   hostName("rec-fdset-lost"),
		Domains:    []xensim.DomainSpec{{Kind: xensim.KindStubdom}},
		QEMU:       xensim.QEMUFake,
		AgentDelay: -1, // the stubdom adds the fd at once
	})
	r := lostFdsetRun{h: h, dom: domainOf(t, h, xensim.KindStubdom), first: iso(h, xensim.ISOTools), second: iso(h, xensim.ISORescue)}
	fake := h.QEMU(r.dom.DomID).Fake()
	require.NotNil(t, fake)
	w1 := startWorker(t, h, workerOpts{})
	swapOK(t, h, r.dom, r.first, workflows.OutcomeChanged)

	fake.Delay("query-block", holdFor)
	ctx := testenv.Context(t, 2*time.Minute)
	r.run = startSwap(t, ctx, swapInput(h, r.dom, r.second, ""))
	waitStepStarted(t, ctx, r.run, w1, activities.NameChangeMedium)
	w1.kill()
	fake.Delay("query-block", 0)
	startWorker(t, h, workerOpts{})
	r.res, r.err = waitSwap(ctx, r.run)
	t.Logf("outcome %s (error %v); fdsets at the end %+v", r.res.Outcome, r.err, fake.Fdsets())
	require.True(t, slices.ContainsFunc(r.res.Steps, func(s workflows.StepRecord) bool {
		return s.Name == activities.NameChangeMedium && !s.Restore && s.ErrorType == activities.ErrFdsetGone
	}), "ChangeMedium did not fail with %s after the kill: steps %+v", activities.ErrFdsetGone, r.res.Steps)
	return r
}

// recordSwap runs a change to the end, requiring outcome want (a refusal is an error).
func recordSwap(t testing.TB, h *xensim.Host, dom xensim.DomainInfo, medium string, want workflows.Outcome) (client.WorkflowRun, workflows.ChangeMediumResult) {
	t.Helper()
	ctx := testenv.Context(t, 90*time.Second)
	run := startSwap(t, ctx, swapInput(h, dom, medium, ""))
	res, err := waitSwap(ctx, run)
	if want != workflows.OutcomeRefused {
		require.NoError(t, err, "result %+v", res)
	}
	require.Equal(t, want, res.Outcome, "result %+v (error %v)", res, err)
	return run, res
}

// extraStep is a worker interceptor that changes ChangeMedium the way a careless edit
// would: one more activity (a Verify) before the first Eject, with no workflow.GetVersion.
type extraStep struct {
	interceptor.WorkerInterceptorBase
}

func (*extraStep) InterceptWorkflow(_ workflow.Context, next interceptor.WorkflowInboundInterceptor) interceptor.WorkflowInboundInterceptor {
	in := &extraStepInbound{}
	in.Next = next
	return in
}

type extraStepInbound struct {
	interceptor.WorkflowInboundInterceptorBase
}

func (i *extraStepInbound) Init(outbound interceptor.WorkflowOutboundInterceptor) error {
	out := &extraStepOutbound{}
	out.Next = outbound
	return i.Next.Init(out)
}

type extraStepOutbound struct {
	interceptor.WorkflowOutboundInterceptorBase
	added bool
}

func (o *extraStepOutbound) ExecuteActivity(ctx workflow.Context, activityType string, args ...any) workflow.Future {
	if activityType == activities.NameEject && !o.added {
		o.added = true
		var drive activities.Drive
		if len(args) == 1 {
			if in, ok := args[0].(activities.EjectInput); ok {
				drive = in.Drive
			}
		}
		o.Next.ExecuteActivity(ctx, activities.NameVerify, activities.VerifyInput{Drive: drive})
	}
	return o.Next.ExecuteActivity(ctx, activityType, args...)
}

// ExecuteLocalActivity adds the same extra step where Eject runs as a local activity.
// (Go's replayer does not notice an extra local activity, sdk-go#983, so the extra step is
// a regular activity: a command where the history has a LocalActivity marker.)
func (o *extraStepOutbound) ExecuteLocalActivity(ctx workflow.Context, activityType string, args ...any) workflow.Future {
	if activityType == activities.NameEject && !o.added {
		o.added = true
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
		o.Next.ExecuteActivity(actx, activities.NameVerify, activities.VerifyInput{})
	}
	return o.Next.ExecuteLocalActivity(ctx, activityType, args...)
}

// schedules reports whether h runs an activity of type step, regular or local.
func schedules(h *historypb.History, step string) bool {
	for _, e := range h.GetEvents() {
		if e.GetEventType() == enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED &&
			e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == step {
			return true
		}
		if m := e.GetMarkerRecordedEventAttributes(); m != nil && m.GetMarkerName() == "LocalActivity" {
			var d struct{ ActivityType string }
			if ps := m.GetDetails()["data"].GetPayloads(); len(ps) > 0 &&
				converter.GetDefaultDataConverter().FromPayload(ps[0], &d) == nil && d.ActivityType == step {
				return true
			}
		}
	}
	return false
}

// TestChangedWorkflowFailsReplay replays the recorded ChangeMedium histories against a
// deliberately changed ChangeMedium (an extra activity before Eject, registered under the
// same name): every history that reached Eject must fail with a non-determinism error, so
// the replay test would catch such a change. With no recorded history (before the first
// -record run; a failure under CI), it records one stubdom insert live.
func TestChangedWorkflowFailsReplay(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(historiesDir, workflows.ChangeMediumName+"-*.json"))
	require.NoError(t, err)
	hists := map[string]*historypb.History{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		h, err := client.HistoryFromJSON(bytes.NewReader(b), client.HistoryJSONOptions{})
		require.NoError(t, err, "decode %s", f)
		if schedules(h, activities.NameEject) {
			hists[filepath.Base(f)] = h
		}
	}
	if len(hists) == 0 {
		if testenv.InCI() {
			t.Fatalf("no recorded ChangeMedium history that reaches Eject in %s: record them (go test ./integration -run TestRecordHistories -count=1 -args -record)", historiesDir)
		}
		need(t)
		h := startHost(t, xensim.Config{HostName: hostName("nde"), Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}}, QEMU: xensim.QEMUFake})
		startWorker(t, h, workerOpts{})
		run, _ := recordSwap(t, h, domainOf(t, h, xensim.KindStubdom), iso(h, xensim.ISOTools), workflows.OutcomeChanged)
		hist, err := fetchHistory(testenv.Context(t, 30*time.Second), run.GetID(), run.GetRunID())
		require.NoError(t, err)
		hists["live stubdom insert"] = hist
	}
	for name, h := range hists {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, replay(h, workflows.Register), "the unchanged workflow must replay %s", name)
			r, err := worker.NewWorkflowReplayerWithOptions(worker.WorkflowReplayerOptions{
				Interceptors: []interceptor.WorkerInterceptor{&extraStep{}},
			})
			require.NoError(t, err)
			workflows.Register(r)
			err = r.ReplayWorkflowHistory(quietLogger, proto.Clone(h).(*historypb.History))
			require.Error(t, err, "a ChangeMedium with an extra step before Eject replayed %s cleanly", name)
			// TMPRL1100 is the SDK's code for every non-determinism it detects: "nondeterministic
			// workflow: ..." when a command does not match its event, or an illegal state such
			// as "lookup failed for scheduledEventID to activityID" when, as here, the extra
			// command shifts the activity ids.
			assert.Contains(t, err.Error(), "TMPRL1100", "replay error %v", err)
		})
	}
}

package integration

import (
	"bytes"
	"flag"
	"fmt"
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
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/proto"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv"
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

// schedules reports whether h schedules an activity of type step.
func schedules(h *historypb.History, step string) bool {
	for _, e := range h.GetEvents() {
		if e.GetEventType() == enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED &&
			e.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == step {
			return true
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

package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
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
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// historiesDir is where the workflows package's replay test finds recorded histories.
const historiesDir = "../workflows/testdata/histories"

// historyVersion is the version of the workflow code the histories are recorded with (the
// -v<N> of the file names; see workflows/testdata/histories/README.md).
const historyVersion = 1

// recording reports whether this run records histories.
func recording() bool {
	return *recordFlag || os.Getenv("CDSWAP_RECORD_HISTORIES") == "1"
}

// writeHistory writes a run's history as `temporal workflow show -o json` does, which
// worker.WorkflowReplayer's ReplayWorkflowHistoryFromJSONFile and client.HistoryFromJSON
// read.
func writeHistory(t testing.TB, run client.WorkflowRun, workflowType, scenario string) {
	t.Helper()
	h, err := fetchHistory(testCtx(t, 30*time.Second), run.GetID(), run.GetRunID())
	require.NoError(t, err)
	require.NoError(t, replay(h, workflows.Register), "a history that does not replay is not worth keeping")
	b, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(h)
	require.NoError(t, err)
	p := filepath.Join(historiesDir, fmt.Sprintf("%s-%s-v%d.json", workflowType, scenario, historyVersion))
	require.NoError(t, os.WriteFile(p, append(b, '\n'), 0o644))
	t.Logf("wrote %s (%d events)", p, len(h.GetEvents()))
}

// TestRecordHistories records one history per path of ChangeMedium (and ResolveDrive) from
// real runs on the dev server and xensim, into workflows/testdata/histories, where
// workflows' TestReplayHistories replays them. It runs only when asked:
//
//	go test ./integration -run TestRecordHistories -count=1 -args -record
//
// (or with CDSWAP_RECORD_HISTORIES=1). Keep older files: they are the runs that may still be
// in flight when the code changes.
func TestRecordHistories(t *testing.T) {
	if !recording() {
		t.Skip("records histories only when asked: go test ./integration -run TestRecordHistories -count=1 -args -record")
	}
	need(t)
	const cm = workflows.ChangeMediumName

	t.Run("stubdom and dom0", func(t *testing.T) {
		t.Parallel()
		h := startHost(t, xensim.Config{HostName: hostName("rec"), StubdomGuests: 1, Dom0Guests: 1, TradGuests: 1, QEMU: xensim.QEMUFake})
		startWorker(t, h, workerOpts{})
		for _, kind := range []xensim.Kind{xensim.KindStubdom, xensim.KindDom0} {
			dom := domainOf(t, h, kind)
			run, _ := recordSwap(t, h, dom, iso(h, xensim.ISOTools), workflows.OutcomeChanged)
			writeHistory(t, run, cm, string(kind)+"-insert")
			run, _ = recordSwap(t, h, dom, "", workflows.OutcomeEjected)
			writeHistory(t, run, cm, string(kind)+"-eject")
		}
		run, _ := recordSwap(t, h, domainOf(t, h, xensim.KindTraditional), iso(h, xensim.ISOTools), workflows.OutcomeRefused)
		writeHistory(t, run, cm, "refused-traditional")

		ctx := testCtx(t, 30*time.Second)
		stub := domainOf(t, h, xensim.KindStubdom)
		in := workflows.ResolveDriveInput{Host: h.Name(), Domain: stub.Name, Vdev: stub.Vdev}
		rrun, err := the.client.ExecuteWorkflow(ctx, workflows.ResolveDriveStartOptions(in), workflows.ResolveDriveName, in)
		require.NoError(t, err)
		require.NoError(t, rrun.Get(ctx, nil))
		writeHistory(t, rrun, workflows.ResolveDriveName, "ok")
	})
	t.Run("rolled back", func(t *testing.T) {
		t.Parallel()
		h, logs := startHostLogs(t, xensim.Config{HostName: hostName("rec-rollback"), Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}}, QEMU: xensim.QEMUFake, AgentDelay: -1})
		dom := domainOf(t, h, xensim.KindStubdom)
		startWorker(t, h, workerOpts{})
		first := iso(h, xensim.ISOTools)
		swapOK(t, h, dom, first, workflows.OutcomeChanged)
		run, res, err := rollback(t, h, logs, dom, first, iso(h, xensim.ISORescue))
		require.Error(t, err)
		require.Equal(t, workflows.OutcomeFailedRestored, res.Outcome, "result %+v", res)
		writeHistory(t, run, cm, "fdset-timeout-restored")
	})
	t.Run("resumed after a crash", func(t *testing.T) {
		t.Parallel()
		for _, c := range crashCases {
			if c.step == activities.NameWaitFdset {
				run := runCrash(t, c)
				writeHistory(t, run, cm, "worker-crash-resumed")
			}
		}
	})
}

// recordSwap runs a change to the end, requiring outcome want (a refusal is an error).
func recordSwap(t testing.TB, h *xensim.Host, dom xensim.DomainInfo, medium string, want workflows.Outcome) (client.WorkflowRun, workflows.ChangeMediumResult) {
	t.Helper()
	ctx := testCtx(t, 90*time.Second)
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
		if os.Getenv("CI") == "true" {
			t.Fatalf("no recorded ChangeMedium history that reaches Eject in %s: record them (go test ./integration -run TestRecordHistories -count=1 -args -record)", historiesDir)
		}
		need(t)
		h := startHost(t, xensim.Config{HostName: hostName("nde"), Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}}, QEMU: xensim.QEMUFake})
		startWorker(t, h, workerOpts{})
		run, _ := recordSwap(t, h, domainOf(t, h, xensim.KindStubdom), iso(h, xensim.ISOTools), workflows.OutcomeChanged)
		hist, err := fetchHistory(testCtx(t, 30*time.Second), run.GetID(), run.GetRunID())
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

package workflows_test

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/temporalproto"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/workflows"
)

// historiesDir holds histories recorded from a real server, one JSON file per scenario
// (`temporal workflow show -w <id> -o json > testdata/histories/<scenario>.json`, or gzipped
// as .json.gz); see its README.md.
const historiesDir = "testdata/histories"

// TestReplayHistories replays every recorded history against the current workflow code: a
// change that would break runs in flight (a non-determinism) fails here.
func TestReplayHistories(t *testing.T) {
	var files []string
	for _, pattern := range []string{"*.json", "*.json.gz"} {
		m, err := filepath.Glob(filepath.Join(historiesDir, pattern))
		require.NoError(t, err)
		files = append(files, m...)
	}
	if len(files) == 0 {
		testenv.Unavailable(t, "no recorded histories in %s/*.json: record them from the dev server (see %s/README.md)", historiesDir, historiesDir)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if err := replayFile(f, registerAll); err != nil {
				t.Errorf("replay %s: %v", f, err)
			}
		})
	}
}

// registerAll registers every workflow a worker runs: the host's and the batch's.
func registerAll(r workflows.Registry) {
	workflows.Register(r)
	workflows.RegisterInventory(r)
	workflows.RegisterFleet(r)
}

// replayFile replays the history in path (JSON, gzipped if it ends in .gz) with the
// workflows register registers.
func replayFile(path string, register func(workflows.Registry)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return fmt.Errorf("gunzip %s: %w", path, err)
		}
		defer gz.Close()
		r = gz
	}
	h, err := client.HistoryFromJSON(r, client.HistoryJSONOptions{})
	if err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	if len(h.GetEvents()) == 0 {
		return fmt.Errorf("%s holds no events", path)
	}
	replayer := worker.NewWorkflowReplayer()
	register(replayer)
	return replayer.ReplayWorkflowHistory(nil, h)
}

// TestReplayHarness checks the harness itself on a synthetic ResolveDrive history: it
// replays cleanly against the real workflow, and fails against a workflow that would issue
// another command.
func TestReplayHarness(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolve.json")
	require.NoError(t, os.WriteFile(path, resolveHistoryJSON(t), 0o644))

	require.NoError(t, replayFile(path, workflows.Register))

	changed := func(ctx workflow.Context, in activities.ResolveDriveInput) (activities.ResolveDriveResult, error) {
		var a *activities.Activities
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Second})
		var out activities.InspectResult
		err := workflow.ExecuteActivity(ctx, a.Inspect, activities.InspectInput{Host: in.Host}).Get(ctx, &out)
		return activities.ResolveDriveResult{}, err
	}
	err := replayFile(path, func(r workflows.Registry) {
		r.RegisterWorkflowWithOptions(changed, workflow.RegisterOptions{Name: workflows.ResolveDriveName})
	})
	require.Error(t, err, "a workflow scheduling Inspect instead of ResolveDrive replayed cleanly")
	require.Contains(t, err.Error(), "nondeterministic")
}

// resolveHistoryJSON builds the history of a ResolveDrive run whose activity succeeded, in
// the JSON form `temporal workflow show -o json` writes.
func resolveHistoryJSON(t *testing.T) []byte {
	t.Helper()
	dc := converter.GetDefaultDataConverter()
	payloads := func(v any) *commonpb.Payloads {
		p, err := dc.ToPayloads(v)
		require.NoError(t, err)
		return p
	}
	in := activities.ResolveDriveInput{Host: testHost, Domain: testDomain, Vdev: testVdev}
	tq := &taskqueuepb.TaskQueue{Name: activities.TaskQueue(testHost), Kind: enumspb.TASK_QUEUE_KIND_NORMAL}
	start := time.Date(2026, 11, 28, 1, 0, 0, 0, time.UTC)
	var events []*historypb.HistoryEvent
	add := func(typ enumspb.EventType, set func(*historypb.HistoryEvent)) int64 {
		e := &historypb.HistoryEvent{
			EventId:   int64(len(events) + 1),
			EventTime: timestamppb.New(start.Add(time.Duration(len(events)) * time.Millisecond)),
			EventType: typ,
		}
		set(e)
		events = append(events, e)
		return e.EventId
	}
	workflowTask := func() int64 {
		sched := add(enumspb.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, func(e *historypb.HistoryEvent) {
			e.Attributes = &historypb.HistoryEvent_WorkflowTaskScheduledEventAttributes{WorkflowTaskScheduledEventAttributes: &historypb.WorkflowTaskScheduledEventAttributes{
				TaskQueue: tq, StartToCloseTimeout: durationpb.New(10 * time.Second), Attempt: 1,
			}}
		})
		started := add(enumspb.EVENT_TYPE_WORKFLOW_TASK_STARTED, func(e *historypb.HistoryEvent) {
			e.Attributes = &historypb.HistoryEvent_WorkflowTaskStartedEventAttributes{WorkflowTaskStartedEventAttributes: &historypb.WorkflowTaskStartedEventAttributes{
				ScheduledEventId: sched, Identity: "test", RequestId: fmt.Sprint("req-", sched),
			}}
		})
		return add(enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, func(e *historypb.HistoryEvent) {
			e.Attributes = &historypb.HistoryEvent_WorkflowTaskCompletedEventAttributes{WorkflowTaskCompletedEventAttributes: &historypb.WorkflowTaskCompletedEventAttributes{
				ScheduledEventId: sched, StartedEventId: started, Identity: "test",
			}}
		})
	}

	add(enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, func(e *historypb.HistoryEvent) {
		e.Attributes = &historypb.HistoryEvent_WorkflowExecutionStartedEventAttributes{WorkflowExecutionStartedEventAttributes: &historypb.WorkflowExecutionStartedEventAttributes{
			WorkflowType:             &commonpb.WorkflowType{Name: workflows.ResolveDriveName},
			TaskQueue:                tq,
			Input:                    payloads(in),
			WorkflowExecutionTimeout: durationpb.New(workflows.ResolveDriveTimeout),
			WorkflowRunTimeout:       durationpb.New(workflows.ResolveDriveTimeout),
			WorkflowTaskTimeout:      durationpb.New(10 * time.Second),
			OriginalExecutionRunId:   "run-1",
			FirstExecutionRunId:      "run-1",
			Attempt:                  1,
			Identity:                 "test",
		}}
	})
	completed := workflowTask()
	sched := add(enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, func(e *historypb.HistoryEvent) {
		e.Attributes = &historypb.HistoryEvent_ActivityTaskScheduledEventAttributes{ActivityTaskScheduledEventAttributes: &historypb.ActivityTaskScheduledEventAttributes{
			ActivityId:                   fmt.Sprint(completed + 1),
			ActivityType:                 &commonpb.ActivityType{Name: activities.NameResolveDrive},
			TaskQueue:                    tq,
			Input:                        payloads(activities.ResolveDriveInput{Host: in.Host, Domain: in.Domain, Vdev: in.Vdev}),
			ScheduleToStartTimeout:       durationpb.New(5 * time.Second),
			StartToCloseTimeout:          durationpb.New(10 * time.Second),
			WorkflowTaskCompletedEventId: completed,
		}}
	})
	started := add(enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED, func(e *historypb.HistoryEvent) {
		e.Attributes = &historypb.HistoryEvent_ActivityTaskStartedEventAttributes{ActivityTaskStartedEventAttributes: &historypb.ActivityTaskStartedEventAttributes{
			ScheduledEventId: sched, Identity: "test", Attempt: 1,
		}}
	})
	result := activities.ResolveDriveResult{Meta: activities.Meta{Attempt: 1}, DomID: testDomID, Name: testDomain, DevID: testDevID, Kind: activities.KindStubdom}
	add(enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, func(e *historypb.HistoryEvent) {
		e.Attributes = &historypb.HistoryEvent_ActivityTaskCompletedEventAttributes{ActivityTaskCompletedEventAttributes: &historypb.ActivityTaskCompletedEventAttributes{
			Result: payloads(result), ScheduledEventId: sched, StartedEventId: started, Identity: "test",
		}}
	})
	completed = workflowTask()
	add(enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, func(e *historypb.HistoryEvent) {
		e.Attributes = &historypb.HistoryEvent_WorkflowExecutionCompletedEventAttributes{WorkflowExecutionCompletedEventAttributes: &historypb.WorkflowExecutionCompletedEventAttributes{
			Result:                       payloads(result),
			WorkflowTaskCompletedEventId: completed,
		}}
	})
	b, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(&historypb.History{Events: events})
	require.NoError(t, err)
	return b
}

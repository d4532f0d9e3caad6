package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/workflows"
)

// HistorySchema names the format of the JSON document of `cdswap history --json`. Fields are
// only ever added to it; a field that changed meaning or went away would get a new name.
const HistorySchema = "cdswap.history/v1"

// History is one swap as its event history tells it: what was asked, by whom and why, each
// step with its attempts, times and failures, and how it ended. `cdswap history` prints it
// for a person (WriteHistoryText) or as JSON (WriteHistoryJSON).
type History struct {
	// Schema is HistorySchema.
	Schema string `json:"schema"`
	// WorkflowID and RunID name the run.
	WorkflowID string `json:"workflow_id"`
	RunID      string `json:"run_id"`
	// WorkflowType is "ChangeMedium" (or "ResolveDrive").
	WorkflowType string `json:"workflow_type"`
	// TaskQueue is the host's task queue the run was started on.
	TaskQueue string `json:"task_queue"`
	// Status is running, completed, failed, canceled, terminated, timed-out or
	// continued-as-new.
	Status string `json:"status"`
	// Outcome is the swap's outcome (changed, ejected, unchanged, refused, failed,
	// failed-restored, restore-failed, canceled), "running" while it runs, or the status
	// when the run ended without a result (terminated, timed-out).
	Outcome string `json:"outcome"`
	// Request is what was asked (the run's input).
	Request Request `json:"request"`
	// Audit says who asked and why (the run's memo) and which client started it.
	Audit Audit `json:"audit"`
	// Started and Ended are the run's start and close times; Ended is nil while it runs.
	Started time.Time  `json:"started"`
	Ended   *time.Time `json:"ended,omitempty"`
	// DurationMS is Ended-Started, or the time so far while it runs, in milliseconds.
	DurationMS float64 `json:"duration_ms"`
	// Steps are the run's activities and timers, in the order they were scheduled.
	Steps []Step `json:"steps"`
	// CancelRequested is set if someone asked to cancel the run.
	CancelRequested *CancelRequest `json:"cancel_requested,omitempty"`
	// Old and New are the medium the drive held before and the one asked for ("" = empty),
	// as the run's result says (after it ended).
	Old string `json:"old_medium,omitempty"`
	New string `json:"new_medium,omitempty"`
	// Error is why the run failed, nil if it did not.
	Error *Failure `json:"error,omitempty"`
	// Action is what a person must do after a failed restore.
	Action string `json:"action,omitempty"`
	// Archived is set when the run had left the namespace's primary store and was read
	// from Temporal's archive.
	Archived bool `json:"archived,omitempty"`
}

// Request is the input of a swap.
type Request struct {
	Host   string `json:"host"`
	Domain string `json:"domain"`
	DomID  uint32 `json:"domid,omitempty"`
	Vdev   string `json:"vdev"`
	// Medium is "" for an eject.
	Medium string `json:"medium"`
	Format string `json:"format,omitempty"`
	Force  bool   `json:"force"`
}

// Audit is who asked for a swap and why.
type Audit struct {
	// Requester, Reason and Ticket come from the run's memo.
	Requester string `json:"requester"`
	Reason    string `json:"reason"`
	Ticket    string `json:"ticket"`
	// StartedBy is the identity of the client that started the run.
	StartedBy string `json:"started_by"`
}

// CancelRequest is a request to cancel a run.
type CancelRequest struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`
	Reason string    `json:"reason"`
}

// Failure is an error as the history holds it.
type Failure struct {
	// Type is the application error type (activities.ErrFdsetTimeout...), or the kind of
	// failure (Timeout, Canceled...).
	Type    string `json:"type"`
	Message string `json:"message"`
	// Cause is the type of the activity error that decided a workflow failure.
	Cause string `json:"cause,omitempty"`
}

// AttemptFailure is how one attempt of a step failed.
type AttemptFailure struct {
	// Attempt is the attempt's number (1 = first try).
	Attempt int32 `json:"attempt"`
	Failure
}

// Step kinds.
const (
	StepActivity = "activity"
	StepTimer    = "timer"
	// StepWorkerLost is a workflow task that timed out: its worker took it and never
	// answered (it died, or hung), or no worker took it from the last worker's queue in
	// time. Nothing of what that worker did since the run's last completed workflow task is
	// in the history, so the local steps it ran are run again by the next worker.
	StepWorkerLost = "worker-lost"
)

// Step statuses.
const (
	StepOK        = "ok"
	StepFailed    = "failed"
	StepTimedOut  = "timed-out"
	StepCanceled  = "canceled"
	StepRunning   = "running"   // an attempt runs now
	StepRetrying  = "retrying"  // waiting for its next attempt, or for a worker
	StepScheduled = "scheduled" // no attempt picked up yet
	StepFired     = "fired"     // a timer that ran out
)

// Step is one activity (with all its attempts) or one timer of a run.
type Step struct {
	// Seq numbers the steps from 1.
	Seq int `json:"seq"`
	// Kind is StepActivity, StepTimer or StepWorkerLost.
	Kind string `json:"kind"`
	// Name is the activity type, "wait" for a timer, or "worker lost".
	Name string `json:"name"`
	// ActivityID is the activity's id in the run.
	ActivityID string `json:"activity_id,omitempty"`
	// Local marks a step run as a local activity: the history holds only its end (a
	// LocalActivity marker, written with the workflow task that ran it), so its start, end
	// and detail come from the run's step records once the run ended, and its attempts
	// from the marker.
	Local bool `json:"local,omitempty"`
	// Restore marks the steps that put the old medium back (known once the run ended, or
	// from its progress query while it runs).
	Restore bool `json:"restore"`
	// Detail is what the step was asked ("force", "fdset 10"), or a timer's duration.
	Detail string `json:"detail,omitempty"`
	// Status is one of the Step* statuses.
	Status string `json:"status"`
	// Attempts is how many attempts were made (the running one included).
	Attempts int32 `json:"attempts"`
	// Scheduled is when the step was scheduled; LastStarted when its last attempt began;
	// Ended when it closed (nil while open).
	Scheduled   time.Time  `json:"scheduled"`
	LastStarted *time.Time `json:"last_attempt_started,omitempty"`
	Ended       *time.Time `json:"ended,omitempty"`
	// DurationMS is Ended-Scheduled in milliseconds, retries included (0 while open).
	DurationMS float64 `json:"duration_ms"`
	// Worker is the identity of the worker that ran the last attempt.
	Worker string `json:"worker,omitempty"`
	// Failures are the failures Temporal keeps: the attempt before the last one, and the
	// last one's if the step failed. Earlier retries leave no trace in a history.
	Failures []AttemptFailure `json:"failures,omitempty"`
}

// HistoryExtras is what an event history alone does not say about a run.
type HistoryExtras struct {
	// WorkflowID and RunID name the run, when the started event does not.
	WorkflowID, RunID string
	// Pending are DescribeWorkflowExecution's pending activities: the attempt and last
	// failure of a step still being retried, which the history writes only when it closes.
	Pending []*workflowpb.PendingActivityInfo
	// Progress is the answer of a running ChangeMedium's progress query, nil if none: it
	// marks the steps of a restore before the run ends.
	Progress *workflows.Progress
	// Now is the time to measure an open run against (zero = time.Now()).
	Now time.Time
}

// FetchHistory reads one run's event history (runID "" = the latest run of id) and builds
// its History, asking a running run's worker for its progress (if one answers in time). A
// run no longer in the primary store is read from the namespace's archive, if it has one.
func FetchHistory(ctx context.Context, c client.Client, id, runID string) (*History, error) {
	desc, err := describe(ctx, c, id, runID)
	if err != nil {
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			if h, found, aerr := fetchArchivedHistory(ctx, c, id, runID); found {
				return h, aerr
			}
		}
		return nil, err
	}
	info := desc.GetWorkflowExecutionInfo()
	extras := HistoryExtras{WorkflowID: id, RunID: info.GetExecution().GetRunId(), Pending: desc.GetPendingActivities()}
	if info.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING && info.GetType().GetName() == workflows.ChangeMediumName {
		if p, err := queryProgress(ctx, c, id, extras.RunID); err == nil {
			extras.Progress = &p
		}
	}
	events, err := readEvents(ctx, c, id, extras.RunID)
	if err != nil {
		return nil, err
	}
	return BuildHistory(events, extras)
}

// readEvents reads every event of one run, in order.
func readEvents(ctx context.Context, c client.Client, id, runID string) ([]*historypb.HistoryEvent, error) {
	var events []*historypb.HistoryEvent
	it := c.GetWorkflowHistory(ctx, id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("read the history of %s: %w", id, err)
		}
		events = append(events, ev)
	}
	return events, nil
}

// BuildHistory builds a History from the events of one run, in order.
func BuildHistory(events []*historypb.HistoryEvent, extras HistoryExtras) (*History, error) {
	if len(events) == 0 || events[0].GetEventType() != enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED {
		return nil, errors.New("not a workflow history: it does not begin with WorkflowExecutionStarted")
	}
	b := historyBuilder{
		h:       &History{Schema: HistorySchema, Status: "running", Steps: []Step{}},
		bySched: map[int64]int{},
		byTimer: map[string]int{},
	}
	for _, ev := range events {
		b.add(ev)
	}
	b.finish(extras)
	return b.h, nil
}

// historyBuilder folds the events of a run, one at a time, into a History.
type historyBuilder struct {
	h *History
	// result is the run's ChangeMediumResult, once the run closed with one.
	result *workflows.ChangeMediumResult
	// bySched finds an activity's step by the id of its scheduled event, byTimer a timer's
	// step by the timer's id: the later events of a step name it that way.
	bySched map[int64]int
	byTimer map[string]int
	// taskWorker is the identity of the worker that started the last workflow task: the one
	// that ran the local activities whose markers follow; taskStarted is when it started it.
	taskWorker  string
	taskStarted time.Time
}

// add folds in one event. Events of other types (workflow tasks, markers, signals) show
// nothing a History has.
func (b *historyBuilder) add(ev *historypb.HistoryEvent) {
	h, at := b.h, ev.GetEventTime().AsTime()
	switch ev.GetEventType() {
	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
		b.started(ev.GetWorkflowExecutionStartedEventAttributes(), at)

	case enumspb.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
		a := ev.GetActivityTaskScheduledEventAttributes()
		b.bySched[ev.GetEventId()] = len(h.Steps)
		h.Steps = append(h.Steps, Step{Kind: StepActivity, Name: a.GetActivityType().GetName(),
			ActivityID: a.GetActivityId(), Status: StepScheduled, Scheduled: at})
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_STARTED:
		b.attemptStarted(ev.GetActivityTaskStartedEventAttributes(), at)
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
		a := ev.GetActivityTaskCompletedEventAttributes()
		b.closeStep(a.GetScheduledEventId(), StepOK, at, nil)
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_FAILED:
		a := ev.GetActivityTaskFailedEventAttributes()
		b.closeStep(a.GetScheduledEventId(), StepFailed, at, a.GetFailure())
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
		a := ev.GetActivityTaskTimedOutEventAttributes()
		b.closeStep(a.GetScheduledEventId(), StepTimedOut, at, a.GetFailure())
	case enumspb.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
		a := ev.GetActivityTaskCanceledEventAttributes()
		b.closeStep(a.GetScheduledEventId(), StepCanceled, at, nil)

	case enumspb.EVENT_TYPE_TIMER_STARTED:
		a := ev.GetTimerStartedEventAttributes()
		b.byTimer[a.GetTimerId()] = len(h.Steps)
		h.Steps = append(h.Steps, Step{Kind: StepTimer, Name: "wait", Status: StepRunning, Scheduled: at,
			Detail: formatDuration(a.GetStartToFireTimeout().AsDuration())})
	case enumspb.EVENT_TYPE_TIMER_FIRED:
		if i, ok := b.byTimer[ev.GetTimerFiredEventAttributes().GetTimerId()]; ok {
			endStep(&h.Steps[i], StepFired, at)
		}
	case enumspb.EVENT_TYPE_TIMER_CANCELED:
		if i, ok := b.byTimer[ev.GetTimerCanceledEventAttributes().GetTimerId()]; ok {
			endStep(&h.Steps[i], StepCanceled, at)
		}

	case enumspb.EVENT_TYPE_WORKFLOW_TASK_STARTED:
		b.taskWorker, b.taskStarted = ev.GetWorkflowTaskStartedEventAttributes().GetIdentity(), at
	case enumspb.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
		b.workerLost(ev.GetWorkflowTaskTimedOutEventAttributes(), at)
	case enumspb.EVENT_TYPE_MARKER_RECORDED:
		b.marker(ev.GetMarkerRecordedEventAttributes(), at)

	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
		a := ev.GetWorkflowExecutionCancelRequestedEventAttributes()
		h.CancelRequested = &CancelRequest{At: at, By: a.GetIdentity(), Reason: a.GetCause()}

	default:
		b.closed(ev, at)
	}
}

// localActivityMarker is the SDK's name of the marker that records a local activity, and
// localActivityData the "data" detail it carries (go.temporal.io/sdk internal
// localActivityMarkerData; its JSON field names are the SDK's Go field names).
const localActivityMarker = "LocalActivity"

type localActivityData struct {
	ActivityID   string
	ActivityType string
	// ReplayTime is the workflow's time when the local activity ended.
	ReplayTime time.Time
	// Attempt is the attempt that ended it, from 1.
	Attempt int32
	// Backoff is set when the local activity failed and is retried after a timer.
	Backoff time.Duration
}

// marker folds in a LocalActivity marker as one step, ended when the local activity ended;
// other markers (GetVersion's) are not steps.
func (b *historyBuilder) marker(a *historypb.MarkerRecordedEventAttributes, at time.Time) {
	if a.GetMarkerName() != localActivityMarker {
		return
	}
	var d localActivityData
	if ps := a.GetDetails()["data"]; len(ps.GetPayloads()) == 0 ||
		converter.GetDefaultDataConverter().FromPayload(ps.GetPayloads()[0], &d) != nil {
		return
	}
	end := d.ReplayTime
	if end.IsZero() {
		end = at
	}
	s := Step{Kind: StepActivity, Name: d.ActivityType, ActivityID: d.ActivityID, Local: true,
		Scheduled: end, Attempts: max(d.Attempt, 1), Worker: b.taskWorker}
	status := StepOK
	if f := a.GetFailure(); f != nil {
		switch failureType(f) {
		case "Canceled":
			status = StepCanceled
		case "Timeout":
			status = StepTimedOut
		default:
			status = StepFailed
		}
		s.Failures = append(s.Failures, attemptFailure(f, s.Attempts))
	}
	endStep(&s, status, end)
	b.h.Steps = append(b.h.Steps, s)
}

// workerLost folds in a workflow task that timed out as a step of its own: with local steps,
// it is the only trace in the history of a worker that died in the middle of them.
func (b *historyBuilder) workerLost(a *historypb.WorkflowTaskTimedOutEventAttributes, at time.Time) {
	s := Step{Kind: StepWorkerLost, Name: "worker lost", Scheduled: at, Worker: b.taskWorker}
	worker := orUnknown(b.taskWorker)
	switch a.GetTimeoutType() {
	case enumspb.TIMEOUT_TYPE_START_TO_CLOSE:
		s.Scheduled = b.taskStarted
		s.Detail = fmt.Sprintf("%s took a workflow task and never finished it (it died, or hung): the steps it ran after the last finished task ran again on the next worker", worker)
	default:
		s.Detail = fmt.Sprintf("no worker took the workflow task meant for %s in time: another worker of the host takes it", worker)
	}
	endStep(&s, StepTimedOut, at)
	b.h.Steps = append(b.h.Steps, s)
}

// started takes from the run's first event what was asked, by whom and why.
func (b *historyBuilder) started(a *historypb.WorkflowExecutionStartedEventAttributes, at time.Time) {
	h := b.h
	h.WorkflowID, h.RunID = a.GetWorkflowId(), a.GetOriginalExecutionRunId()
	if h.RunID == "" {
		h.RunID = a.GetFirstExecutionRunId()
	}
	h.WorkflowType, h.TaskQueue = a.GetWorkflowType().GetName(), a.GetTaskQueue().GetName()
	h.Started = at
	h.Audit.StartedBy = a.GetIdentity()
	var in workflows.ChangeMediumInput // ResolveDriveInput's fields are a subset
	if ps := a.GetInput(); ps != nil && len(ps.GetPayloads()) > 0 {
		_ = converter.GetDefaultDataConverter().FromPayload(ps.GetPayloads()[0], &in)
	}
	h.Request = Request{Host: in.Host, Domain: in.Domain, DomID: in.DomID, Vdev: in.Vdev,
		Medium: in.Medium, Format: in.Format, Force: in.Force}
	if h.Request.Medium != "" && h.Request.Format == "" {
		h.Request.Format = activities.FormatRaw
	}
	memo := a.GetMemo().GetFields()
	h.Audit.Requester = memoString(memo, "requester")
	h.Audit.Reason = memoString(memo, "reason")
	h.Audit.Ticket = memoString(memo, "ticket")
}

// attemptStarted marks an activity's step as running an attempt. The event carries the
// failure of the attempt before, which no other event records.
func (b *historyBuilder) attemptStarted(a *historypb.ActivityTaskStartedEventAttributes, at time.Time) {
	i, ok := b.bySched[a.GetScheduledEventId()]
	if !ok {
		return
	}
	s := &b.h.Steps[i]
	s.Status, s.Attempts, s.Worker = StepRunning, a.GetAttempt(), a.GetIdentity()
	t := at
	s.LastStarted = &t
	if f := a.GetLastFailure(); f != nil {
		s.Failures = append(s.Failures, attemptFailure(f, a.GetAttempt()-1))
	}
}

// closeStep ends the activity step scheduled by event sched.
func (b *historyBuilder) closeStep(sched int64, status string, at time.Time, f *failurepb.Failure) {
	i, ok := b.bySched[sched]
	if !ok {
		return
	}
	s := &b.h.Steps[i]
	endStep(s, status, at)
	if s.Attempts == 0 {
		s.Attempts = 1
	}
	if f != nil {
		s.Failures = append(s.Failures, attemptFailure(f, s.Attempts))
	}
}

// closed folds in the event that closed the run, if ev is one: the run's status and end,
// and its result or error.
func (b *historyBuilder) closed(ev *historypb.HistoryEvent, at time.Time) {
	h := b.h
	switch ev.GetEventType() {
	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
		h.Status = "completed"
		if r := decodeResult(ev.GetWorkflowExecutionCompletedEventAttributes().GetResult()); r != nil {
			b.result = r
		}
	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
		h.Status = "failed"
		f := ev.GetWorkflowExecutionFailedEventAttributes().GetFailure()
		err := temporal.GetDefaultFailureConverter().FailureToError(f)
		h.Error = &Failure{Type: failureType(f), Message: workflowMessage(err), Cause: workflows.CauseType(err)}
		if r, ok := workflows.ResultFromError(err); ok {
			b.result = &r
		}
	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
		h.Status = "canceled"
		if r := decodeResult(ev.GetWorkflowExecutionCanceledEventAttributes().GetDetails()); r != nil {
			b.result = r
		}
	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
		a := ev.GetWorkflowExecutionTerminatedEventAttributes()
		h.Status = "terminated"
		h.Error = &Failure{Type: "Terminated", Message: fmt.Sprintf("terminated by %s: %s", orUnknown(a.GetIdentity()), orUnknown(a.GetReason()))}
	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
		h.Status = "timed-out"
		h.Error = &Failure{Type: "Timeout", Message: "the run reached its execution timeout"}
	case enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
		h.Status = "continued-as-new"
	default:
		return
	}
	h.setEnded(at)
}

// decodeResult is the ChangeMediumResult a closing event carries, nil if it carries none
// (a ResolveDrive run's result has no outcome).
func decodeResult(ps *commonpb.Payloads) *workflows.ChangeMediumResult {
	var r workflows.ChangeMediumResult
	if len(ps.GetPayloads()) == 0 || converter.GetDefaultDataConverter().FromPayload(ps.GetPayloads()[0], &r) != nil || r.Outcome == "" {
		return nil
	}
	return &r
}

// finish adds what the events alone do not say (extras: the run's names, the pending
// attempts, a running swap's progress) and what follows from all of them: the outcome, the
// duration and the steps' numbers.
func (b *historyBuilder) finish(extras HistoryExtras) {
	h := b.h
	if extras.WorkflowID != "" {
		h.WorkflowID = extras.WorkflowID
	}
	if extras.RunID != "" {
		h.RunID = extras.RunID
	}
	h.applyPending(extras.Pending)
	switch {
	case b.result != nil:
		h.applyResult(b.result)
	case extras.Progress != nil:
		h.applySteps(extras.Progress.Steps)
	}
	h.Outcome = h.Status
	if b.result != nil {
		h.Outcome = string(b.result.Outcome)
	}
	end := extras.Now
	if h.Ended != nil {
		end = *h.Ended
	} else if end.IsZero() {
		end = time.Now()
	}
	h.DurationMS = millis(end.Sub(h.Started))
	for i := range h.Steps {
		h.Steps[i].Seq = i + 1
	}
}

func (h *History) setEnded(at time.Time) {
	t := at
	h.Ended = &t
}

// applyPending fills in the open activities from DescribeWorkflowExecution.
func (h *History) applyPending(pending []*workflowpb.PendingActivityInfo) {
	for _, pa := range pending {
		for i := range h.Steps {
			s := &h.Steps[i]
			if s.Kind != StepActivity || s.ActivityID != pa.GetActivityId() || s.Ended != nil {
				continue
			}
			s.Attempts = max(pa.GetAttempt(), s.Attempts)
			switch pa.GetState() {
			case enumspb.PENDING_ACTIVITY_STATE_STARTED:
				s.Status = StepRunning
				if t := pa.GetLastStartedTime(); t != nil {
					ts := t.AsTime()
					s.LastStarted = &ts
				}
			case enumspb.PENDING_ACTIVITY_STATE_SCHEDULED:
				s.Status = StepScheduled
				if pa.GetAttempt() > 1 {
					s.Status = StepRetrying
				}
			case enumspb.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED:
				s.Status = StepRunning
			}
			if w := pa.GetLastWorkerIdentity(); w != "" {
				s.Worker = w
			}
			if f := pa.GetLastFailure(); f != nil {
				// The last failure belongs to the attempt before the current one when an
				// attempt runs or waits to start.
				s.Failures = append(s.Failures[:0], attemptFailure(f, pa.GetAttempt()-1))
			}
		}
	}
}

// applyResult takes what only the run's result says: the old and new media, the restore
// marks and details of each step, and the action after a failed restore.
func (h *History) applyResult(r *workflows.ChangeMediumResult) {
	h.Old, h.New, h.Action = r.Old, r.New, r.Action
	h.applySteps(r.Steps)
}

// applySteps matches the run's step records with the activities, in order: each record is
// one scheduled activity, or one or more local activities (a local step's attempts are one
// LocalActivity marker each, with a timer between two). A mismatch (a history that is not
// ChangeMedium's) leaves the steps as they are. A local step's attempts are merged into one
// step, which takes its start, end and earlier failures from its record: its markers hold
// only their ends.
func (h *History) applySteps(recs []workflows.StepRecord) {
	out := make([]Step, 0, len(h.Steps))
	j := 0
	for _, r := range recs {
		for j < len(h.Steps) && h.Steps[j].Kind != StepActivity {
			out = append(out, h.Steps[j])
			j++
		}
		if j >= len(h.Steps) {
			break // a local step still running has no marker yet
		}
		if h.Steps[j].Name != r.Name {
			if r.Local && r.ErrorType == "Canceled" {
				continue // refused before it ran, or abandoned: no marker
			}
			return
		}
		s := h.Steps[j]
		j++
		if s.Local {
			// The later attempts: a retry's timer, then the next marker.
			for n := int32(2); n <= r.Attempts && j+1 < len(h.Steps) && h.Steps[j].Kind == StepTimer &&
				h.Steps[j+1].Local && h.Steps[j+1].Name == r.Name; n++ {
				next := h.Steps[j+1]
				s.Status, s.Ended, s.Worker, s.Failures = next.Status, next.Ended, next.Worker, next.Failures
				j += 2
			}
			s.Attempts = max(r.Attempts, 1)
			var fs []AttemptFailure
			for _, f := range r.Failures {
				fs = append(fs, AttemptFailure{Attempt: f.Attempt, Failure: Failure{Type: f.ErrorType, Message: f.Error}})
			}
			for _, f := range s.Failures { // the last attempt's, from its marker
				f.Attempt = s.Attempts
				fs = append(fs, f)
			}
			s.Failures = fs
			if s.Ended != nil && !r.Started.IsZero() && !r.Ended.IsZero() {
				s.Scheduled = r.Started
				endStep(&s, s.Status, r.Ended)
			}
		}
		s.Restore, s.Detail = r.Restore, r.Detail
		out = append(out, s)
	}
	h.Steps = append(out, h.Steps[j:]...)
}

func endStep(s *Step, status string, at time.Time) {
	t := at
	s.Status, s.Ended = status, &t
	s.DurationMS = millis(at.Sub(s.Scheduled))
}

// attemptFailure describes failure f of an attempt. An activity that used
// activities.NewError carries the attempt in its details; that one wins.
func attemptFailure(f *failurepb.Failure, attempt int32) AttemptFailure {
	af := AttemptFailure{Attempt: attempt, Failure: Failure{Type: failureType(f), Message: failureMessage(f)}}
	if d := f.GetApplicationFailureInfo().GetDetails(); d != nil && len(d.GetPayloads()) > 0 {
		var fd activities.FailureDetails
		if converter.GetDefaultDataConverter().FromPayload(d.GetPayloads()[0], &fd) == nil && fd.Attempt > 0 {
			af.Attempt = fd.Attempt
		}
	}
	return af
}

// failureType is an application failure's type, or the kind of failure.
func failureType(f *failurepb.Failure) string {
	switch {
	case f.GetApplicationFailureInfo() != nil:
		return f.GetApplicationFailureInfo().GetType()
	case f.GetTimeoutFailureInfo() != nil:
		return "Timeout"
	case f.GetCanceledFailureInfo() != nil:
		return "Canceled"
	case f.GetTerminatedFailureInfo() != nil:
		return "Terminated"
	case f.GetServerFailureInfo() != nil:
		return "Server"
	}
	return ""
}

// failureMessage is f's message, saying which timeout for a timeout.
func failureMessage(f *failurepb.Failure) string {
	if t := f.GetTimeoutFailureInfo(); t != nil {
		return fmt.Sprintf("timed out (%s)", t.GetTimeoutType())
	}
	return f.GetMessage()
}

func millis(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

// payloadString decodes a keyword search attribute or a memo field ("" if absent).
func payloadString(p *commonpb.Payload) string {
	if p == nil {
		return ""
	}
	var s string
	if converter.GetDefaultDataConverter().FromPayload(p, &s) != nil {
		return ""
	}
	return s
}

package workflows

import (
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cdswap/cdswap/activities"
)

// Workflow type names, as registered by Register, and the query ChangeMedium answers.
const (
	ChangeMediumName = "ChangeMedium"
	ResolveDriveName = "ResolveDrive"
	// ProgressQuery returns a Progress.
	ProgressQuery = "progress"
)

// ResolveDriveTimeout is the WorkflowExecutionTimeout to start ResolveDrive with: if no
// worker polls the host's task queue, not even the workflow's first task runs, and this
// bounds how long the operator waits for IsNoWorker to say so.
const ResolveDriveTimeout = 10 * time.Second

// WorkflowID is the id of the ChangeMedium run for one drive. Temporal refuses a second
// running workflow with the same id, which makes "one change per drive at a time" hold.
func WorkflowID(host string, domid uint32, vdev string) string {
	return fmt.Sprintf("cdswap-%s-%d-%s", host, domid, vdev)
}

// ResolveWorkflowID is the id of a ResolveDrive run; concurrent resolutions of the same
// drive share one run (ResolveDriveStartOptions uses WorkflowIDConflictPolicy UseExisting).
func ResolveWorkflowID(host, domain, vdev string) string {
	return fmt.Sprintf("cdswap-resolve-%s-%s-%s", host, domain, vdev)
}

// Registry is what Register needs: a worker.Worker, a worker.WorkflowReplayer and a
// testsuite.TestWorkflowEnvironment all have it.
type Registry interface {
	RegisterWorkflowWithOptions(w any, options workflow.RegisterOptions)
}

// Register registers ChangeMedium and ResolveDrive under their type names.
func Register(r Registry) {
	r.RegisterWorkflowWithOptions(ChangeMedium, workflow.RegisterOptions{Name: ChangeMediumName})
	r.RegisterWorkflowWithOptions(ResolveDrive, workflow.RegisterOptions{Name: ResolveDriveName})
}

// Outcome is how a ChangeMedium run ended, in its result and in the CdswapOutcome search
// attribute.
type Outcome string

// Outcomes.
const (
	// OutcomeRunning is what the starter sets CdswapOutcome to; a run never returns it.
	OutcomeRunning Outcome = "running"
	// OutcomeChanged: the new medium is in the drive and in libxl's records.
	OutcomeChanged Outcome = "changed"
	// OutcomeEjected: the drive is empty, in QEMU and in libxl's records.
	OutcomeEjected Outcome = "ejected"
	// OutcomeUnchanged: the drive already held what was asked; nothing was done.
	OutcomeUnchanged Outcome = "unchanged"
	// OutcomeRefused: the request was refused before anything was touched (bad input,
	// unsupported device model, medium outside the ISO roots...). Error type ErrRefused.
	OutcomeRefused Outcome = "refused"
	// OutcomeFailed: a step failed before the drive was touched (a locked tray without
	// force, the lock held by xl); the drive is as it was. Error type ErrSwapFailed.
	OutcomeFailed Outcome = "failed"
	// OutcomeFailedRestored: a step failed after the drive was touched and the old medium
	// was put back. Error type ErrSwapFailedRestored.
	OutcomeFailedRestored Outcome = "failed-restored"
	// OutcomeRestoreFailed: putting the old medium back failed too; the drive needs a
	// person (ChangeMediumResult.Action says what to do). Error type ErrRestoreFailed.
	OutcomeRestoreFailed Outcome = "restore-failed"
	// OutcomeCanceled: the run was canceled; a touched drive was restored first. The run
	// ends as Canceled, with the result in the CanceledError's details.
	OutcomeCanceled Outcome = "canceled"
)

// Error types (temporal.ApplicationError.Type) of a failed ChangeMedium run. A failed run
// returns no result value (Temporal drops it), so the ChangeMediumResult travels as the
// error's details: ResultFromError gets it back. The chain's innermost application error
// carries the activities type that decided (CauseType, ChangeMediumResult.ErrorType).
const (
	ErrRefused            = "Refused"
	ErrSwapFailed         = "SwapFailed"
	ErrSwapFailedRestored = "SwapFailedRestored"
	ErrRestoreFailed      = "RestoreFailed"
	// ErrResolveFailed is the type of a ResolveDrive failure whose activity error had none
	// (a plain Go error after the last attempt, a StartToClose timeout).
	ErrResolveFailed = "ResolveFailed"
)

// Typed search attributes (all Keyword). The starter sets them, with CdswapOutcome
// "running", when it starts a run (StartOptions); the run upserts CdswapOutcome when it ends.
// They must be registered on the namespace (the dev server's --search-attribute).
var (
	CdswapHost    = temporal.NewSearchAttributeKeyKeyword("CdswapHost")
	CdswapDomain  = temporal.NewSearchAttributeKeyKeyword("CdswapDomain")
	CdswapVdev    = temporal.NewSearchAttributeKeyKeyword("CdswapVdev")
	CdswapMedium  = temporal.NewSearchAttributeKeyKeyword("CdswapMedium")
	CdswapOutcome = temporal.NewSearchAttributeKeyKeyword("CdswapOutcome")
	// CdswapRequester and CdswapTicket say who asked and under which ticket, for audits.
	CdswapRequester = temporal.NewSearchAttributeKeyKeyword("CdswapRequester")
	CdswapTicket    = temporal.NewSearchAttributeKeyKeyword("CdswapTicket")
	// CdswapBatch is the id of the batch (FleetSwap) a swap belongs to, and of the batch
	// run itself; "" for a swap a person started alone.
	CdswapBatch = temporal.NewSearchAttributeKeyKeyword("CdswapBatch")
)

// SearchAttributeKeys lists the keys above, for registering them.
func SearchAttributeKeys() []temporal.SearchAttributeKeyKeyword {
	return []temporal.SearchAttributeKeyKeyword{CdswapHost, CdswapDomain, CdswapVdev, CdswapMedium, CdswapOutcome,
		CdswapRequester, CdswapTicket, CdswapBatch}
}

// StartAttributes are the search attributes a ChangeMedium run starts with: the drive, the
// medium, who asked, the ticket, the batch ("" for a swap started alone) and CdswapOutcome
// "running". An eject has CdswapMedium "", a path longer than MaxKeyword its beginning
// (KeywordMedium); the input keeps the whole path. A FleetSwap starting a swap as its child
// passes the same attributes in its ChildWorkflowOptions, with in.BatchID set.
func StartAttributes(in ChangeMediumInput) temporal.SearchAttributes {
	return temporal.NewSearchAttributes(
		CdswapHost.ValueSet(in.Host),
		CdswapDomain.ValueSet(in.Domain),
		CdswapVdev.ValueSet(in.Vdev),
		CdswapMedium.ValueSet(KeywordMedium(in.Medium)),
		CdswapOutcome.ValueSet(string(OutcomeRunning)),
		CdswapRequester.ValueSet(in.Requester),
		CdswapTicket.ValueSet(in.Ticket),
		CdswapBatch.ValueSet(in.BatchID),
	)
}

// Memo keys of a ChangeMedium run (Memo), which the audit commands read back.
const (
	MemoRequester       = "requester"
	MemoRequesterSource = "requester_source"
	MemoReason          = "reason"
	MemoTicket          = "ticket"
	MemoBatch           = "batch"
)

// Memo is the memo a ChangeMedium run starts with: who asked and how that was learned
// (requester_source: "mtls", "api-key"... as ChangeMediumInput.RequesterSource), why, the
// ticket, and the batch when the swap is part of one.
func Memo(in ChangeMediumInput) map[string]any {
	m := map[string]any{MemoRequester: in.Requester, MemoReason: in.Reason, MemoTicket: in.Ticket}
	if in.RequesterSource != "" {
		m[MemoRequesterSource] = in.RequesterSource
	}
	if in.BatchID != "" {
		m[MemoBatch] = in.BatchID
	}
	return m
}

// checkRequesterSource checks ChangeMediumInput.RequesterSource: "" or a short name.
func checkRequesterSource(s string) error {
	if s == "" {
		return nil
	}
	return checkName(FieldRequesterSource, s, 32)
}

// StartOptions are the options to start a ChangeMedium run with: its id (a second run for a
// drive that has one running is refused), the host's task queue, a short workflow task
// timeout (WorkflowTaskTimeout), the memo and the search attributes (StartAttributes, with
// in.BatchID in CdswapBatch).
func StartOptions(in ChangeMediumInput) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                       WorkflowID(in.Host, in.DomID, in.Vdev),
		TaskQueue:                activities.TaskQueue(in.Host),
		WorkflowTaskTimeout:      WorkflowTaskTimeout,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		// Without it the SDK hands back the running swap instead of refusing the second one.
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		Memo:                                     Memo(in),
		TypedSearchAttributes:                    StartAttributes(in),
	}
}

// ResolveDriveStartOptions are the options to start a ResolveDrive run with.
func ResolveDriveStartOptions(in activities.ResolveDriveInput) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                       ResolveWorkflowID(in.Host, in.Domain, in.Vdev),
		TaskQueue:                activities.TaskQueue(in.Host),
		WorkflowExecutionTimeout: ResolveDriveTimeout,
		WorkflowIDConflictPolicy: enumspb.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowIDReusePolicy:    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
	}
}

// ResultFromError returns the ChangeMediumResult carried by the error of a failed or
// canceled ChangeMedium run, and whether there was one.
func ResultFromError(err error) (ChangeMediumResult, bool) {
	var res ChangeMediumResult
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.HasDetails() && appErr.Details(&res) == nil {
		return res, true
	}
	var canceled *temporal.CanceledError
	if errors.As(err, &canceled) && canceled.HasDetails() && canceled.Details(&res) == nil {
		return res, true
	}
	return ChangeMediumResult{}, false
}

// CauseType returns the error type that decided err: the type of the application error an
// activity returned (the direct cause of the first ActivityError in the chain, such as
// activities.ErrTrayLocked), or else the innermost application error's type, or "". The
// causes below an activity's own error are Go errors converted for transport, whose types
// are Go type names, so they are not looked at.
func CauseType(err error) string {
	t := ""
	for e := err; e != nil; e = errors.Unwrap(e) {
		switch x := e.(type) { //nolint:errorlint // walks the chain one link at a time on purpose
		case *temporal.ActivityError:
			//nolint:errorlint // the activity's own error is its direct cause, not any error below it
			if appErr, ok := x.Unwrap().(*temporal.ApplicationError); ok {
				return appErr.Type()
			}
			return t
		case *temporal.ApplicationError:
			t = x.Type()
		}
	}
	return t
}

// ErrorMessage is the message a person sees for err, the error of a step or of a run: the
// message of the first application error in err's chain (which an activity or a workflow
// phrased for a person, without the SDK's wrapping), else what ended it: a timeout, a
// termination or a cancellation. subject names what timed out or ended: "" for a step's
// error inside a run ("timed out (StartToClose)", "canceled"), "the workflow" for a run's
// own error ("the workflow timed out (WorkflowExecution)", "the workflow was canceled").
// An error with none of these in its chain gives its own text.
func ErrorMessage(err error, subject string) string {
	for e := err; e != nil; e = errors.Unwrap(e) {
		var what string
		passive := false
		switch x := e.(type) { //nolint:errorlint // the first link of a kind decides, so the chain is walked by hand
		case *temporal.ApplicationError:
			return x.Message()
		case *temporal.TimeoutError:
			what = fmt.Sprintf("timed out (%s)", x.TimeoutType())
		case *temporal.TerminatedError:
			what, passive = "terminated (by an operator, or by the Temporal CLI or Web UI)", true
		case *temporal.CanceledError:
			what, passive = "canceled", true
		default:
			continue
		}
		switch {
		case subject == "":
			return what
		case passive:
			return subject + " was " + what
		}
		return subject + " " + what
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// IsNoWorker reports whether err, from a ResolveDrive run, means that no cdswap-worker polls
// the host's task queue: the run's activity was never picked up (activities.ErrNoWorker), or
// the run itself timed out (started with ResolveDriveTimeout, its first workflow task was
// never picked up either).
func IsNoWorker(err error) bool {
	if CauseType(err) == activities.ErrNoWorker {
		return true
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return false
	}
	var timeout *temporal.TimeoutError
	return errors.As(err, &timeout)
}

package workflows

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cdswap/cdswap/activities"
)

// changeLocalSteps: the short steps that wait on no other party (localSteps) run as local
// activities on the worker that runs the workflow task, recorded as LocalActivity markers,
// instead of as activities dispatched through the server. A run of them costs one workflow
// task instead of one task, three history events and two server round trips per step
// (BENCHMARKS.md). Runs recorded before it replay with every step a regular activity.
//
// Its version 2 (localVBDVersion) runs the stubdom's PV disk steps (vbdSteps) as local
// activities too, and version 3 (localEjectVersion) Eject, so that a stubdom swap has one
// regular step left (WaitFdset) and a dom0 swap one (AddFD). Runs recorded with an older
// version replay with those steps as regular activities. Versions of the same change rather
// than changes of their own: every GetVersion a run records is a marker and an upsert of
// TemporalChangeVersion, two events and a visibility write on the server. Version 4
// (impliedLimitsVersion) takes in changeValidateLimits for the same reason, so that a new
// run records this one GetVersion before its first step instead of two.
const changeLocalSteps = "local-short-steps"

// Versions of changeLocalSteps.
const (
	// localVBDVersion runs DetachVBD and AttachVBD as local activities.
	localVBDVersion workflow.Version = 2
	// localEjectVersion runs Eject as a local activity, Inspect keeping its answer on the
	// host until Unlock (InspectInput.RunID).
	localEjectVersion workflow.Version = 3
	// impliedLimitsVersion checks Validate's limits without asking changeValidateLimits:
	// every run that records it runs code that has the limits. It changes no step. Runs
	// recorded with an older version (or none) ask changeValidateLimits as before, whose
	// marker they carry or not.
	impliedLimitsVersion workflow.Version = 4
	// localAddFDVersion runs a dom0 change's AddFD as a local activity too: AddFD opens the
	// medium and hands it to QEMU, waiting on no other party, so that a dom0 change is one
	// workflow task from Inspect to Unlock. A worker lost in that task leaves the next one to
	// run every step again, and Inspect, asked again by the run, answers from its note
	// whether the change already took (InspectInput.Resume): if QEMU holds the fdset AddFD
	// made for the new medium, only Record, Verify and Unlock run again, and the medium the
	// run put in is never ejected.
	localAddFDVersion workflow.Version = 5
)

// localSteps are the steps run as local activities since changeLocalSteps: each takes a few
// milliseconds of QMP, xenstore or lock-file work on this host and never waits for another
// party to act. A worker that dies in one of them leaves the workflow task it ran in to time
// out (WorkflowTaskTimeout); the next worker replays the run and runs again every local
// step since the last completed workflow task, which is safe because every step is
// idempotent.
//
// Eject is not one before localEjectVersion: it is the first step that touches the drive,
// and Inspect's answer (the old medium a restore puts back) must survive a worker that dies
// after it. As a regular activity, Eject is scheduled by the completion of the workflow task
// that ran Inspect and Lock, which records their markers first. Since localEjectVersion,
// Inspect keeps its answer on the host for the run instead (activities.InspectInput.RunID):
// Inspect run again after a lost eject, on a drive now empty, answers what it answered
// before, and Eject is a local step in the same workflow task.
var localSteps = map[string]bool{
	activities.NameInspect:      true,
	activities.NameLock:         true,
	activities.NameReleaseFdset: true,
	activities.NameChangeMedium: true,
	activities.NameRecord:       true,
	activities.NameVerify:       true,
	activities.NameUnlock:       true,
}

// vbdSteps are the steps run as local activities since localVBDVersion. They wait on blkback
// and the stub domain, milliseconds when all is well and up to libxl's 10 s per backend
// state when not, and each is idempotent (a detached vbd detaches again as a no-op, an
// attach of the params already attached waits only). Run again from the last completed
// workflow task they redo the same sequence: a worker that dies in AttachVBD leaves ReleaseFdset,
// DetachVBD and AttachVBD to run again, which release the new vbd's fdset if the stubdom had
// added it, detach the new vbd and attach it again. What a heartbeat gave a regular step, a
// dead worker noticed within 2 s, the workflow task timeout gives a local one; while a local
// step runs longer than 80 % of that timeout, the SDK completes the task and goes on in a new
// one, so a slow backend costs three history events per 1.6 s instead of nothing.
//
// WaitFdset stays a regular activity: it waits on the stubdom for up to fdsetWaitTimeout,
// and the fdsets known before it (the set it must not take for the new one) are in the
// history when it starts, so that a retried wait never re-runs the PV disk steps.
var vbdSteps = map[string]bool{
	activities.NameDetachVBD: true,
	activities.NameAttachVBD: true,
}

// RunsLocal reports whether a new ChangeMedium run (changeLocalSteps at its last version)
// runs step as a local activity: such a step is no pending activity while it runs and is
// recorded as a LocalActivity marker.
func RunsLocal(step string) bool {
	return (&swap{local: true, localVBD: true, localEject: true, localAddFD: true}).isLocal(step)
}

// BenchOptions let a benchmark run the way ChangeMedium ran before today's tuning beside the
// way it runs now, on one server and one worker, so that both are measured in the same run.
// Production leaves ChangeMediumInput.Bench nil: the CLI and FleetSwap never set it. Whatever
// its options, a run records the GetVersions of a new run (since impliedLimitsVersion, one
// marker and one upsert before its first step), not those of the code it imitates.
type BenchOptions struct {
	// RegularSteps runs every step as a regular activity, as runs before changeLocalSteps did.
	RegularSteps bool `json:",omitempty"`
	// NoEager asks the server not to hand an activity back in the completion of the workflow
	// task that scheduled it (ActivityOptions.DisableEagerExecution), as with a server whose
	// system.enableActivityEagerExecution is off.
	NoEager bool `json:",omitempty"`
	// FdsetPollInterval replaces WaitFdset's poll interval (0: fdsetPollInterval).
	FdsetPollInterval time.Duration `json:",omitempty"`
	// FdsetPollOnly makes WaitFdset poll every interval only, without the xenstore watch
	// and the fast polls once the stubdom's vbd connected (WaitFdsetInput.Wake).
	FdsetPollOnly bool `json:",omitempty"`
	// RegularVBD runs DetachVBD and AttachVBD as regular activities, as runs with version 1
	// of changeLocalSteps did, and Eject too.
	RegularVBD bool `json:",omitempty"`
	// RegularEject runs Eject as a regular activity, without Inspect's note, as runs with
	// version 2 of changeLocalSteps did.
	RegularEject bool `json:",omitempty"`
	// LocalWait runs WaitFdset as a local activity too (with localEjectVersion), to measure
	// what production does not do: a stubdom run would then have no durable point between
	// its first and last workflow task, so that a worker lost after ChangeMedium would eject
	// the new medium again, and WaitFdset's heartbeat (its stale set ids) would be lost.
	LocalWait bool `json:",omitempty"`
	// RegularAddFD runs AddFD as a regular activity, as runs before localAddFDVersion did.
	RegularAddFD bool `json:",omitempty"`
}

// isLocal says whether the run runs step as a local activity.
func (s *swap) isLocal(step string) bool {
	return s.local && localSteps[step] || s.localVBD && vbdSteps[step] || s.localEject && step == activities.NameEject ||
		s.localAddFD && step == activities.NameAddFD || s.localEject && s.bench().LocalWait && step == activities.NameWaitFdset
}

// addFDRunID is the run id AddFD keeps in Inspect's note (localAddFDVersion), else "".
func (s *swap) addFDRunID() string {
	if s.localAddFD {
		return s.runID
	}
	return ""
}

// bench is the run's BenchOptions (the zero value in production).
func (s *swap) bench() BenchOptions {
	if s.in.Bench == nil {
		return BenchOptions{}
	}
	return *s.in.Bench
}

// useLocalSteps records changeLocalSteps and sets which of the run's steps are local
// activities. It runs before validate, which reads the version (impliedLimitsVersion); runs
// recorded before that version asked changeValidateLimits first, and replay the same in this
// order, since the SDK reads a workflow task's version markers before it runs the workflow
// code and matches no command against them (TestVersionsAnsweredAsRecorded).
func (s *swap) useLocalSteps(ctx workflow.Context) {
	v := workflow.GetVersion(ctx, changeLocalSteps, workflow.DefaultVersion, localAddFDVersion)
	s.stepsVersion = v
	b := s.bench()
	s.local = v >= 1 && !b.RegularSteps
	s.localVBD = s.local && v >= localVBDVersion && !b.RegularVBD
	s.localEject = s.localVBD && v >= localEjectVersion && !b.RegularEject
	s.localAddFD = s.localEject && v >= localAddFDVersion && !b.RegularAddFD
	if s.localEject {
		s.runID = workflow.GetInfo(ctx).WorkflowExecution.RunID
	}
}

// fdsetInterval is WaitFdset's poll interval for this run.
func (s *swap) fdsetInterval() time.Duration {
	if d := s.bench().FdsetPollInterval; d > 0 {
		return d
	}
	return fdsetPollInterval
}

// localActivityOptions are the options of one attempt of a short step run as a local
// activity: the regular activity's StartToClose (activityOptions), and no retry by the SDK:
// runLocal retries by the step's policy, so that each failed attempt is recorded (the SDK
// records only a local activity's last). A local activity has no heartbeat and no task queue
// of its own: it runs on the worker that runs the workflow, which polls the host's queue.
func localActivityOptions(o workflow.ActivityOptions) workflow.LocalActivityOptions {
	return workflow.LocalActivityOptions{
		StartToCloseTimeout: o.StartToCloseTimeout,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
	}
}

// runLocal runs the local step s.steps[i] by the retry policy of opts: each attempt a local
// activity (a LocalActivity marker), a failed one followed by a timer for the policy's
// backoff, until one ends well, the error is not retryable, the attempts are used up or ctx
// is canceled. It records the failures of the attempts before the last in the step's record
// and returns the number of attempts made.
func (s *swap) runLocal(ctx workflow.Context, i int, step string, opts workflow.ActivityOptions, fn, in, out any) (int32, error) {
	rp := opts.RetryPolicy
	for attempt := int32(1); ; attempt++ {
		err := localStepError(step, runStep(ctx, step, true, opts, fn, in).Get(ctx, out))
		if err == nil || attempt >= rp.MaximumAttempts || !retryable(err, rp) || ctx.Err() != nil {
			return attempt, err
		}
		s.steps[i].Failures = append(s.steps[i].Failures, StepFailure{Attempt: attempt, ErrorType: shownType(err), Error: ErrorMessage(err, "")})
		if err := workflow.Sleep(ctx, retryDelay(rp, attempt, err)); err != nil {
			return attempt, err
		}
	}
}

// retryable reports whether a step's error may be retried under policy rp, as the server
// decides for a regular activity: not a cancellation, not a non-retryable application error
// nor one of rp's non-retryable types.
func retryable(err error, rp *temporal.RetryPolicy) bool {
	if temporal.IsCanceledError(err) {
		return false
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return !appErr.NonRetryable() && !slices.Contains(rp.NonRetryableErrorTypes, appErr.Type())
	}
	return true
}

// retryDelay is the pause after failed attempt n under rp: the error's own NextRetryDelay if
// it gives one, else InitialInterval times BackoffCoefficient^(n-1), at most MaximumInterval.
func retryDelay(rp *temporal.RetryPolicy, n int32, err error) time.Duration {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.NextRetryDelay() > 0 {
		return appErr.NextRetryDelay()
	}
	d := float64(rp.InitialInterval) * math.Pow(rp.BackoffCoefficient, float64(n-1))
	if rp.MaximumInterval > 0 && d > float64(rp.MaximumInterval) {
		return rp.MaximumInterval
	}
	return time.Duration(d)
}

// abandonable are the local steps that change nothing on the host but libxl's lock, so that
// a cancellation may abandon them at once (the SDK cancels a local activity's context and
// does not wait for it): Inspect and Verify only read, and Lock may wait for xl's lock for
// a minute, which a cancellation should not have to wait out (Unlock runs on every path once
// Lock was called, whether or not it got the lock).
var abandonable = map[string]bool{
	activities.NameInspect: true,
	activities.NameLock:    true,
	activities.NameVerify:  true,
}

// runStep runs step with options opts, as a local activity if local, else as a regular one,
// and returns its future.
//
// A local activity canceled by the workflow's context is abandoned by the SDK at once, even
// if it still changes the drive; a regular one is waited for (WaitForCancellation). So a
// local step that changes the drive runs on a context disconnected from the run's
// cancellation and always ends by itself, in milliseconds; the cancellation is seen by the
// next step, which is refused before it starts (as the SDK refuses a regular activity on a
// canceled context), and the restore that follows never races with a step still running.
// The abandonable steps keep the run's context.
func runStep(ctx workflow.Context, step string, local bool, opts workflow.ActivityOptions, fn any, in any) workflow.Future {
	if !local {
		return workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), fn, in)
	}
	if ctx.Err() != nil {
		f, set := workflow.NewFuture(ctx)
		set.Set(nil, temporal.NewCanceledError())
		return f
	}
	lctx := ctx
	if !abandonable[step] {
		lctx, _ = workflow.NewDisconnectedContext(ctx)
	}
	return workflow.ExecuteLocalActivity(workflow.WithLocalActivityOptions(lctx, localActivityOptions(opts)), fn, in)
}

// localStepError gives a local activity's error the shape of a regular activity's, an
// *temporal.ActivityError around the activity's own error, so that the workflow's error
// handling (CauseType, shownType, failedAttempts, isCanceled) reads both alike: the SDK
// returns a local activity's error bare (its test environment already wraps it).
func localStepError(step string, err error) error {
	//nolint:errorlint // only an error that is itself an ActivityError has the regular shape
	if _, ok := err.(*temporal.ActivityError); ok || err == nil {
		return err
	}
	retry := enumspb.RETRY_STATE_UNSPECIFIED
	var appErr *temporal.ApplicationError
	if temporal.IsCanceledError(err) {
		retry = enumspb.RETRY_STATE_CANCEL_REQUESTED
	} else if errors.As(err, &appErr) && appErr.NonRetryable() {
		retry = enumspb.RETRY_STATE_NON_RETRYABLE_FAILURE
	}
	fc := temporal.GetDefaultFailureConverter()
	f := &failurepb.Failure{
		Message: fmt.Sprintf("local activity %s failed", step),
		Cause:   fc.ErrorToFailure(err),
		FailureInfo: &failurepb.Failure_ActivityFailureInfo{ActivityFailureInfo: &failurepb.ActivityFailureInfo{
			ActivityType: &commonpb.ActivityType{Name: step},
			RetryState:   retry,
		}},
	}
	return fc.FailureToError(f)
}

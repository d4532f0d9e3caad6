package workflows

import (
	"errors"
	"fmt"
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
// (BENCHMARKS.md). The steps that wait on the stubdom or on blkback (DetachVBD, AttachVBD,
// WaitFdset) and dom0's AddFD stay regular activities with heartbeats. Runs recorded before
// it replay with every step a regular activity.
const changeLocalSteps = "local-short-steps"

// localSteps are the steps run as local activities since changeLocalSteps: each takes a few
// milliseconds of QMP, xenstore or lock-file work on this host and never waits for another
// party to act. A worker that dies in one of them leaves the workflow task it ran in to time
// out (WorkflowTaskTimeout); the next worker replays the run and runs again every local
// step since the last completed workflow task, which is safe because every step is
// idempotent.
var localSteps = map[string]bool{
	activities.NameInspect:      true,
	activities.NameLock:         true,
	activities.NameEject:        true,
	activities.NameReleaseFdset: true,
	activities.NameChangeMedium: true,
	activities.NameRecord:       true,
	activities.NameVerify:       true,
	activities.NameUnlock:       true,
}

// RunsLocal reports whether a new ChangeMedium run (with changeLocalSteps) runs step as a
// local activity: such a step is no pending activity while it runs and is recorded as a
// LocalActivity marker.
func RunsLocal(step string) bool { return localSteps[step] }

// BenchOptions let a benchmark run the way ChangeMedium ran before today's tuning beside the
// way it runs now, on one server and one worker, so that both are measured in the same run.
// Production leaves ChangeMediumInput.Bench nil: the CLI and FleetSwap never set it.
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
	// LocalVBD runs DetachVBD and AttachVBD as local activities too (with changeLocalSteps),
	// to measure what production does not do: they wait on blkback and the stubdom, for up
	// to seconds, so they stay regular activities with heartbeats.
	LocalVBD bool `json:",omitempty"`
}

// isLocal says whether the run runs step as a local activity.
func (s *swap) isLocal(step string) bool {
	if !s.local {
		return false
	}
	return localSteps[step] || s.bench().LocalVBD && (step == activities.NameDetachVBD || step == activities.NameAttachVBD)
}

// bench is the run's BenchOptions (the zero value in production).
func (s *swap) bench() BenchOptions {
	if s.in.Bench == nil {
		return BenchOptions{}
	}
	return *s.in.Bench
}

// useLocalSteps records changeLocalSteps and says whether the run's short steps are local
// activities.
func (s *swap) useLocalSteps(ctx workflow.Context) bool {
	v := workflow.GetVersion(ctx, changeLocalSteps, workflow.DefaultVersion, 1)
	return v >= 1 && !s.bench().RegularSteps
}

// fdsetInterval is WaitFdset's poll interval for this run.
func (s *swap) fdsetInterval() time.Duration {
	if d := s.bench().FdsetPollInterval; d > 0 {
		return d
	}
	return fdsetPollInterval
}

// localActivityOptions are the options of a short step run as a local activity: the same
// StartToClose and retry policy as the regular activity (activityOptions). The SDK bounds a
// local activity's retries by its ScheduleToClose, which defaults to the StartToClose: it
// is set so that the policy's attempts, not one attempt's time, end the retries, as for a
// regular step. A local activity has no heartbeat and no task queue of its own: it runs on
// the worker that runs the workflow, which polls the host's queue.
func localActivityOptions(o workflow.ActivityOptions) workflow.LocalActivityOptions {
	rp := o.RetryPolicy
	return workflow.LocalActivityOptions{
		ScheduleToCloseTimeout: time.Duration(rp.MaximumAttempts) * (o.StartToCloseTimeout + rp.MaximumInterval),
		StartToCloseTimeout:    o.StartToCloseTimeout,
		RetryPolicy:            rp,
	}
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

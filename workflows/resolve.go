package workflows

import (
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cdswap/cdswap/activities"
)

// resolveScheduleToStart bounds the wait for a worker to pick up the ResolveDrive activity.
// Only a host-specific queue makes this meaningful: no other worker could ever take it.
const resolveScheduleToStart = 5 * time.Second

// ResolveDrive finds the domid, devid and kind of a drive with one activity on the host's
// task queue. It takes the activity's input and returns the activity's result (its Meta the
// attempt that found the drive): the drive is resolved once, in activities.ResolveDrive,
// with nothing copied on the way. Runs recorded when ResolveDrive had types of its own
// replay: their JSON had the same fields, less Meta's. If no worker picks the activity up
// within resolveScheduleToStart it fails with activities.ErrNoWorker. Started on the host's queue too (ResolveDriveStartOptions), a run
// with no worker at all never starts: its execution timeout ends it, and IsNoWorker
// recognizes both. Errors keep the activity's type (activities.ErrNoSuchDomain...).
func ResolveDrive(ctx workflow.Context, in activities.ResolveDriveInput) (activities.ResolveDriveResult, error) {
	switch {
	case in.Host == "":
		return activities.ResolveDriveResult{}, badInput("no host given")
	case in.Domain == "":
		return activities.ResolveDriveResult{}, badInput("no domain given (a name or a domid)")
	case in.Vdev == "":
		return activities.ResolveDriveResult{}, badInput("no vdev given (hdc, xvdc...)")
	}
	opts := activityOptions(in.Host, activities.NameResolveDrive, false)
	opts.ScheduleToStartTimeout = resolveScheduleToStart
	opts.WaitForCancellation = false // it only reads
	var out activities.ResolveDriveResult
	err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), act.ResolveDrive, in).Get(ctx, &out)
	if err == nil {
		return out, nil
	}
	var timeout *temporal.TimeoutError
	if errors.As(err, &timeout) && timeout.TimeoutType() == enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START {
		return activities.ResolveDriveResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"no cdswap-worker is polling host %s (task queue %s): start cdswap-worker on %s",
			in.Host, activities.TaskQueue(in.Host), in.Host), activities.ErrNoWorker, err)
	}
	if temporal.IsCanceledError(err) {
		return activities.ResolveDriveResult{}, err
	}
	// Keep the activity's type and message at the top of the run's error, for the CLI.
	t := CauseType(err)
	if t == "" {
		t = ErrResolveFailed
	}
	return activities.ResolveDriveResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
		"resolve %s on domain %s (host %s): %s", in.Vdev, in.Domain, in.Host, ErrorMessage(err, "")), t, err)
}

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

// ResolveDriveInput names a drive the way an operator does.
type ResolveDriveInput struct {
	// Host is the dom0 host.
	Host string
	// Domain is the guest's name, or its domid in decimal.
	Domain string
	// Vdev is the drive ("hdc", "xvdc").
	Vdev string
}

// ResolveDriveResult is the drive found: what a ChangeMediumInput needs.
type ResolveDriveResult struct {
	// DomID is the guest's domid.
	DomID uint32
	// Name is the guest's name.
	Name string
	// DevID is libxl's devid of the vdev (hdc = 5632).
	DevID int
	// Kind is where the guest's device model runs; KindTraditional guests will be refused.
	Kind activities.Kind
}

// resolveScheduleToStart bounds the wait for a worker to pick up the ResolveDrive activity.
// Only a host-specific queue makes this meaningful: no other worker could ever take it.
const resolveScheduleToStart = 5 * time.Second

// ResolveDrive finds the domid, devid and kind of a drive with one activity on the host's
// task queue. If no worker picks the activity up within resolveScheduleToStart it fails with
// activities.ErrNoWorker. Started on the host's queue too (ResolveDriveStartOptions), a run
// with no worker at all never starts: its execution timeout ends it, and IsNoWorker
// recognizes both. Errors keep the activity's type (activities.ErrNoSuchDomain...).
func ResolveDrive(ctx workflow.Context, in ResolveDriveInput) (ResolveDriveResult, error) {
	switch {
	case in.Host == "":
		return ResolveDriveResult{}, badInput("no host given")
	case in.Domain == "":
		return ResolveDriveResult{}, badInput("no domain given (a name or a domid)")
	case in.Vdev == "":
		return ResolveDriveResult{}, badInput("no vdev given (hdc, xvdc...)")
	}
	opts := activityOptions(in.Host, activities.NameResolveDrive, false)
	opts.ScheduleToStartTimeout = resolveScheduleToStart
	opts.WaitForCancellation = false // it only reads
	var out activities.ResolveDriveResult
	err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), act.ResolveDrive,
		activities.ResolveDriveInput{Host: in.Host, Domain: in.Domain, Vdev: in.Vdev}).Get(ctx, &out)
	if err == nil {
		return ResolveDriveResult{DomID: out.DomID, Name: out.Name, DevID: out.DevID, Kind: out.Kind}, nil
	}
	var timeout *temporal.TimeoutError
	if errors.As(err, &timeout) && timeout.TimeoutType() == enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START {
		return ResolveDriveResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"no cdswap-worker is polling host %s (task queue %s): start cdswap-worker on %s",
			in.Host, activities.TaskQueue(in.Host), in.Host), activities.ErrNoWorker, err)
	}
	if temporal.IsCanceledError(err) {
		return ResolveDriveResult{}, err
	}
	// Keep the activity's type and message at the top of the run's error, for the CLI.
	t := CauseType(err)
	if t == "" {
		t = ErrResolveFailed
	}
	return ResolveDriveResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
		"resolve %s on domain %s (host %s): %s", in.Vdev, in.Domain, in.Host, ErrorMessage(err, "")), t, err)
}

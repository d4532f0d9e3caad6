package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/workflows"
)

// maxSwapID bounds a swap id given on the command line: Temporal's default limit on a
// workflow id's length.
const maxSwapID = 1000

// pollerWait is how long the CLI looks for a poller on a host's task queue before it says
// that no worker serves the host: a worker that was just started may not have polled yet.
const pollerWait = 600 * time.Millisecond

// flagError turns a *workflows.InputError into a UsageError naming the flag.
func flagError(err error) error {
	var ie *workflows.InputError
	if errors.As(err, &ie) {
		return usagef("--%s %s", ie.Field, ie.Problem)
	}
	return err
}

// checkSwap checks the flags of insert or eject against workflows.Validate's limits, which
// the workflow checks again, before anything is dialed.
func checkSwap(f swapFlags, requester string) error {
	return flagError(workflows.Validate(workflows.ChangeMediumInput{
		Host: f.host, Domain: f.domain, Vdev: f.vdev, Medium: f.medium, Format: f.format,
		Requester: requester, Reason: f.reason, Ticket: f.ticket,
	}))
}

// checkDrive checks the drive flags of status, history and list, those given.
func checkDrive(host, domain, vdev string) error {
	for _, c := range []struct {
		val   string
		check func(string) error
	}{
		{host, workflows.ValidateHost},
		{domain, workflows.ValidateDomain},
		{vdev, workflows.ValidateVdev},
	} {
		if c.val == "" {
			continue
		}
		if err := c.check(c.val); err != nil {
			return flagError(err)
		}
	}
	return nil
}

// checkID checks a swap id given as an argument: text that fits a workflow id, without
// control characters (which gRPC would refuse in a header, in Temporal's words).
func checkID(id string) error {
	if id == "" {
		return usagef("the swap ID is empty: cdswap list shows recent ones")
	}
	var ie *workflows.InputError
	if err := workflows.ValidateText("swap ID", id, maxSwapID, false); errors.As(err, &ie) {
		return usagef("the swap ID %s", ie.Problem)
	}
	return nil
}

// checkPollers refuses at once a host whose task queue no worker polls, as the task queue's
// pollers tell (DescribeTaskQueue), instead of waiting out ResolveDrive's timeout. If the
// server cannot say, it returns nil and ResolveDrive decides.
func (a *App) checkPollers(ctx context.Context, c client.Client, host string) error {
	tq := &taskqueuepb.TaskQueue{Name: activities.TaskQueue(host), Kind: enumspb.TASK_QUEUE_KIND_NORMAL}
	deadline := time.Now().Add(pollerWait)
	for {
		polled := true
		for _, typ := range []enumspb.TaskQueueType{enumspb.TASK_QUEUE_TYPE_WORKFLOW, enumspb.TASK_QUEUE_TYPE_ACTIVITY} {
			resp, err := c.WorkflowService().DescribeTaskQueue(ctx, &workflowservice.DescribeTaskQueueRequest{
				Namespace: a.cfg.NamespaceName(), TaskQueue: tq, TaskQueueType: typ,
			})
			if err != nil {
				return nil
			}
			polled = polled && len(resp.GetPollers()) > 0
		}
		if polled {
			return nil
		}
		if time.Now().After(deadline) {
			return noWorker(host)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// noWorker is the error for a host whose task queue no worker polls.
func noWorker(host string) error {
	return &userError{msg: fmt.Sprintf("no cdswap-worker is polling host %s (task queue %s): check the host's name (cdswap list --since 30d shows the hosts of recent swaps), or start cdswap-worker --host %s on that dom0",
		esc(host), esc(activities.TaskQueue(host)), esc(host))}
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/workflows"
)

// newCancelCmd is `cdswap cancel`.
func (a *App) newCancelCmd() *cobra.Command {
	var reason, requester string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a running swap; it puts the old medium back",
		Long: `cancel asks a running swap to stop. It stops at its current step and, if it had
touched the drive, puts the old medium back before it ends as canceled.`,
		Args: exactArgs(1, "one swap ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usagef("--timeout must be positive, not %s", timeout)
			}
			if err := checkID(args[0]); err != nil {
				return err
			}
			if err := workflows.ValidateText(workflows.FieldReason, reason, workflows.MaxReason, true); err != nil {
				return flagError(err)
			}
			if err := workflows.ValidateText(workflows.FieldRequester, a.requester(requester), workflows.MaxRequester, false); err != nil {
				return flagError(err)
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			return a.cancel(ctx, c, args[0], a.requester(requester), reason, wait, timeout)
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	cmd.Flags().StringVar(&requester, "requester", "", "who asks, for the record (default $SUDO_USER, else $USER)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the swap has ended")
	cmd.Flags().DurationVar(&timeout, "timeout", DefaultWaitTimeout, "with --wait: stop waiting after this long")
	return cmd
}

// cancel requests the cancellation of the running swap id.
func (a *App) cancel(ctx context.Context, c client.Client, id, requester, reason string, wait bool, timeout time.Duration) error {
	desc, err := c.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		return notFound(a.cfg, id, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	runID := info.GetExecution().GetRunId()
	if info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return &userError{msg: fmt.Sprintf("swap %s is not running (it ended %s): nothing to cancel",
			id, outcomeOf(info.GetStatus(), info.GetSearchAttributes().GetIndexedFields()[workflows.CdswapOutcome.GetName()]))}
	}
	if reason == "" {
		reason = "canceled with cdswap cancel"
	}
	_, err = c.WorkflowService().RequestCancelWorkflowExecution(ctx, &workflowservice.RequestCancelWorkflowExecutionRequest{
		Namespace:         a.cfg.NamespaceName(),
		WorkflowExecution: info.GetExecution(),
		Identity:          fmt.Sprintf("%s (for %s)", a.cfg.Identity, requester),
		Reason:            reason,
	})
	var already *serviceerror.CancellationAlreadyRequested
	switch {
	case errors.As(err, &already):
		fmt.Fprintf(a.stdout(), "cancellation of swap %s (run %s) was already requested\n", esc(id), esc(runID))
	case err != nil:
		return notFound(a.cfg, id, err)
	default:
		fmt.Fprintf(a.stdout(), "cancellation of swap %s (run %s) requested: it stops at its current step and puts the old medium back if it touched the drive\n", esc(id), esc(runID))
	}
	if !wait {
		fmt.Fprintf(a.stdout(), "follow it: cdswap status %s\n", esc(id))
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	w := &waiter{c: c, out: a.stdout(), tty: a.TTY, width: a.termWidth(), interval: a.pollInterval()}
	res, runErr := w.wait(wctx, id, runID)
	if !runEnded(runErr) {
		if wctx.Err() == nil {
			return fmt.Errorf("follow swap %s: %w", id, runErr)
		}
		return &userError{msg: fmt.Sprintf("swap %s has not ended yet; follow it with cdswap status %s", id, id), cause: runErr}
	}
	if res.Outcome == workflows.OutcomeCanceled {
		fmt.Fprintf(a.stdout(), "canceled: swap %s ended %s\n", esc(id), res.Outcome)
		return nil
	}
	if runErr != nil {
		return &userError{msg: fmt.Sprintf("swap %s ended before it could be canceled: %s", id, workflowMessage(runErr)), cause: runErr}
	}
	fmt.Fprintf(a.stdout(), "swap %s ended before it could be canceled: %s\n", esc(id), esc(string(res.Outcome)))
	return nil
}

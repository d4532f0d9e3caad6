package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/termtext"
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
touched the drive, puts the old medium back before it ends as canceled. A swap that has
already verified its new medium keeps it: cancel then waits for its end, says it was too
late, and prints the command that puts the old medium back (exit status 1).`,
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
			if err := a.checkRequesterFlag(requester); err != nil {
				return err
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

// lateWait bounds how long cancel, without --wait, follows a swap that may have verified its
// new medium already: such a run is only Unlock away from its end.
const lateWait = 10 * time.Second

// cancel requests the cancellation of the running swap id. A swap whose new medium is
// already verified (its Verify ended well, or it is in Unlock) keeps it: the run ends with its
// own outcome, and the cancellation is only recorded. cancel asks for the run's progress
// first, so that it does not promise the old medium back then, follows such a run to its
// end, and says it was too late.
func (a *App) cancel(ctx context.Context, c client.Client, id, requester, reason string, wait bool, timeout time.Duration) error {
	desc, err := describe(ctx, c, id, "")
	if err != nil {
		return notFound(a.cfg, id, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	runID := info.GetExecution().GetRunId()
	if info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return &userError{msg: fmt.Sprintf("swap %s is not running (it ended %s): nothing to cancel",
			id, outcomeOf(info.GetStatus(), info.GetSearchAttributes().GetIndexedFields()[workflows.CdswapOutcome.GetName()]))}
	}
	// Best effort: a run whose worker is gone does not answer, and is not near its end.
	before, _ := queryProgress(ctx, c, id, runID)
	mayBeLate := mayBeTooLate(before)
	if reason == "" {
		reason = "canceled with cdswap cancel"
	}
	// Requested even when it is too late, so that the history shows it was asked for.
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
	case mayBeLate:
		fmt.Fprintf(a.stdout(), "cancellation of swap %s (run %s) requested; the swap is verifying or has verified its new medium: waiting for its end\n", esc(id), esc(runID))
	default:
		fmt.Fprintf(a.stdout(), "cancellation of swap %s (run %s) requested: it stops at its current step and puts the old medium back if it touched the drive\n", esc(id), esc(runID))
	}
	if !wait && !mayBeLate {
		fmt.Fprintf(a.stdout(), "follow it: cdswap status %s\n", esc(id))
		return nil
	}
	w := &waiter{c: c, out: a.stdout(), tty: a.TTY, width: a.termWidth(), interval: a.pollInterval()}
	if !wait {
		timeout, w.out, w.tty = lateWait, io.Discard, false
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
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
		return &userError{msg: fmt.Sprintf("swap %s ended before it could be canceled: %s", esc(id), workflowMessage(runErr)), cause: runErr}
	}
	if res.Outcome == workflows.OutcomeChanged || res.Outcome == workflows.OutcomeEjected {
		return &userError{msg: a.tooLate(id, info, res)}
	}
	fmt.Fprintf(a.stdout(), "swap %s ended before it could be canceled: %s\n", esc(id), esc(string(res.Outcome)))
	return nil
}

// mayBeTooLate reports whether a run with progress p may keep its new medium whatever a
// cancellation says: its own Verify ended well or is running (one that ends well before it
// hears of the cancellation counts), or it is releasing the lock at its end.
func mayBeTooLate(p workflows.Progress) bool {
	if p.Phase == workflows.PhaseDone {
		return p.Outcome == "" || p.Outcome == workflows.OutcomeChanged || p.Outcome == workflows.OutcomeEjected
	}
	if p.Phase != workflows.PhaseSwap {
		return false
	}
	for _, s := range p.Steps {
		if s.Name == activities.NameVerify && !s.Restore && s.Error == "" {
			return true
		}
	}
	return false
}

// tooLate is the message for a swap that completed although a cancellation was asked: when
// it was verified, that the new medium stays, and the command that puts the old one back.
func (a *App) tooLate(id string, info *workflowpb.WorkflowExecutionInfo, res workflows.ChangeMediumResult) string {
	at := ""
	for _, s := range res.Steps {
		if s.Name == activities.NameVerify && !s.Restore && s.Error == "" && !s.Ended.IsZero() {
			at = " at " + s.Ended.In(a.location()).Format("15:04:05")
		}
	}
	what := fmt.Sprintf("the new medium %s stays", termtext.Escape(res.New))
	if res.Outcome == workflows.OutcomeEjected {
		what = "the drive stays empty"
	}
	sa := info.GetSearchAttributes().GetIndexedFields()
	keyword := func(k temporal.SearchAttributeKeyKeyword) string {
		var v string
		if p := sa[k.GetName()]; p != nil {
			_ = converter.GetDefaultDataConverter().FromPayload(p, &v)
		}
		return termtext.Escape(v)
	}
	drive := fmt.Sprintf("--host %s --domain %s --vdev %s", shellWord(keyword(workflows.CdswapHost)), shellWord(keyword(workflows.CdswapDomain)), shellWord(keyword(workflows.CdswapVdev)))
	back := "cdswap eject " + drive
	if res.Old != "" {
		back = fmt.Sprintf("cdswap insert %s --medium %s", drive, shellWord(termtext.Escape(res.Old)))
	}
	return fmt.Sprintf("too late to cancel swap %s: it had already completed%s (%s); %s; to put the old one back run: %s",
		esc(id), at, esc(string(res.Outcome)), what, back)
}

// shellWord quotes s for a POSIX shell when it holds anything but letters, digits and
// -_./:=@+, (s is escaped for the terminal already).
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/workflows"
)

// driveFlags name a drive instead of a workflow id.
type driveFlags struct {
	host, domain, vdev string
}

func (d *driveFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&d.host, "host", "", "dom0 host (with --domain and --vdev, instead of an ID)")
	cmd.Flags().StringVar(&d.domain, "domain", "", "guest name or domid")
	cmd.Flags().StringVar(&d.vdev, "vdev", "", "CD-ROM drive (hdc, xvdc...)")
}

func (d *driveFlags) given() bool { return d.host != "" || d.domain != "" || d.vdev != "" }

// target checks that exactly one of an ID argument and the drive flags names the swap.
func (d *driveFlags) target(args []string) error {
	switch {
	case len(args) > 1:
		return usagef("expected one swap ID, got %d arguments", len(args))
	case len(args) == 1 && d.given():
		return usagef("give a swap ID or --host/--domain/--vdev, not both")
	case len(args) == 0 && !d.given():
		return usagef("give a swap ID, or --host, --domain and --vdev")
	case len(args) == 0 && (d.host == "" || d.domain == "" || d.vdev == ""):
		return usagef("--host, --domain and --vdev go together")
	}
	return nil
}

// findSwap returns the id of the latest swap of a drive: by domid the id is known; by name
// it is looked up in visibility, through the search attributes every swap carries.
func (a *App) findSwap(ctx context.Context, c client.Client, d driveFlags) (string, error) {
	if domid, err := strconv.ParseUint(d.domain, 10, 32); err == nil {
		return workflows.WorkflowID(d.host, uint32(domid), d.vdev), nil
	}
	q := fmt.Sprintf("WorkflowType = %s AND CdswapHost = %s AND CdswapDomain = %s AND CdswapVdev = %s",
		quote(workflows.ChangeMediumName), quote(d.host), quote(d.domain), quote(d.vdev))
	resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: a.cfg.NamespaceName(), Query: q, PageSize: 100})
	if err != nil {
		return "", fmt.Errorf("look up the swaps of drive %s of %s on host %s: %w", d.vdev, d.domain, d.host, err)
	}
	var id string
	var latest time.Time
	for _, info := range resp.GetExecutions() {
		if t := info.GetStartTime().AsTime(); id == "" || t.After(latest) {
			id, latest = info.GetExecution().GetWorkflowId(), t
		}
	}
	if id == "" {
		return "", &userError{msg: fmt.Sprintf("no swap of drive %s of %s on host %s is on record in namespace %s: check the names (cdswap list --host %s), or give the domid",
			d.vdev, d.domain, d.host, a.cfg.NamespaceName(), d.host)}
	}
	return id, nil
}

// swapHistory fetches the history of the swap that status and history name: the ID in args,
// or else the latest swap of the drive d names; runID, when set, picks an earlier run.
func (a *App) swapHistory(ctx context.Context, d driveFlags, args []string, runID string) (*History, error) {
	if err := d.target(args); err != nil {
		return nil, err
	}
	c, err := a.dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	id := ""
	if len(args) == 1 {
		id = args[0]
	} else if id, err = a.findSwap(ctx, c, d); err != nil {
		return nil, err
	}
	h, err := FetchHistory(ctx, c, id, runID)
	if err != nil {
		return nil, notFound(a.cfg, id, err)
	}
	return h, nil
}

// quote makes s a string literal of Temporal's visibility query language.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// statusView is the JSON of `cdswap status --json`.
type statusView struct {
	WorkflowID string     `json:"workflow_id"`
	RunID      string     `json:"run_id"`
	Status     string     `json:"status"`
	Outcome    string     `json:"outcome"`
	Phase      string     `json:"phase,omitempty"`
	Step       *Step      `json:"step,omitempty"`
	Request    Request    `json:"request"`
	Audit      Audit      `json:"audit"`
	Started    time.Time  `json:"started"`
	Ended      *time.Time `json:"ended,omitempty"`
	DurationMS float64    `json:"duration_ms"`
	Old        string     `json:"old_medium,omitempty"`
	New        string     `json:"new_medium,omitempty"`
	Error      *Failure   `json:"error,omitempty"`
	Action     string     `json:"action,omitempty"`
}

func (a *App) newStatusCmd() *cobra.Command {
	var d driveFlags
	var runID string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status ID | --host H --domain NAME|DOMID --vdev hdc",
		Short: "Show the state of a swap: its running step, or how it ended",
		Long: `status shows the latest swap of a drive (or the swap with that workflow ID): the step it
runs now, with its attempt and last failure, or how it ended.`,
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			h, err := a.swapHistory(cmd.Context(), d, args, runID)
			if err != nil {
				return err
			}
			v := statusOf(h)
			if asJSON {
				return writeJSON(a.stdout(), v)
			}
			a.writeStatus(v)
			return nil
		}),
	}
	d.add(cmd)
	cmd.Flags().StringVar(&runID, "run", "", "a run ID, for an earlier swap with the same ID (default: the latest)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// statusOf summarizes a History: the open step, if any, and the phase.
func statusOf(h *History) statusView {
	v := statusView{WorkflowID: h.WorkflowID, RunID: h.RunID, Status: h.Status, Outcome: h.Outcome,
		Request: h.Request, Audit: h.Audit, Started: h.Started, Ended: h.Ended, DurationMS: h.DurationMS,
		Old: h.Old, New: h.New, Error: h.Error, Action: h.Action}
	if h.Ended == nil {
		for i := len(h.Steps) - 1; i >= 0; i-- {
			if h.Steps[i].Ended == nil {
				s := h.Steps[i]
				v.Step = &s
				break
			}
		}
		v.Phase = string(workflows.PhaseSwap)
		if v.Step != nil && v.Step.Restore {
			v.Phase = string(workflows.PhaseRestore)
		}
	}
	return v
}

// writeStatus prints a statusView for a person.
func (a *App) writeStatus(v statusView) {
	loc := a.location()
	var b strings.Builder
	fmt.Fprintf(&b, "swap %s (run %s): ", v.WorkflowID, v.RunID)
	switch {
	case v.Ended == nil && v.Step != nil:
		s := v.Step
		fmt.Fprintf(&b, "running, step %d %s (%s", s.Seq, s.label(), s.Status)
		if s.Attempts > 0 {
			fmt.Fprintf(&b, ", attempt %d", s.Attempts)
		}
		fmt.Fprintf(&b, ", for %s)", formatDuration(time.Since(s.Scheduled).Round(time.Millisecond)))
		if n := len(s.Failures); n > 0 {
			fmt.Fprintf(&b, "; last failure: %s", s.Failures[n-1].text())
		}
	case v.Ended == nil:
		fmt.Fprintf(&b, "running, between steps, for %s", formatDuration(ms(v.DurationMS)))
	default:
		fmt.Fprintf(&b, "%s at %s, after %s", v.Outcome, v.Ended.In(loc).Format("2006-01-02 15:04:05 MST"), formatDuration(ms(v.DurationMS)))
		if note := outcomeNote(v.Outcome, v.Old); note != "" {
			fmt.Fprintf(&b, " (%s)", note)
		}
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  %s\n", v.Request.describe(workflows.ChangeMediumName))
	fmt.Fprintf(&b, "  asked by %s", orUnknown(v.Audit.Requester))
	if v.Audit.Reason != "" {
		fmt.Fprintf(&b, ": %q", v.Audit.Reason)
	}
	if v.Audit.Ticket != "" {
		fmt.Fprintf(&b, " (ticket %s)", v.Audit.Ticket)
	}
	fmt.Fprintf(&b, ", started %s\n", v.Started.In(loc).Format("2006-01-02 15:04:05 MST"))
	if v.Error != nil {
		fmt.Fprintf(&b, "  error: %s\n", v.Error.Message)
	}
	if v.Action != "" {
		fmt.Fprintf(&b, "  to do: %s\n", v.Action)
	}
	fmt.Fprintf(&b, "  steps: cdswap history %s\n", v.WorkflowID)
	fmt.Fprint(a.stdout(), b.String())
}

func (a *App) newHistoryCmd() *cobra.Command {
	var runID string
	var asJSON bool
	var drive driveFlags
	cmd := &cobra.Command{
		Use:   "history ID | --host H --domain D --vdev V",
		Short: "Show a swap's steps, attempts, errors and timings, and who asked and why",
		Long: `history renders a swap's Temporal event history (running, completed, failed, rolled back
or canceled): each step with its attempts, start time, duration and the failures Temporal
kept, how the swap ended, and who asked for it and why. --json prints the same as a stable
JSON document (schema ` + HistorySchema + `). Name the swap by its ID, or name the drive
with --host, --domain and --vdev for its latest swap.`,
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			h, err := a.swapHistory(cmd.Context(), drive, args, runID)
			if err != nil {
				return err
			}
			if asJSON {
				return WriteHistoryJSON(a.stdout(), h)
			}
			return WriteHistoryText(a.stdout(), h, a.location())
		}),
	}
	cmd.Flags().StringVar(&runID, "run", "", "a run ID, for an earlier swap with the same ID (default: the latest)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	drive.add(cmd)
	return cmd
}

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
		fmt.Fprintf(a.stdout(), "cancellation of swap %s (run %s) was already requested\n", id, runID)
	case err != nil:
		return notFound(a.cfg, id, err)
	default:
		fmt.Fprintf(a.stdout(), "cancellation of swap %s (run %s) requested: it stops at its current step and puts the old medium back if it touched the drive\n", id, runID)
	}
	if !wait {
		fmt.Fprintf(a.stdout(), "follow it: cdswap status %s\n", id)
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
		fmt.Fprintf(a.stdout(), "canceled: swap %s ended %s\n", id, res.Outcome)
		return nil
	}
	if runErr != nil {
		return &userError{msg: fmt.Sprintf("swap %s ended before it could be canceled: %s", id, workflowMessage(runErr)), cause: runErr}
	}
	fmt.Fprintf(a.stdout(), "swap %s ended before it could be canceled: %s\n", id, res.Outcome)
	return nil
}

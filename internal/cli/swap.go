package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"time"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/workflows"
)

// DefaultWaitTimeout is how long --wait follows a swap before it stops waiting.
const DefaultWaitTimeout = 5 * time.Minute

// swapFlags are the flags of insert and eject.
type swapFlags struct {
	host, domain, vdev string
	medium, format     string
	force              bool
	requester          string
	reason, ticket     string
	wait               bool
	timeout            time.Duration
	json               bool
}

func (a *App) newSwapCmd(eject bool) *cobra.Command {
	var f swapFlags
	cmd := &cobra.Command{
		Use:   "insert --host H --domain NAME|DOMID --vdev hdc --medium /path/x.iso",
		Short: "Put a medium in a guest's CD-ROM drive",
		Long: `insert changes the medium of a guest's CD-ROM drive, as xl cd-insert does. It finds the
drive on the host's cdswap-worker, then starts the swap as a workflow (one per drive at a
time) and prints its id; --wait follows it step by step. The medium is a path on the dom0
host, under one of the worker's ISO roots.`,
		Args: cobra.NoArgs,
	}
	if eject {
		cmd.Use = "eject --host H --domain NAME|DOMID --vdev hdc"
		cmd.Short = "Empty a guest's CD-ROM drive"
		cmd.Long = `eject empties a guest's CD-ROM drive, as xl cd-eject does, as a workflow (one per drive
at a time); --wait follows it step by step.`
	}
	fl := cmd.Flags()
	fl.StringVar(&f.host, "host", "", "dom0 host that runs the guest (its cdswap-worker's --host)")
	fl.StringVar(&f.domain, "domain", "", "guest name, or domid")
	fl.StringVar(&f.vdev, "vdev", "", "CD-ROM drive as libxl names it: hdc, xvdc, sdc...")
	if !eject {
		fl.StringVar(&f.medium, "medium", "", "absolute path of the image on the host")
		fl.StringVar(&f.format, "format", activities.FormatRaw, "image format: raw (stubdom guests take raw only), or qcow2, vpc... for QEMU in dom0")
	}
	fl.BoolVar(&f.force, "force", false, "eject even if the guest keeps the tray locked")
	fl.StringVar(&f.requester, "requester", "", "who asks, for the record, on a connection without a client certificate or API key (default $SUDO_USER, else $USER)")
	fl.StringVar(&f.reason, "reason", "", "why, for the record")
	fl.StringVar(&f.ticket, "ticket", "", "ticket or change id, for the record")
	fl.BoolVar(&f.wait, "wait", false, "follow the swap until it ends, one line per step")
	fl.DurationVar(&f.timeout, "timeout", DefaultWaitTimeout, "with --wait: stop waiting after this long (the swap goes on)")
	fl.BoolVar(&f.json, "json", false, "print the started swap (or, with --wait, its result) as JSON; progress goes to stderr")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		required := []string{"host", "domain", "vdev"}
		if !eject {
			required = append(required, "medium")
		}
		if err := requireFlags(cmd.Flags(), required...); err != nil {
			return err
		}
		if !eject && !path.IsAbs(f.medium) {
			return usagef("--medium %q must be an absolute path on host %s", f.medium, f.host)
		}
		if !eject && f.format == "" {
			return usagef("--format is empty: give raw, qcow2...")
		}
		if f.timeout <= 0 {
			return usagef("--timeout must be positive, not %s", f.timeout)
		}
		if err := a.checkRequesterFlag(f.requester); err != nil {
			return err
		}
		if err := checkSwap(f, a.requester(f.requester)); err != nil {
			return err
		}
		return a.swap(cmd.Context(), f)
	})
	return cmd
}

// swapStarted is the JSON printed by insert/eject --json without --wait.
type swapStarted struct {
	WorkflowID string `json:"workflow_id"`
	RunID      string `json:"run_id"`
	Host       string `json:"host"`
	Domain     string `json:"domain"`
	DomID      uint32 `json:"domid"`
	Vdev       string `json:"vdev"`
	Medium     string `json:"medium"`
}

// swapDone is the JSON printed by insert/eject --json --wait.
type swapDone struct {
	swapStarted
	Outcome string                        `json:"outcome"`
	Error   string                        `json:"error,omitempty"`
	Result  *workflows.ChangeMediumResult `json:"result,omitempty"`
}

// swap resolves the drive, starts its ChangeMedium run and, with --wait, follows it.
func (a *App) swap(ctx context.Context, f swapFlags) error {
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	if err := a.checkPollers(ctx, c, f.host); err != nil {
		return err
	}
	drive, err := a.resolve(ctx, c, activities.ResolveDriveInput{Host: f.host, Domain: f.domain, Vdev: f.vdev}, f.requester)
	if err != nil {
		return err
	}
	in := a.changeInput(f, drive)
	started, err := a.startSwap(ctx, c, in)
	if err != nil {
		return err
	}
	human := a.stdout()
	if f.json {
		human = a.stderr()
	}
	fmt.Fprintf(human, "%s: workflow %s (run %s)\n", describeRequest(in), esc(started.WorkflowID), esc(started.RunID))
	if !f.wait {
		if f.json {
			return writeJSON(a.stdout(), started)
		}
		id := esc(started.WorkflowID)
		fmt.Fprintf(human, "follow it: cdswap status %s   (or cdswap history %s; --wait waits for it)\n", id, id)
		return nil
	}
	return a.followSwap(ctx, c, f, in, started, human)
}

// changeInput is the ChangeMedium request of the flags for the resolved drive.
func (a *App) changeInput(f swapFlags, drive activities.ResolveDriveResult) workflows.ChangeMediumInput {
	in := workflows.ChangeMediumInput{
		Host:      f.host,
		Domain:    f.domain,
		DomID:     drive.DomID,
		Vdev:      f.vdev,
		Medium:    f.medium,
		Format:    f.format,
		Force:     f.force,
		Requester: a.requester(f.requester),
		Reason:    f.reason,
		Ticket:    f.ticket,
	}
	_, in.RequesterSource = a.requesterOf(f.requester)
	if drive.Name != "" {
		// The name, not a domid that changes on every reboot, goes into the search
		// attributes: "what changed on web1" must find swaps asked by domid too.
		in.Domain = drive.Name
	}
	if in.Medium == "" {
		in.Format = ""
	}
	return in
}

// startSwap starts the ChangeMedium run of in, explaining a drive that has one running.
func (a *App) startSwap(ctx context.Context, c client.Client, in workflows.ChangeMediumInput) (swapStarted, error) {
	opts := workflows.StartOptions(in)
	run, err := c.ExecuteWorkflow(ctx, opts, workflows.ChangeMediumName, in)
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) {
		return swapStarted{}, a.alreadyRunning(ctx, c, in, opts.ID, already.RunId)
	}
	if err != nil {
		return swapStarted{}, fmt.Errorf("start the swap of %s on %s (host %s): %w", in.Vdev, in.Domain, in.Host, err)
	}
	return swapStarted{WorkflowID: run.GetID(), RunID: run.GetRunID(), Host: in.Host, Domain: in.Domain,
		DomID: in.DomID, Vdev: in.Vdev, Medium: in.Medium}, nil
}

// followSwap waits (--wait) for the started swap to end, up to --timeout, one line per step
// on human, and reports how it ended.
func (a *App) followSwap(ctx context.Context, c client.Client, f swapFlags, in workflows.ChangeMediumInput, started swapStarted, human io.Writer) error {
	wctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	w := &waiter{c: c, out: human, tty: a.TTY && !f.json, width: a.termWidth(), interval: a.pollInterval()}
	res, runErr := w.wait(wctx, started.WorkflowID, started.RunID)
	if !runEnded(runErr) {
		if wctx.Err() == nil {
			return fmt.Errorf("follow swap %s: %w", started.WorkflowID, runErr)
		}
		why := fmt.Sprintf("still running after %s", f.timeout)
		if ctx.Err() != nil {
			why = "stopped waiting"
		}
		return &userError{msg: fmt.Sprintf("%s; the swap goes on: follow it with cdswap status %s", why, started.WorkflowID), cause: runErr}
	}
	if f.json {
		done := swapDone{swapStarted: started, Outcome: string(res.Outcome), Result: &res}
		if runErr != nil {
			done.Error = workflowMessage(runErr)
			if res.Outcome == "" {
				done.Result = nil
			}
		}
		if err := writeJSON(a.stdout(), done); err != nil {
			return err
		}
	}
	if runErr != nil {
		return swapFailure(in, started.WorkflowID, res, runErr)
	}
	if !f.json {
		fmt.Fprintln(human, describeOutcome(in, res))
	}
	return nil
}

// resolve runs ResolveDrive on the host's queue and explains its failures.
func (a *App) resolve(ctx context.Context, c client.Client, in activities.ResolveDriveInput, requester string) (activities.ResolveDriveResult, error) {
	opts := workflows.ResolveDriveStartOptions(in)
	opts.WorkflowExecutionTimeout = a.resolveTimeout()
	opts.Memo = map[string]any{"requester": a.requester(requester)}
	var out activities.ResolveDriveResult
	run, err := c.ExecuteWorkflow(ctx, opts, workflows.ResolveDriveName, in)
	if err == nil {
		err = run.Get(ctx, &out)
	}
	switch {
	case err == nil:
		return out, nil
	case ctx.Err() != nil:
		return out, ctx.Err()
	case workflows.IsNoWorker(err):
		return out, noWorker(in.Host)
	}
	var svcErr serviceerror.ServiceError
	if errors.As(err, &svcErr) {
		return out, fmt.Errorf("find drive %s of %s on host %s: %w", in.Vdev, in.Domain, in.Host, err)
	}
	return out, &userError{msg: workflowMessage(err), cause: err}
}

// runEnded reports whether err, from waiting for a run, is how the run ended (nil, or a
// WorkflowExecutionError) rather than a failure to wait (a deadline, an interrupt, the
// server gone).
func runEnded(err error) bool {
	var wfErr *temporal.WorkflowExecutionError
	return err == nil || errors.As(err, &wfErr)
}

// alreadyRunning explains a refused start: the drive has a running swap.
func (a *App) alreadyRunning(ctx context.Context, c client.Client, in workflows.ChangeMediumInput, id, runID string) error {
	who, when := "someone", "an unknown time"
	if desc, err := describe(ctx, c, id, runID); err == nil {
		info := desc.GetWorkflowExecutionInfo()
		if r := memoString(info.GetMemo().GetFields(), "requester"); r != "" {
			who = esc(r)
		}
		if t := info.GetStartTime(); t != nil {
			when = t.AsTime().In(a.location()).Format("2006-01-02 15:04:05 MST")
		}
		if runID == "" {
			runID = info.GetExecution().GetRunId()
		}
	}
	return &userError{msg: fmt.Sprintf("drive %s of guest %s on host %s is already being changed by workflow %s (run %s), started by %s at %s: wait for it (cdswap status %s) or cancel it (cdswap cancel %s)",
		in.Vdev, in.Domain, in.Host, id, runID, who, when, id, id)}
}

// swapFailure explains a swap that did not succeed.
func swapFailure(in workflows.ChangeMediumInput, id string, res workflows.ChangeMediumResult, err error) error {
	hint := fmt.Sprintf("every step, attempt and error: cdswap history %s", id)
	if res.Outcome == workflows.OutcomeCanceled {
		what := "keeps its old medium " + esc(res.Old)
		if res.Old == "" {
			what = "stays empty, as it was"
		}
		return &userError{msg: fmt.Sprintf("swap %s was canceled: drive %s of %s on host %s %s", esc(id), esc(in.Vdev), esc(in.Domain), esc(in.Host), what),
			hint: hint, cause: err}
	}
	return &userError{msg: workflowMessage(err), hint: hint, cause: err}
}

// describeRequest says what a swap does, for a person, its fields escaped.
func describeRequest(in workflows.ChangeMediumInput) string {
	dom := esc(in.Domain)
	if in.DomID != 0 && in.Domain != fmt.Sprint(in.DomID) {
		dom = fmt.Sprintf("%s (domid %d)", dom, in.DomID)
	}
	if in.Medium == "" {
		return fmt.Sprintf("eject drive %s of %s on host %s", esc(in.Vdev), dom, esc(in.Host))
	}
	format := ""
	if in.Format != "" && in.Format != activities.FormatRaw {
		format = " (" + esc(in.Format) + ")"
	}
	return fmt.Sprintf("insert %s%s into drive %s of %s on host %s", esc(in.Medium), format, esc(in.Vdev), dom, esc(in.Host))
}

// describeOutcome says how a successful swap ended.
func describeOutcome(in workflows.ChangeMediumInput, res workflows.ChangeMediumResult) string {
	drive := fmt.Sprintf("drive %s of %s on host %s", esc(in.Vdev), esc(in.Domain), esc(in.Host))
	was := ""
	if res.Old != "" {
		was = fmt.Sprintf(" (it held %s)", esc(res.Old))
	}
	switch res.Outcome {
	case workflows.OutcomeChanged:
		return fmt.Sprintf("done: %s now holds %s%s", drive, esc(res.New), was)
	case workflows.OutcomeEjected:
		return fmt.Sprintf("done: %s is empty%s", drive, was)
	case workflows.OutcomeUnchanged:
		if res.New == "" {
			return fmt.Sprintf("done: %s was already empty: nothing to do", drive)
		}
		return fmt.Sprintf("done: %s already held %s: nothing to do", drive, esc(res.New))
	}
	return fmt.Sprintf("done: %s: %s", drive, esc(string(res.Outcome)))
}

// memoString decodes one string field of a memo ("" if absent or not a string).
func memoString(fields map[string]*commonpb.Payload, key string) string {
	return payloadString(fields[key])
}

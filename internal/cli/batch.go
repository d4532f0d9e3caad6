package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/internal/plan"
	"github.com/cdswap/cdswap/internal/termtext"
	"github.com/cdswap/cdswap/workflows"
)

// DefaultBatchWait is how long batch start --wait follows a batch.
const DefaultBatchWait = 24 * time.Hour

// maxPlanFile bounds the plan file read (100,000 rows of 4 KB paths would still fit).
const maxPlanFile = 512 << 20

func (a *App) newBatchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "batch",
		Short: "Change many drives at once: start, follow, pause, resume, stop, cancel, report",
		Long: `batch changes the media of many drives, across hosts, as one FleetSwap workflow that runs one
swap per drive (each the same workflow a single insert or eject starts, so that a batch and a
person never change one drive at once), with a canary wave first, limits on the swaps in
flight in all and per host, and a failure budget.`,
	}
	cmd.AddCommand(a.newBatchStartCmd(), a.newBatchStatusCmd(), a.newBatchListCmd(), a.newBatchReportCmd())
	for _, u := range []struct{ name, short string }{
		{workflows.UpdatePause, "Start no new swaps until resume; the running ones finish"},
		{workflows.UpdateResume, "Go on with a paused batch"},
		{workflows.UpdateStop, "End a batch: start no new swaps, let the running ones finish"},
		{workflows.UpdateCancel, "End a batch now: cancel the running swaps, which put their old media back"},
	} {
		cmd.AddCommand(a.newBatchUpdateCmd(u.name, u.short))
	}
	return cmd
}

// startFlags are batch start's flags.
type startFlags struct {
	planFile  string
	sel       selectors
	hosts     string
	limits    workflows.FleetLimits
	canary    workflows.FleetCanary
	budget    workflows.FleetBudget
	force     bool
	requester string
	reason    string
	ticket    string
	dryRun    bool
	wait      bool
	timeout   time.Duration
	json      bool
	perRun    int
	pageRows  int
	children  bool
}

func (a *App) newBatchStartCmd() *cobra.Command {
	var f startFlags
	cmd := &cobra.Command{
		Use:   "start (--plan FILE | --hosts a,b|all [--holding OLD] [--domain GLOB] [--vdev V] --medium NEW|--eject) [flags]",
		Short: "Check a plan (a file, or selectors the hosts resolve) and start it as a batch",
		Long: `start builds the batch's plan from a CSV or YAML file (columns host, domain, vdev, medium, and
optionally format; medium "eject" empties the drive) or from selectors, which each host's
cdswap-worker resolves from its own records: --hosts, --holding, --domain, --vdev. Every host
checks the new medium against its ISO roots before anything starts; a bad row or a refusal
stops the batch before it starts, each reported with its line. --dry-run prints the resolved
plan and changes nothing.`,
		Args: cobra.NoArgs,
	}
	fl := cmd.Flags()
	fl.StringVar(&f.planFile, "plan", "", "plan file: CSV, or YAML (.yaml, .yml); - reads stdin")
	fl.StringVar(&f.hosts, "hosts", "", "selector: hosts, comma-separated, or all (every host whose cdswap-worker polls)")
	fl.StringVar(&f.sel.holding, "holding", "", "selector: drives that hold this medium now")
	fl.StringVar(&f.sel.domain, "domain", "", "selector: guests whose name matches this glob (web*)")
	fl.StringVar(&f.sel.vdev, "vdev", "", "selector: this drive (hdc, xvdc...)")
	fl.StringVar(&f.sel.medium, "medium", "", "with selectors: the new medium's path on the hosts")
	fl.StringVar(&f.sel.format, "format", "", "with selectors: the new medium's format (default raw)")
	fl.BoolVar(&f.sel.eject, "eject", false, "with selectors: empty the drives")
	fl.IntVar(&f.limits.Global, "limit", workflows.DefaultFleetGlobal, "swaps in flight at most, in all")
	fl.IntVar(&f.limits.PerHost, "per-host", workflows.DefaultFleetPerHost, "swaps in flight at most on one host")
	fl.IntVar(&f.canary.Hosts, "canary-hosts", workflows.DefaultCanaryHosts, "the canary wave: the first drive of each of this many hosts")
	fl.BoolVar(&f.canary.Off, "no-canary", false, "skip the canary wave")
	fl.IntVar(&f.budget.Failures, "max-failures", 0, "failure budget: stop new swaps at this many failed drives")
	fl.Float64Var(&f.budget.Share, "max-failure-share", 0, "failure budget as a share of the drives, 0 to 1 (default 0.05 if no budget is given)")
	fl.BoolVar(&f.force, "force", false, "eject trays that guests keep locked")
	fl.StringVar(&f.requester, "requester", "", "who asks, for the record (default $SUDO_USER, else $USER)")
	fl.StringVar(&f.reason, "reason", "", "why, for the record")
	fl.StringVar(&f.ticket, "ticket", "", "ticket or change id, for the record")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print the resolved plan and what the hosts would refuse; start nothing")
	fl.BoolVar(&f.wait, "wait", false, "follow the batch to its end with a progress bar")
	fl.DurationVar(&f.timeout, "timeout", DefaultBatchWait, "with --wait: stop waiting after this long (the batch goes on)")
	fl.BoolVar(&f.json, "json", false, "print the plan (--dry-run), the started batch or its result as JSON")
	fl.IntVar(&f.perRun, "drives-per-run", 0, "continue-as-new after this many drives (default 1000; for tests)")
	fl.IntVar(&f.pageRows, "page-rows", 0, "drives per plan page (default 500; for tests)")
	fl.BoolVar(&f.children, "bench-children", false, "run the swaps as child workflows, as batches did before rounds (for the fleet benchmark)")
	_ = fl.MarkHidden("bench-children")
	_ = fl.MarkHidden("drives-per-run")
	_ = fl.MarkHidden("page-rows")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		if err := f.check(); err != nil {
			return err
		}
		return a.batchStart(cmd.Context(), f)
	})
	return cmd
}

// check refuses flags that cannot work together.
func (f *startFlags) check() error {
	selecting := f.hosts != "" || f.sel.holding != "" || f.sel.domain != "" || f.sel.vdev != "" || f.sel.medium != "" || f.sel.eject
	switch {
	case f.planFile != "" && selecting:
		return usagef("give --plan or selectors (--hosts, --holding, --domain, --vdev, --medium/--eject), not both")
	case f.planFile == "" && f.hosts == "":
		return usagef("give a plan file (--plan FILE) or the hosts to select drives on (--hosts a,b or --hosts all)")
	case f.planFile == "" && f.sel.medium == "" && !f.sel.eject:
		return usagef("with selectors, give the new medium (--medium /isos/new.iso) or --eject")
	case f.sel.medium != "" && f.sel.eject:
		return usagef("give --medium or --eject, not both")
	case f.sel.eject && f.sel.format != "":
		return usagef("--eject takes no --format")
	case f.limits.Global < 1 || f.limits.PerHost < 1:
		return usagef("--limit and --per-host must be at least 1")
	case f.canary.Hosts < 1 && !f.canary.Off:
		return usagef("--canary-hosts must be at least 1 (or give --no-canary)")
	case f.budget.Failures < 0 || f.budget.Share < 0 || f.budget.Share > 1:
		return usagef("--max-failures must be positive and --max-failure-share between 0 and 1")
	case f.timeout <= 0:
		return usagef("--timeout must be positive, not %s", f.timeout)
	}
	if f.hosts != "" {
		f.sel.hosts = strings.Split(f.hosts, ",")
		for _, h := range f.sel.hosts {
			if h == "all" && len(f.sel.hosts) == 1 {
				break
			}
			if err := workflows.ValidateHost(h); err != nil {
				return flagError(err)
			}
		}
	}
	for _, c := range []struct {
		field string
		check func(string) error
		val   string
	}{{"medium", workflows.ValidateMedium, f.sel.medium}, {"holding", workflows.ValidateMedium, f.sel.holding}, {"vdev", workflows.ValidateVdev, f.sel.vdev}} {
		if c.val == "" {
			continue
		}
		if err := c.check(c.val); err != nil {
			var ie *workflows.InputError
			if errors.As(err, &ie) {
				return usagef("--%s %s", c.field, ie.Problem)
			}
			return err
		}
	}
	return flagError(workflows.ValidateAudit(f.requester, f.reason, f.ticket))
}

// resolvedPlan is what --dry-run prints as JSON.
type resolvedPlan struct {
	Drives  []workflows.FleetDrive `json:"drives"`
	Refused []refusal              `json:"refused"`
}

func (a *App) batchStart(ctx context.Context, f startFlags) error {
	var rows []plan.Row
	if f.planFile != "" {
		data, err := readPlan(f.planFile)
		if err != nil {
			return err
		}
		if rows, err = plan.Parse(f.planFile, data); err != nil {
			return &userError{msg: err.Error(), hint: "fix the lines named, then start the batch again", cause: err}
		}
	}
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var drives []workflows.FleetDrive
	var refused []refusal
	if f.planFile != "" {
		drives, refused, err = a.resolvePlan(ctx, c, rows)
	} else {
		drives, refused, err = a.resolveSelectors(ctx, c, f.sel)
	}
	if err != nil {
		return err
	}
	human := a.stdout()
	if f.json {
		human = a.stderr()
	}
	if f.dryRun {
		if f.json {
			if err := writeJSON(a.stdout(), resolvedPlan{Drives: drives, Refused: refused}); err != nil {
				return err
			}
		} else {
			a.writePlan(human, drives, refused)
		}
		if len(refused) > 0 {
			return &userError{msg: fmt.Sprintf("dry run: %d drive(s) or row(s) would be refused; nothing was started", len(refused))}
		}
		return nil
	}
	if len(refused) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "%d drive(s) or row(s) would be refused; nothing was started:", len(refused))
		for i, r := range refused {
			if i == 50 {
				fmt.Fprintf(&b, "\n  ... and %d more (--dry-run --json lists them all)", len(refused)-50)
				break
			}
			b.WriteString("\n  " + r.String())
		}
		return &userError{msg: b.String(), hint: "fix the plan or the selectors (--dry-run shows the plan), then start again"}
	}
	if len(drives) == 0 {
		return &userError{msg: "the selectors match no drive on the hosts: nothing to do (--dry-run shows what the hosts have)"}
	}
	in := workflows.FleetSwapInput{
		Batch: newBatchID(time.Now()), Total: len(drives), HostTotals: map[string]int{},
		Limits: f.limits, Canary: f.canary, Budget: f.budget, Force: f.force,
		Requester: a.requester(f.requester), Reason: f.reason, Ticket: f.ticket, DrivesPerRun: f.perRun, BenchChildren: f.children,
	}
	for _, d := range drives {
		in.HostTotals[d.Host]++
	}
	pages := plan.Paginate(drives, f.pageRows, 0)
	in.Pages = len(pages)
	if err := plan.SavePages(ctx, c, in.Batch, pages); err != nil {
		plan.ReleasePages(context.WithoutCancel(ctx), c, in.Batch, len(pages))
		return err
	}
	run, err := c.ExecuteWorkflow(ctx, workflows.FleetStartOptions(in), workflows.FleetSwapName, in)
	if err != nil {
		plan.ReleasePages(context.WithoutCancel(ctx), c, in.Batch, len(pages))
		return fmt.Errorf("start batch %s: %w", in.Batch, err)
	}
	fmt.Fprintf(human, "batch %s: %d drive(s) on %d host(s), %d in flight at most (%d per host), workflow run %s\n",
		in.Batch, in.Total, len(in.HostTotals), f.limits.Global, f.limits.PerHost, run.GetRunID())
	if !f.wait {
		if f.json {
			return writeJSON(a.stdout(), map[string]any{"batch": in.Batch, "run_id": run.GetRunID(), "drives": in.Total})
		}
		fmt.Fprintf(human, "follow it: cdswap batch status %s   (pause, resume, stop, cancel, report take the same id)\n", in.Batch)
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	res, err := a.followBatch(wctx, c, in.Batch, human, f.json)
	if err != nil {
		if wctx.Err() != nil && ctx.Err() == nil {
			return &userError{msg: fmt.Sprintf("still running after %s; the batch goes on: cdswap batch status %s", f.timeout, in.Batch), cause: err}
		}
		return err
	}
	return a.batchEnded(res, f.json)
}

// readPlan reads the plan file, or stdin for "-".
func readPlan(name string) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r = os.Stdin
	} else {
		fh, err := os.Open(name)
		if err != nil {
			return nil, &userError{msg: fmt.Sprintf("cannot read the plan: %v", err), cause: err}
		}
		defer fh.Close()
		r = fh
	}
	data, err := io.ReadAll(io.LimitReader(r, maxPlanFile+1))
	if err != nil {
		return nil, &userError{msg: fmt.Sprintf("cannot read the plan %s: %v", name, err), cause: err}
	}
	if len(data) > maxPlanFile {
		return nil, &userError{msg: fmt.Sprintf("the plan %s is larger than %d MB: split it", name, maxPlanFile>>20)}
	}
	return data, nil
}

// writePlan prints a resolved plan and its refusals.
func (a *App) writePlan(w io.Writer, drives []workflows.FleetDrive, refused []refusal) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LINE\tHOST\tDOMAIN\tDOMID\tVDEV\tHOLDS\tNEW")
	for _, d := range drives {
		line := "-"
		if d.Line > 0 {
			line = fmt.Sprint(d.Line)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", line, termtext.Truncate(d.Host, colHost), termtext.Truncate(d.Domain, colDomain),
			d.DomID, termtext.Truncate(d.Vdev, colVdev), mediumCell(d.Old, "(empty)"), mediumCell(d.Medium, "(eject)"))
	}
	_ = tw.Flush()
	hosts := map[string]bool{}
	for _, d := range drives {
		hosts[d.Host] = true
	}
	fmt.Fprintf(w, "%d drive(s) on %d host(s)\n", len(drives), len(hosts))
	if len(refused) > 0 {
		fmt.Fprintf(w, "%d refused:\n", len(refused))
		for _, r := range refused {
			fmt.Fprintf(w, "  %s\n", r)
		}
	}
}

func mediumCell(m, empty string) string {
	if m == "" {
		return empty
	}
	return termtext.Truncate(m, colMedium)
}

// batchEnded reports a finished batch; a batch that did not end done is a failure.
func (a *App) batchEnded(res workflows.FleetSwapResult, asJSON bool) error {
	if asJSON {
		if err := writeJSON(a.stdout(), res); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(a.stdout(), describeBatch(res))
	}
	if res.Status != workflows.FleetDone || res.Failed > 0 {
		return &userError{msg: fmt.Sprintf("batch %s ended %s with %d failed drive(s)%s", res.Batch, res.Status, res.Failed, reasonNote(res.Reason)),
			hint: fmt.Sprintf("every drive's outcome: cdswap batch report %s", res.Batch)}
	}
	return nil
}

func reasonNote(r string) string {
	if r == "" {
		return ""
	}
	return ": " + esc(r)
}

// describeBatch says how a batch ended, in one line.
func describeBatch(r workflows.FleetSwapResult) string {
	return fmt.Sprintf("batch %s %s: %d of %d drive(s) done: %d changed, %d unchanged, %d failed (%d restored), %d canceled, %d busy; %d not started%s",
		r.Batch, r.Status, r.Done, r.Total, r.Changed, r.Unchanged, r.Failed, r.Restored, r.Canceled, busyCount(r), r.NotStarted, reasonNote(r.Reason))
}

// busyCount is how many drives of a finished batch were busy. FleetSwapResult's Busy
// list (up to 1,000 drives) shadows the count of its embedded FleetCounters, in Go and in
// its JSON, so a result read back from Temporal has only the list.
func busyCount(r workflows.FleetSwapResult) int {
	return max(r.FleetCounters.Busy, len(r.Busy))
}

// batchID checks the ID argument.
func batchID(args []string) (string, error) {
	if len(args) != 1 {
		return "", usagef("expected one batch ID, got %d arguments", len(args))
	}
	if err := checkID(args[0]); err != nil {
		return "", err
	}
	return args[0], nil
}

func (a *App) newBatchStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show a batch's progress: done, changed, unchanged, failed, restored, running, waiting, per host",
		Args:  cobra.ArbitraryArgs,
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the progress (or the result of a finished batch) as JSON")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		id, err := batchID(args)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		c, err := a.dial(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		p, res, err := a.batchState(ctx, c, id)
		if err != nil {
			return err
		}
		if res != nil {
			if asJSON {
				return writeJSON(a.stdout(), res)
			}
			fmt.Fprintln(a.stdout(), describeBatch(*res))
			return nil
		}
		if asJSON {
			return writeJSON(a.stdout(), p)
		}
		a.writeProgress(a.stdout(), p)
		return nil
	})
	return cmd
}

// batchState is a running batch's progress, or a finished one's result.
func (a *App) batchState(ctx context.Context, c client.Client, id string) (workflows.FleetProgress, *workflows.FleetSwapResult, error) {
	desc, err := describe(ctx, c, id, "")
	if err != nil {
		return workflows.FleetProgress{}, nil, batchNotFound(a.cfg, id, err)
	}
	if desc.GetWorkflowExecutionInfo().GetType().GetName() != workflows.FleetSwapName {
		return workflows.FleetProgress{}, nil, &userError{msg: fmt.Sprintf("%s is not a batch but a %s run: cdswap batch list shows the batches", esc(id), esc(desc.GetWorkflowExecutionInfo().GetType().GetName()))}
	}
	if desc.GetWorkflowExecutionInfo().GetCloseTime() == nil {
		v, err := c.QueryWorkflow(ctx, id, "", workflows.ProgressQuery)
		if err == nil {
			var p workflows.FleetProgress
			if err = v.Get(&p); err == nil {
				return p, nil, nil
			}
		}
		if desc.GetWorkflowExecutionInfo().GetCloseTime() == nil {
			return workflows.FleetProgress{}, nil, fmt.Errorf("ask batch %s for its progress (is a cdswap-worker running? every worker runs batches): %w", id, err)
		}
	}
	var res workflows.FleetSwapResult
	err = c.GetWorkflow(ctx, id, "").Get(ctx, &res)
	if err != nil && res.Batch == "" {
		return workflows.FleetProgress{}, nil, &userError{msg: fmt.Sprintf("batch %s ended without a result: %s", esc(id), workflowMessage(err)), cause: err}
	}
	return workflows.FleetProgress{}, &res, nil
}

// batchNotFound explains an id with no batch.
func batchNotFound(cfg ClientConfig, id string, err error) error {
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return &userError{msg: fmt.Sprintf("no batch %s in namespace %s (or it is past the namespace's retention): cdswap batch list shows recent ones", esc(id), cfg.NamespaceName()), cause: err}
	}
	return err
}

// writeProgress prints a running batch's progress.
func (a *App) writeProgress(w io.Writer, p workflows.FleetProgress) {
	phase := ""
	if p.Canary {
		phase = " (canary wave)"
	}
	fmt.Fprintf(w, "batch %s: %s%s%s, run %d, page %d of %d\n", esc(p.Batch), p.Status, phase, reasonNote(p.Reason), p.Run, p.Page+1, p.Pages)
	fmt.Fprintf(w, "%d of %d done: %d changed, %d unchanged, %d failed (%d restored), %d canceled, %d busy; %d running, %d waiting; failure budget %d\n",
		p.Done, p.Total, p.Changed, p.Unchanged, p.Failed, p.Restored, p.Canceled, p.Busy, p.Running, p.Waiting, p.FailureBudget)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tTOTAL\tDONE\tCHANGED\tUNCHANGED\tFAILED\tRESTORED\tRUNNING\tWAITING")
	for _, h := range sortedKeys(p.Hosts) {
		hp := p.Hosts[h]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", termtext.Truncate(h, colHost), hp.Total, hp.Done, hp.Changed, hp.Unchanged, hp.Failed, hp.Restored, hp.Running, hp.Waiting)
	}
	_ = tw.Flush()
}

func (a *App) newBatchUpdateCmd(name, short string) *cobra.Command {
	var (
		asJSON            bool
		requester, reason string
	)
	cmd := &cobra.Command{Use: name + " ID", Short: short, Args: cobra.ArbitraryArgs}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the batch's progress after the change as JSON")
	cmd.Flags().StringVar(&requester, "requester", "", "who asks, for the record (default $SUDO_USER, else $USER)")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		id, err := batchID(args)
		if err != nil {
			return err
		}
		u := workflows.FleetUpdate{Requester: a.requester(requester), Reason: reason}
		if err := flagError(workflows.ValidateAudit(u.Requester, u.Reason, "")); err != nil {
			return err
		}
		ctx := cmd.Context()
		c, err := a.dial(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{WorkflowID: id, UpdateName: name, Args: []any{u},
			WaitForStage: client.WorkflowUpdateStageCompleted})
		var p workflows.FleetProgress
		if err == nil {
			err = h.Get(ctx, &p)
		}
		if err != nil {
			var nf *serviceerror.NotFound
			if errors.As(err, &nf) {
				return &userError{msg: fmt.Sprintf("no running batch %s: it ended, or the id is wrong (cdswap batch list)", esc(id)), cause: err}
			}
			return &userError{msg: fmt.Sprintf("%s refused: %s", name, workflowMessage(err)), hint: "cdswap batch status " + id + " shows where it is", cause: err}
		}
		if asJSON {
			return writeJSON(a.stdout(), p)
		}
		a.writeProgress(a.stdout(), p)
		return nil
	})
	return cmd
}

// batchSummary is one row of batch list.
type batchSummary struct {
	Batch     string    `json:"batch"`
	Started   time.Time `json:"started"`
	Status    string    `json:"status"`
	Requester string    `json:"requester"`
	Ticket    string    `json:"ticket"`
}

func (a *App) newBatchListCmd() *cobra.Command {
	var (
		asJSON bool
		limit  int
	)
	cmd := &cobra.Command{Use: "list", Short: "List recent batches, newest first", Args: cobra.NoArgs}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		c, err := a.dial(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: a.cfg.NamespaceName(),
			Query: fmt.Sprintf("WorkflowType = %s", quote(workflows.FleetSwapName)), PageSize: int32(limit)})
		if err != nil {
			return fmt.Errorf("list the batches: %w", err)
		}
		var out []batchSummary
		seen := map[string]bool{}
		for _, e := range resp.GetExecutions() {
			id := e.GetExecution().GetWorkflowId()
			if seen[id] {
				continue // an earlier run of a batch that continued as new
			}
			seen[id] = true
			sa := e.GetSearchAttributes().GetIndexedFields()
			out = append(out, batchSummary{Batch: id, Started: e.GetStartTime().AsTime(),
				Status:    outcomeOf(e.GetStatus(), sa[workflows.CdswapOutcome.GetName()]),
				Requester: payloadString(sa[workflows.CdswapRequester.GetName()]), Ticket: payloadString(sa[workflows.CdswapTicket.GetName()])})
		}
		if asJSON {
			return writeJSON(a.stdout(), out)
		}
		tw := tabwriter.NewWriter(a.stdout(), 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "STARTED\tBATCH\tSTATUS\tREQUESTER\tTICKET")
		for _, b := range out {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b.Started.In(a.location()).Format("2006-01-02 15:04:05"), esc(b.Batch), esc(b.Status),
				orDash(termtext.Truncate(b.Requester, colRequester)), orDash(termtext.Truncate(b.Ticket, colTicket)))
		}
		return tw.Flush()
	})
	return cmd
}

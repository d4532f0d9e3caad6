package cli

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/internal/plan"
	"github.com/cdswap/cdswap/internal/termtext"
	"github.com/cdswap/cdswap/workflows"
)

// reportParallel bounds the swaps' results fetched at once.
const reportParallel = 16

// ReportRow is one drive of a batch's report.
type ReportRow struct {
	Line    int    `json:"line,omitempty"`
	Host    string `json:"host"`
	Domain  string `json:"domain"`
	DomID   uint32 `json:"domid"`
	Vdev    string `json:"vdev"`
	Outcome string `json:"outcome"`
	// Old is the medium the drive held before (the swap's, else the inventory's); New
	// the medium asked for ("" = eject).
	Old   string `json:"old"`
	New   string `json:"new"`
	Error string `json:"error,omitempty"`
	// SwapID and RunID name the drive's ChangeMedium run ("" if it never started).
	SwapID string `json:"swap_id,omitempty"`
	RunID  string `json:"run_id,omitempty"`
}

// NotStarted is the outcome of a drive whose swap never started (halted, stopped,
// canceled, or busy with another swap).
const NotStarted = "not-started"

func (a *App) newBatchReportCmd() *cobra.Command {
	var asJSON, asCSV bool
	cmd := &cobra.Command{
		Use:   "report ID",
		Short: "Every drive of a batch with its outcome, old and new medium, error and swap id",
		Long: `report joins the batch's plan (kept in Temporal with the batch) with the swaps the batch ran
(found by their CdswapBatch search attribute) and each swap's result.`,
		Args: cobra.ArbitraryArgs,
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.Flags().BoolVar(&asCSV, "csv", false, "print as CSV")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		id, err := batchID(args)
		if err != nil {
			return err
		}
		if asJSON && asCSV {
			return usagef("give --json or --csv, not both")
		}
		ctx := cmd.Context()
		c, err := a.dial(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		rows, err := BatchReport(ctx, c, a.cfg.NamespaceName(), id)
		if err != nil {
			return err
		}
		switch {
		case asJSON:
			return writeJSON(a.stdout(), rows)
		case asCSV:
			cw := csv.NewWriter(a.stdout())
			_ = cw.Write([]string{"line", "host", "domain", "domid", "vdev", "outcome", "old", "new", "error", "swap_id", "run_id"})
			for _, r := range rows {
				// A spreadsheet must not run what a guest's name says: a cell starting
				// with =, +, - or @ is quoted as text (csvCell).
				_ = cw.Write([]string{strconv.Itoa(r.Line), csvCell(r.Host), csvCell(r.Domain), strconv.FormatUint(uint64(r.DomID), 10),
					csvCell(r.Vdev), r.Outcome, csvCell(r.Old), csvCell(r.New), csvCell(r.Error), r.SwapID, r.RunID})
			}
			cw.Flush()
			return cw.Error()
		}
		tw := tabwriter.NewWriter(a.stdout(), 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tDOMAIN\tVDEV\tOUTCOME\tOLD\tNEW\tERROR\tSWAP")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", termtext.Truncate(r.Host, colHost), termtext.Truncate(r.Domain, colDomain),
				termtext.Truncate(r.Vdev, colVdev), r.Outcome, mediumCell(r.Old, "(empty)"), mediumCell(r.New, "(eject)"),
				orDash(termtext.Truncate(r.Error, colReason*2)), orDash(esc(r.SwapID)))
		}
		return tw.Flush()
	})
	return cmd
}

// csvCell keeps a spreadsheet from reading a cell as a formula.
func csvCell(s string) string {
	if s != "" && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@') {
		return "'" + s
	}
	return s
}

// BatchReport builds a batch's report: the plan's drives, in plan order, each with the
// result of the ChangeMedium run the batch started for it.
func BatchReport(ctx context.Context, c client.Client, namespace, batch string) ([]ReportRow, error) {
	var rows []ReportRow
	for page := 0; ; page++ {
		drives, err := plan.ReadPage(ctx, c, batch, page)
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) && appErr.Type() == workflows.ErrPlanPageMissing {
			if page == 0 {
				return nil, &userError{msg: fmt.Sprintf("no plan of batch %s in namespace %s: check the id (cdswap batch list), or the batch is past the namespace's retention", esc(batch), namespace), cause: err}
			}
			break
		}
		if err != nil {
			return nil, err
		}
		for _, d := range drives {
			rows = append(rows, ReportRow{Line: d.Line, Host: d.Host, Domain: d.Domain, DomID: d.DomID, Vdev: d.Vdev,
				Outcome: NotStarted, Old: d.Old, New: d.Medium})
		}
	}
	runs, err := batchRuns(ctx, c, namespace, batch)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, reportParallel)
	for i := range rows {
		r := &rows[i]
		run, ok := runs[workflows.WorkflowID(r.Host, r.DomID, r.Vdev)]
		if !ok {
			continue
		}
		r.SwapID, r.RunID = workflows.WorkflowID(r.Host, r.DomID, r.Vdev), run.runID
		if run.running {
			r.Outcome = string(workflows.OutcomeRunning)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			fillOutcome(ctx, c, r)
		}()
	}
	wg.Wait()
	return rows, ctx.Err()
}

// swapRun is a batch's ChangeMedium run of a drive.
type swapRun struct {
	runID   string
	running bool
}

// batchRuns maps the swap ids of a batch's ChangeMedium runs to their runs.
func batchRuns(ctx context.Context, c client.Client, namespace, batch string) (map[string]swapRun, error) {
	runs := map[string]swapRun{}
	q := fmt.Sprintf("%s = %s AND WorkflowType = %s", workflows.CdswapBatch.GetName(), quote(batch), quote(workflows.ChangeMediumName))
	var token []byte
	for {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: namespace, Query: q, PageSize: 1000, NextPageToken: token})
		if err != nil {
			return nil, fmt.Errorf("list the swaps of batch %s: %w", batch, err)
		}
		for _, e := range resp.GetExecutions() {
			runs[e.GetExecution().GetWorkflowId()] = swapRun{runID: e.GetExecution().GetRunId(),
				running: e.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING}
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			return runs, nil
		}
	}
}

// fillOutcome sets a row's outcome from its swap's result.
func fillOutcome(ctx context.Context, c client.Client, r *ReportRow) {
	var res workflows.ChangeMediumResult
	err := c.GetWorkflow(ctx, r.SwapID, r.RunID).Get(ctx, &res)
	if err != nil {
		if got, ok := workflows.ResultFromError(err); ok {
			res = got
		} else {
			r.Outcome, r.Error = "ended", workflows.ErrorMessage(err, "the swap")
			return
		}
	}
	r.Outcome, r.Error = string(res.Outcome), res.Error
	if res.Outcome != workflows.OutcomeRefused {
		r.Old = res.Old
	}
	if res.Action != "" {
		r.Error += "; " + res.Action
	}
}

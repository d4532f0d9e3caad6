package cli

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdswap/cdswap/internal/termtext"
	"github.com/cdswap/cdswap/workflows"
)

// SwapSummary is one swap as `cdswap list` shows it, from visibility: its search attributes
// and memo.
type SwapSummary struct {
	WorkflowID string `json:"workflow_id"`
	RunID      string `json:"run_id"`
	Host       string `json:"host"`
	Domain     string `json:"domain"`
	Vdev       string `json:"vdev"`
	// Medium is the CdswapMedium search attribute: the path, or its beginning if the path
	// is longer than a Keyword holds (workflows.KeywordMedium); "" for an eject.
	Medium  string `json:"medium"`
	Status  string `json:"status"`
	Outcome string `json:"outcome"`
	// Requester, Reason and Ticket come from the memo (the search attributes for runs
	// without one).
	Requester string `json:"requester"`
	// RequesterSource says how the requester was known: mtls, api-key-jwt-unverified,
	// api-key, flag or os ("" for swaps started before it was recorded).
	RequesterSource string     `json:"requester_source,omitempty"`
	Reason          string     `json:"reason"`
	Ticket          string     `json:"ticket"`
	Batch           string     `json:"batch,omitempty"`
	Started         time.Time  `json:"started"`
	Ended           *time.Time `json:"ended,omitempty"`
}

// listFilter selects runs by their search attributes and start time. Empty fields select
// everything.
type listFilter struct {
	host, domain, vdev, outcome string
	// medium is a full path: the query compares the part CdswapMedium keeps of it.
	medium            string
	requester, ticket string
	batch             string
	since             time.Time
	until             time.Time // zero = now
	types             []string  // workflow types; nil = ChangeMedium
}

// statusOutcomes are the outcomes that a run's status tells and its CdswapOutcome may not:
// a terminated or timed-out run never set it, and one that still runs says "running" as a
// terminated one does.
var statusOutcomes = map[string]string{
	string(workflows.OutcomeRunning): "Running",
	"terminated":                     "Terminated",
	"timed-out":                      "TimedOut",
}

// query is the visibility query for f.
func (f listFilter) query() string {
	types := f.types
	if len(types) == 0 {
		types = []string{workflows.ChangeMediumName}
	}
	var q []string
	if len(types) == 1 {
		q = append(q, "WorkflowType = "+quote(types[0]))
	} else {
		quoted := make([]string, len(types))
		for i, t := range types {
			quoted[i] = quote(t)
		}
		q = append(q, "WorkflowType IN ("+strings.Join(quoted, ", ")+")")
	}
	q = append(q, "StartTime > "+quote(f.since.UTC().Format(time.RFC3339Nano)))
	if !f.until.IsZero() {
		q = append(q, "StartTime <= "+quote(f.until.UTC().Format(time.RFC3339Nano)))
	}
	medium := ""
	if f.medium != "" {
		medium = workflows.KeywordMedium(f.medium)
	}
	outcome := f.outcome
	if status, ok := statusOutcomes[outcome]; ok {
		q = append(q, "ExecutionStatus = "+quote(status))
		outcome = ""
	}
	for _, c := range []struct {
		key, val string
	}{
		{workflows.CdswapHost.GetName(), f.host},
		{workflows.CdswapDomain.GetName(), f.domain},
		{workflows.CdswapVdev.GetName(), f.vdev},
		{workflows.CdswapMedium.GetName(), medium},
		{workflows.CdswapOutcome.GetName(), outcome},
		{workflows.CdswapRequester.GetName(), f.requester},
		{workflows.CdswapTicket.GetName(), f.ticket},
		{workflows.CdswapBatch.GetName(), f.batch},
	} {
		if c.val != "" {
			q = append(q, c.key+" = "+quote(c.val))
		}
	}
	return strings.Join(q, " AND ")
}

// parseSince reads --since: a duration back from now (90m, 24h, 7d) or a time (RFC 3339).
func parseSince(s string, now time.Time) (time.Time, error) {
	return parseWhen("--since", s, now)
}

// parseWhen reads a time flag: a duration back from now (90m, 24h, 7d) or a time (RFC 3339).
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.ParseFloat(days, 64); err == nil && n > 0 {
			return now.Add(-time.Duration(n * 24 * float64(time.Hour))), nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return time.Time{}, usagef("%s %q: give a positive duration (90m, 24h, 7d) or a time (2026-11-27T08:00:00Z)", flag, s)
	}
	return now.Add(-d), nil
}

// filterFlags are the selection flags list and audit export share.
type filterFlags struct {
	f            listFilter
	since, until string
}

// add registers the flags on fl.
func (ff *filterFlags) add(fl *pflag.FlagSet) {
	f := &ff.f
	fl.StringVar(&f.host, "host", "", "only swaps on this dom0 host")
	fl.StringVar(&f.domain, "domain", "", "only swaps of this guest (by name)")
	fl.StringVar(&f.vdev, "vdev", "", "only swaps of this drive")
	fl.StringVar(&f.medium, "medium", "", "only swaps to this medium (its full path)")
	fl.StringVar(&f.requester, "requester", "", "only swaps asked by this requester (as recorded: a certificate subject, an API key's subject, a user)")
	fl.StringVar(&f.ticket, "ticket", "", "only swaps under this ticket")
	fl.StringVar(&f.outcome, "outcome", "", "only swaps with this outcome (running, changed, ejected, failed-restored, terminated...)")
	fl.StringVar(&f.batch, "batch", "", "only swaps of this batch")
	fl.StringVar(&ff.since, "since", "24h", "from: a duration back from now (90m, 24h, 7d) or a time (RFC 3339)")
	fl.StringVar(&ff.until, "until", "", "to: a duration back from now or a time (default now)")
}

// parse checks the flags and returns the filter.
func (ff *filterFlags) parse(now time.Time) (listFilter, error) {
	f := ff.f
	var err error
	if f.since, err = parseWhen("--since", ff.since, now); err != nil {
		return f, err
	}
	if ff.until != "" {
		if f.until, err = parseWhen("--until", ff.until, now); err != nil {
			return f, err
		}
		if !f.until.After(f.since) {
			return f, usagef("--until %s is not after --since %s: the window is empty", f.until.UTC().Format(time.RFC3339), f.since.UTC().Format(time.RFC3339))
		}
	}
	if err := checkDrive(f.host, f.domain, f.vdev); err != nil {
		return f, err
	}
	for _, c := range []struct {
		field, val string
		max        int
	}{
		{"outcome", f.outcome, 32},
		{workflows.FieldRequester, f.requester, workflows.MaxRequester},
		{workflows.FieldTicket, f.ticket, workflows.MaxTicket},
		{workflows.FieldBatch, f.batch, workflows.MaxBatchID},
	} {
		if err := workflows.ValidateText(c.field, c.val, c.max, false); err != nil {
			return f, flagError(err)
		}
	}
	if err := workflows.ValidateMedium(f.medium); err != nil {
		return f, flagError(err)
	}
	return f, nil
}

func (a *App) newListCmd() *cobra.Command {
	var ff filterFlags
	var limit int
	var asJSON, asCSV bool
	cmd := &cobra.Command{
		Use:   "list [--host H] [--requester R] [--batch B] [--since 24h] [--until T] [--json|--csv]",
		Short: "List swaps: what changed where, when, and who asked",
		Long: `list shows the swaps started in a window (the last 24 hours by default), newest first,
from Temporal's visibility store (their search attributes and memo): host, guest, drive,
medium, outcome, who asked and why, the ticket and the batch. Every filter given must match.
--json and --csv print every field as it was recorded; the table escapes and cuts them.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			f, err := ff.parse(time.Now())
			if err != nil {
				return err
			}
			if limit <= 0 {
				return usagef("--limit must be positive, not %d", limit)
			}
			if asJSON && asCSV {
				return usagef("--json and --csv: give one")
			}
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			swaps, err := listSwaps(ctx, c, a.cfg.NamespaceName(), f, limit)
			if err != nil {
				return err
			}
			switch {
			case asJSON:
				return writeJSON(a.stdout(), struct {
					Swaps []SwapSummary `json:"swaps"`
				}{swaps})
			case asCSV:
				return writeListCSV(a.stdout(), swaps)
			}
			a.writeList(swaps, f)
			return nil
		}),
	}
	fl := cmd.Flags()
	ff.add(fl)
	fl.IntVar(&limit, "limit", 200, "at most this many swaps")
	fl.BoolVar(&asJSON, "json", false, "print as JSON")
	fl.BoolVar(&asCSV, "csv", false, "print as CSV (RFC 4180, with a header)")
	return cmd
}

// listClient is the part of client.Client listSwaps needs.
type listClient interface {
	ListWorkflow(ctx context.Context, req *workflowservice.ListWorkflowExecutionsRequest) (*workflowservice.ListWorkflowExecutionsResponse, error)
}

// eachExecution pages through the runs f selects, newest first, calling fn for each until it
// returns false or an error.
func eachExecution(ctx context.Context, c listClient, ns string, f listFilter, pageSize int, fn func(*workflowpb.WorkflowExecutionInfo) (bool, error)) error {
	var token []byte
	for {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: ns, Query: f.query(), PageSize: int32(min(max(pageSize, 1), 1000)), NextPageToken: token,
		})
		if err != nil {
			return fmt.Errorf("list swaps (%s): %w", f.query(), err)
		}
		for _, info := range resp.GetExecutions() {
			more, err := fn(info)
			if err != nil || !more {
				return err
			}
		}
		token = resp.GetNextPageToken()
		if len(token) == 0 {
			return nil
		}
	}
}

// listSwaps returns at most limit runs f selects, newest first.
func listSwaps(ctx context.Context, c listClient, ns string, f listFilter, limit int) ([]SwapSummary, error) {
	out := []SwapSummary{}
	err := eachExecution(ctx, c, ns, f, limit, func(info *workflowpb.WorkflowExecutionInfo) (bool, error) {
		out = append(out, summaryOf(info))
		return len(out) < limit, nil
	})
	return out, err
}

// summaryOf is a run as visibility tells it.
func summaryOf(info *workflowpb.WorkflowExecutionInfo) SwapSummary {
	sa := info.GetSearchAttributes().GetIndexedFields()
	memo := info.GetMemo().GetFields()
	// The memo holds the audit fields whole; the search attributes are the fallback.
	either := func(memoKey string, key interface{ GetName() string }) string {
		if v := memoString(memo, memoKey); v != "" {
			return v
		}
		return payloadString(sa[key.GetName()])
	}
	s := SwapSummary{
		WorkflowID:      info.GetExecution().GetWorkflowId(),
		RunID:           info.GetExecution().GetRunId(),
		Host:            payloadString(sa[workflows.CdswapHost.GetName()]),
		Domain:          payloadString(sa[workflows.CdswapDomain.GetName()]),
		Vdev:            payloadString(sa[workflows.CdswapVdev.GetName()]),
		Medium:          payloadString(sa[workflows.CdswapMedium.GetName()]),
		Status:          statusName(info.GetStatus()),
		Outcome:         outcomeOf(info.GetStatus(), sa[workflows.CdswapOutcome.GetName()]),
		Requester:       either(workflows.MemoRequester, workflows.CdswapRequester),
		RequesterSource: memoString(memo, workflows.MemoRequesterSource),
		Reason:          memoString(memo, workflows.MemoReason),
		Ticket:          either(workflows.MemoTicket, workflows.CdswapTicket),
		Batch:           payloadString(sa[workflows.CdswapBatch.GetName()]),
		Started:         info.GetStartTime().AsTime(),
	}
	if s.Batch == "" {
		s.Batch = memoString(memo, workflows.MemoBatch)
	}
	if t := info.GetCloseTime(); t != nil && info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		ct := t.AsTime()
		s.Ended = &ct
	}
	return s
}

// writeList prints swaps as a table.
func (a *App) writeList(swaps []SwapSummary, f listFilter) {
	loc := a.location()
	if len(swaps) == 0 {
		fmt.Fprintf(a.stdout(), "no swap started since %s matches\n", f.since.In(loc).Format("2006-01-02 15:04:05 MST"))
		return
	}
	tw := tabwriter.NewWriter(a.stdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STARTED\tHOST\tDOMAIN\tVDEV\tMEDIUM\tOUTCOME\tREQUESTER\tREASON\tTICKET\tBATCH\tID")
	for _, s := range swaps {
		medium := termtext.Truncate(s.Medium, colMedium)
		if medium == "" {
			medium = "(eject)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Started.In(loc).Format("2006-01-02 15:04:05"),
			termtext.Truncate(s.Host, colHost), termtext.Truncate(s.Domain, colDomain), termtext.Truncate(s.Vdev, colVdev), medium,
			termtext.Truncate(s.Outcome, colOutcome), orDash(termtext.Truncate(s.Requester, colRequester)),
			orDash(termtext.Truncate(s.Reason, colReason)), orDash(termtext.Truncate(s.Ticket, colTicket)),
			orDash(termtext.Truncate(s.Batch, colBatch)), esc(s.WorkflowID))
	}
	_ = tw.Flush()
}

// listCSVHeader names the columns of list --csv.
var listCSVHeader = []string{"workflow_id", "run_id", "started", "ended", "host", "domain", "vdev", "medium", "status", "outcome",
	"requester", "requester_source", "reason", "ticket", "batch"}

// writeListCSV prints swaps as CSV.
func writeListCSV(w io.Writer, swaps []SwapSummary) error {
	cw := newCSVWriter(w)
	if err := cw.Write(listCSVHeader); err != nil {
		return err
	}
	for _, s := range swaps {
		if err := cw.Write([]string{s.WorkflowID, s.RunID, csvTime(&s.Started), csvTime(s.Ended), s.Host, s.Domain, s.Vdev, s.Medium,
			s.Status, s.Outcome, s.Requester, s.RequesterSource, s.Reason, s.Ticket, s.Batch}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// csvWriter is a csv.Writer whose fields are escaped (termtext.Escape) before encoding/csv
// quotes them: a line break, an escape sequence or a bidirectional override in a reason or a
// path then shows as \n, \x1b, \u202e in a terminal or a spreadsheet, and each record stays on
// one line. A backslash is doubled, so the escapes read back unambiguously.
type csvWriter struct{ *csv.Writer }

func newCSVWriter(w io.Writer) csvWriter { return csvWriter{csv.NewWriter(w)} }

// Write writes one record, its fields escaped.
func (w csvWriter) Write(record []string) error {
	escaped := make([]string, len(record))
	for i, f := range record {
		escaped[i] = termtext.Escape(f)
	}
	return w.Writer.Write(escaped)
}

// csvTime is t in RFC 3339 (UTC, with nanoseconds), "" for nil.
func csvTime(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// statusName is a run status in lower case ("running", "timed-out").
func statusName(s enumspb.WorkflowExecutionStatus) string {
	switch s {
	case enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
		return "running"
	case enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED:
		return "completed"
	case enumspb.WORKFLOW_EXECUTION_STATUS_FAILED:
		return "failed"
	case enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED:
		return "canceled"
	case enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED:
		return "terminated"
	case enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW:
		return "continued-as-new"
	case enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
		return "timed-out"
	}
	return strings.ToLower(s.String())
}

// outcomeOf is the CdswapOutcome search attribute, or the run's status when the run ended
// without setting it (terminated, timed out).
func outcomeOf(status enumspb.WorkflowExecutionStatus, sa *commonpb.Payload) string {
	o := payloadString(sa)
	if o == "" || (o == string(workflows.OutcomeRunning) && status != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING) {
		return statusName(status)
	}
	return o
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

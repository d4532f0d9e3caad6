package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdswap/cdswap/internal/termtext"
	"github.com/cdswap/cdswap/workflows"
)

// SwapSummary is one swap as `cdswap list` shows it, from visibility: its search attributes
// and memo.
type SwapSummary struct {
	WorkflowID string     `json:"workflow_id"`
	RunID      string     `json:"run_id"`
	Host       string     `json:"host"`
	Domain     string     `json:"domain"`
	Vdev       string     `json:"vdev"`
	Medium     string     `json:"medium"`
	Status     string     `json:"status"`
	Outcome    string     `json:"outcome"`
	Requester  string     `json:"requester"`
	Reason     string     `json:"reason"`
	Ticket     string     `json:"ticket"`
	Started    time.Time  `json:"started"`
	Ended      *time.Time `json:"ended,omitempty"`
}

// listFilter selects swaps.
type listFilter struct {
	host, domain, vdev, outcome string
	since                       time.Time
}

// query is the visibility query for f.
func (f listFilter) query() string {
	q := []string{
		"WorkflowType = " + quote(workflows.ChangeMediumName),
		"StartTime > " + quote(f.since.UTC().Format(time.RFC3339Nano)),
	}
	for _, c := range []struct {
		key, val string
	}{
		{workflows.CdswapHost.GetName(), f.host},
		{workflows.CdswapDomain.GetName(), f.domain},
		{workflows.CdswapVdev.GetName(), f.vdev},
		{workflows.CdswapOutcome.GetName(), f.outcome},
	} {
		if c.val != "" {
			q = append(q, c.key+" = "+quote(c.val))
		}
	}
	return strings.Join(q, " AND ")
}

// parseSince reads --since: a duration back from now (90m, 24h, 7d) or a time (RFC 3339).
func parseSince(s string, now time.Time) (time.Time, error) {
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
		return time.Time{}, usagef("--since %q: give a positive duration (90m, 24h, 7d) or a time (2026-11-27T08:00:00Z)", s)
	}
	return now.Add(-d), nil
}

func (a *App) newListCmd() *cobra.Command {
	var f listFilter
	var since string
	var limit int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [--host H] [--since 24h]",
		Short: "List swaps: what changed where, when, and who asked",
		Long: `list shows the swaps started since a time, newest first, from Temporal's visibility store
(their search attributes and memo): host, guest, drive, medium, outcome, who asked and why.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			var err error
			if f.since, err = parseSince(since, time.Now()); err != nil {
				return err
			}
			if limit <= 0 {
				return usagef("--limit must be positive, not %d", limit)
			}
			if err := checkDrive(f.host, f.domain, f.vdev); err != nil {
				return err
			}
			if err := workflows.ValidateText("outcome", f.outcome, 32, false); err != nil {
				return flagError(err)
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
			if asJSON {
				return writeJSON(a.stdout(), struct {
					Swaps []SwapSummary `json:"swaps"`
				}{swaps})
			}
			a.writeList(swaps, f)
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&f.host, "host", "", "only swaps on this dom0 host")
	fl.StringVar(&f.domain, "domain", "", "only swaps of this guest (by name)")
	fl.StringVar(&f.vdev, "vdev", "", "only swaps of this drive")
	fl.StringVar(&f.outcome, "outcome", "", "only swaps with this outcome (running, changed, ejected, failed-restored...)")
	fl.StringVar(&since, "since", "24h", "how far back: a duration (90m, 24h, 7d) or a time (RFC 3339)")
	fl.IntVar(&limit, "limit", 200, "at most this many swaps")
	fl.BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

// listClient is the part of client.Client listSwaps needs.
type listClient interface {
	ListWorkflow(ctx context.Context, req *workflowservice.ListWorkflowExecutionsRequest) (*workflowservice.ListWorkflowExecutionsResponse, error)
}

// listSwaps pages through visibility.
func listSwaps(ctx context.Context, c listClient, ns string, f listFilter, limit int) ([]SwapSummary, error) {
	out := []SwapSummary{}
	var token []byte
	for len(out) < limit {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: ns, Query: f.query(), PageSize: int32(min(limit-len(out), 1000)), NextPageToken: token,
		})
		if err != nil {
			return nil, fmt.Errorf("list swaps (%s): %w", f.query(), err)
		}
		for _, info := range resp.GetExecutions() {
			sa := info.GetSearchAttributes().GetIndexedFields()
			memo := info.GetMemo().GetFields()
			s := SwapSummary{
				WorkflowID: info.GetExecution().GetWorkflowId(),
				RunID:      info.GetExecution().GetRunId(),
				Host:       payloadString(sa[workflows.CdswapHost.GetName()]),
				Domain:     payloadString(sa[workflows.CdswapDomain.GetName()]),
				Vdev:       payloadString(sa[workflows.CdswapVdev.GetName()]),
				Medium:     payloadString(sa[workflows.CdswapMedium.GetName()]),
				Status:     statusName(info.GetStatus()),
				Outcome:    outcomeOf(info.GetStatus(), sa[workflows.CdswapOutcome.GetName()]),
				Requester:  memoString(memo, "requester"),
				Reason:     memoString(memo, "reason"),
				Ticket:     memoString(memo, "ticket"),
				Started:    info.GetStartTime().AsTime(),
			}
			if t := info.GetCloseTime(); t != nil && info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				ct := t.AsTime()
				s.Ended = &ct
			}
			out = append(out, s)
			if len(out) == limit {
				break
			}
		}
		token = resp.GetNextPageToken()
		if len(token) == 0 {
			break
		}
	}
	return out, nil
}

// writeList prints swaps as a table.
func (a *App) writeList(swaps []SwapSummary, f listFilter) {
	loc := a.location()
	if len(swaps) == 0 {
		fmt.Fprintf(a.stdout(), "no swap started since %s matches\n", f.since.In(loc).Format("2006-01-02 15:04:05 MST"))
		return
	}
	tw := tabwriter.NewWriter(a.stdout(), 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STARTED\tHOST\tDOMAIN\tVDEV\tMEDIUM\tOUTCOME\tREQUESTER\tREASON\tTICKET\tID")
	for _, s := range swaps {
		medium := termtext.Truncate(s.Medium, colMedium)
		if medium == "" {
			medium = "(eject)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Started.In(loc).Format("2006-01-02 15:04:05"),
			termtext.Truncate(s.Host, colHost), termtext.Truncate(s.Domain, colDomain), termtext.Truncate(s.Vdev, colVdev), medium,
			termtext.Truncate(s.Outcome, colOutcome), orDash(termtext.Truncate(s.Requester, colRequester)),
			orDash(termtext.Truncate(s.Reason, colReason)), orDash(termtext.Truncate(s.Ticket, colTicket)), esc(s.WorkflowID))
	}
	_ = tw.Flush()
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

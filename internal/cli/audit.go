package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/temporalproto"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/workflows"
)

// auditHistoriesDir is the folder, under --out, of the exported histories.
const auditHistoriesDir = "histories"

// auditFetchers is how many histories audit export reads at once: enough to hide the round
// trips, few enough to leave the server to the workers.
const auditFetchers = 4

// auditProgressEvery is the least time between two progress lines of audit export.
const auditProgressEvery = time.Second

// auditCSVHeader names the columns of the summary CSV of audit export.
var auditCSVHeader = []string{"workflow_id", "run_id", "type", "host", "domain", "vdev", "old_medium", "new_medium", "outcome",
	"requester", "requester_source", "ticket", "reason", "started", "ended", "batch", "status", "history_file"}

// auditRow is one run of an export: a line of the summary CSV.
type auditRow struct {
	WorkflowID, RunID, Type            string
	Host, Domain, Vdev                 string
	OldMedium, NewMedium, Outcome      string
	Requester, RequesterSource, Ticket string
	Reason, Batch, Status, HistoryFile string
	Started                            time.Time
	Ended                              *time.Time
	open                               bool   // the run had not ended when it was read
	action                             string // what export did with its file
	err                                error
}

func (r auditRow) record() []string {
	return []string{r.WorkflowID, r.RunID, r.Type, r.Host, r.Domain, r.Vdev, r.OldMedium, r.NewMedium, r.Outcome,
		r.Requester, r.RequesterSource, r.Ticket, r.Reason, csvTime(&r.Started), csvTime(r.Ended), r.Batch, r.Status, r.HistoryFile}
}

// What audit export did with a run's history file.
const (
	exportWritten   = "written"   // there was none
	exportSkipped   = "skipped"   // a closed run's file was there already: its history cannot change
	exportRewritten = "rewritten" // there was one, but the run was open, or --overwrite
)

// AuditExportResult is what `cdswap audit export --json` prints.
type AuditExportResult struct {
	// Dir is --out; Summary the CSV written in it.
	Dir     string `json:"dir"`
	Summary string `json:"summary"`
	// Runs is how many runs the window holds; Written, Skipped and Rewritten how many
	// history files export wrote anew, left as they were (closed runs already exported) and
	// wrote again (open runs, or --overwrite); Failed how many it could not read.
	Runs      int `json:"runs"`
	Written   int `json:"written"`
	Skipped   int `json:"skipped"`
	Rewritten int `json:"rewritten"`
	Failed    int `json:"failed"`
	// Open is how many runs had not ended: run the export again later for their whole
	// histories.
	Open int `json:"open"`
}

func (a *App) newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Keep the record of swaps and batches beyond Temporal's retention",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(a.newAuditExportCmd())
	return cmd
}

func (a *App) newAuditExportCmd() *cobra.Command {
	var ff filterFlags
	var out string
	var overwrite, asJSON bool
	cmd := &cobra.Command{
		Use:   "export --since 24h [--until T] --out DIR",
		Short: "Write every swap and batch of a window as its event history and a CSV summary",
		Long: `export writes every swap (ChangeMedium) and batch (FleetSwap) run started in the window
into DIR: each run's event history as DIR/histories/<workflow id>.<run id>.json, in the JSON
of "temporal workflow show -o json", which Temporal's replayer and "cdswap history" read
back, and one summary DIR/summary-<since>-<until>.csv (id, run, type, drive, old and new
medium, outcome, requester, ticket, reason, times, batch).

Run it again over the same DIR and it skips the histories of ended runs that are already
there (an ended run's history cannot change), and writes again those of runs that were
still open; --overwrite writes every file again. The filters of list narrow the export.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			f, err := ff.parse(time.Now())
			if err != nil {
				return err
			}
			if out == "" {
				return usagef("missing --out: the folder to write the histories and the summary into")
			}
			if f.until.IsZero() {
				// A fixed end, so that the summary's name and its contents say the same.
				f.until = time.Now()
			}
			f.types = []string{workflows.ChangeMediumName, workflows.FleetSwapName}
			ctx := cmd.Context()
			c, err := a.dial(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			res, err := a.auditExport(ctx, c, f, out, overwrite)
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSON(a.stdout(), res); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout(), "exported %d runs to %s: %d written, %d already there and skipped, %d written again; summary %s\n",
					res.Runs, esc(res.Dir), res.Written, res.Skipped, res.Rewritten, esc(res.Summary))
				if res.Open > 0 {
					fmt.Fprintf(a.stdout(), "%d runs had not ended: export the window again later for their whole histories\n", res.Open)
				}
			}
			if res.Failed > 0 {
				return &userError{msg: fmt.Sprintf("%d of %d histories could not be read (see above): run the export again to retry them; the files written are kept", res.Failed, res.Runs)}
			}
			return nil
		}),
	}
	fl := cmd.Flags()
	ff.add(fl)
	fl.StringVar(&out, "out", "", "folder to write into (created if missing)")
	fl.BoolVar(&overwrite, "overwrite", false, "write every history again, even those already in --out")
	fl.BoolVar(&asJSON, "json", false, "print the export's counts as JSON; progress goes to stderr")
	return cmd
}

// auditExport writes the histories and the summary of the runs f selects into dir.
func (a *App) auditExport(ctx context.Context, c client.Client, f listFilter, dir string, overwrite bool) (AuditExportResult, error) {
	res := AuditExportResult{Dir: dir}
	hdir := filepath.Join(dir, auditHistoriesDir)
	if err := os.MkdirAll(hdir, 0o750); err != nil {
		return res, fmt.Errorf("create the export folder: %w", err)
	}
	var infos []*workflowpb.WorkflowExecutionInfo
	err := eachExecution(ctx, c, a.cfg.NamespaceName(), f, 1000, func(info *workflowpb.WorkflowExecutionInfo) (bool, error) {
		infos = append(infos, info)
		return true, nil
	})
	if err != nil {
		return res, err
	}
	res.Runs = len(infos)
	fmt.Fprintf(a.stderr(), "audit export: %d runs started between %s and %s\n", len(infos),
		f.since.UTC().Format(time.RFC3339), f.until.UTC().Format(time.RFC3339))

	rows := make([]auditRow, len(infos))
	var done atomic.Int64
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(auditFetchers, max(len(infos), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				rows[i] = exportRun(ctx, c, infos[i], dir, overwrite)
				done.Add(1)
			}
		}()
	}
	progress := time.NewTicker(auditProgressEvery)
	defer progress.Stop()
feed:
	for i := range infos {
		for {
			select {
			case next <- i:
				continue feed
			case <-progress.C:
				fmt.Fprintf(a.stderr(), "audit export: %d/%d runs\n", done.Load(), len(infos))
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(next)
	wg.Wait()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}

	for _, r := range rows {
		switch {
		case r.err != nil:
			res.Failed++
			fmt.Fprintf(a.stderr(), "cdswap: %s\n", clean(r.err.Error()))
		case r.action == exportWritten:
			res.Written++
		case r.action == exportSkipped:
			res.Skipped++
		case r.action == exportRewritten:
			res.Rewritten++
		}
		if r.open {
			res.Open++
		}
	}
	// Oldest first: the order an auditor reads a window in.
	slices.SortStableFunc(rows, func(x, y auditRow) int { return x.Started.Compare(y.Started) })
	name := fmt.Sprintf("summary-%s-%s.csv", f.since.UTC().Format("20060102T150405Z"), f.until.UTC().Format("20060102T150405Z"))
	res.Summary = filepath.Join(dir, name)
	var buf bytes.Buffer
	cw := newCSVWriter(&buf)
	_ = cw.Write(auditCSVHeader) // a bytes.Buffer does not fail
	for _, r := range rows {
		_ = cw.Write(r.record())
	}
	cw.Flush()
	if err := writeFileAtomic(res.Summary, buf.Bytes()); err != nil {
		return res, fmt.Errorf("write the summary: %w", err)
	}
	return res, nil
}

// exportRun writes the history of one run into dir (unless a closed run's file is there and
// not overwrite) and returns its summary row.
func exportRun(ctx context.Context, c client.Client, info *workflowpb.WorkflowExecutionInfo, dir string, overwrite bool) auditRow {
	s := summaryOf(info)
	row := auditRow{WorkflowID: s.WorkflowID, RunID: s.RunID, Type: info.GetType().GetName(), Host: s.Host, Domain: s.Domain, Vdev: s.Vdev,
		NewMedium: s.Medium, Outcome: s.Outcome, Requester: s.Requester, RequesterSource: s.RequesterSource, Ticket: s.Ticket,
		Reason: s.Reason, Batch: s.Batch, Status: s.Status, Started: s.Started, Ended: s.Ended,
		open: info.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING}
	if row.Type == workflows.FleetSwapName && row.Batch == "" {
		row.Batch = row.WorkflowID // a batch's own run
	}
	row.HistoryFile = filepath.Join(auditHistoriesDir, historyFileName(s.WorkflowID, s.RunID))
	path := filepath.Join(dir, row.HistoryFile)

	var events []*historypb.HistoryEvent
	_, statErr := os.Stat(path)
	if statErr == nil && !overwrite && !row.open {
		// The file is the record: the row reads it back rather than the server. One that
		// cannot be read (cut short by a full disk?) is written again.
		if events = readHistoryFile(path); events != nil {
			row.action = exportSkipped
		}
	}
	if events == nil {
		row.action = exportWritten
		if statErr == nil {
			row.action = exportRewritten
		}
		var err error
		if events, err = fetchEvents(ctx, c, s.WorkflowID, s.RunID); err != nil {
			row.err = fmt.Errorf("read the history of %s (run %s): %w", s.WorkflowID, s.RunID, err)
			return row
		}
		data, err := temporalproto.CustomJSONMarshalOptions{Indent: "  "}.Marshal(&historypb.History{Events: events})
		if err != nil {
			row.err = fmt.Errorf("encode the history of %s (run %s): %w", s.WorkflowID, s.RunID, err)
			return row
		}
		if err := writeFileAtomic(path, append(data, '\n')); err != nil {
			row.err = fmt.Errorf("write the history of %s: %w", s.WorkflowID, err)
			return row
		}
	}
	if row.Type == workflows.ChangeMediumName {
		// The history knows what visibility does not: the medium before, the whole new path.
		if h, err := BuildHistory(events, HistoryExtras{WorkflowID: s.WorkflowID, RunID: s.RunID}); err == nil {
			row.OldMedium = h.Old
			row.NewMedium = h.Request.Medium
			if h.Outcome != "running" || row.open {
				row.Outcome = h.Outcome
			}
		}
	}
	return row
}

// fetchEvents reads every event of one run.
func fetchEvents(ctx context.Context, c client.Client, id, runID string) ([]*historypb.HistoryEvent, error) {
	var events []*historypb.HistoryEvent
	it := c.GetWorkflowHistory(ctx, id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return nil, err
		}
		events = append(events, ev)
	}
	if len(events) == 0 {
		return nil, errors.New("the server returned no events")
	}
	return events, nil
}

// readHistoryFile reads back a history export wrote, nil if it cannot.
func readHistoryFile(path string) []*historypb.HistoryEvent {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	h, err := client.HistoryFromJSON(f, client.HistoryJSONOptions{})
	if err != nil || len(h.GetEvents()) == 0 {
		return nil
	}
	return h.GetEvents()
}

// historyFileName is the file of one run's history: its workflow id made safe for a file
// name (every byte other than [A-Za-z0-9._-] becomes '_', a leading '.' too, cut to 150
// bytes) and its run id, which alone tells runs apart.
func historyFileName(id, runID string) string {
	safe := func(s string, limit int) string {
		b := []byte(s)
		for i, c := range b {
			if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
				b[i] = '_'
			}
		}
		if len(b) > 0 && b[0] == '.' {
			b[0] = '_'
		}
		return string(b[:min(len(b), limit)])
	}
	return safe(id, 150) + "." + safe(runID, 64) + ".json"
}

// writeFileAtomic writes data to path through a temporary file in the same folder, so that
// an export cut short leaves the old file or the new one, never half of one.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, nothing is left to remove
	if _, err := io.Copy(tmp, bytes.NewReader(data)); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o640); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

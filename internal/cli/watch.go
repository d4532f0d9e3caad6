package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/workflows"
)

// queryTimeout bounds one progress query: a run whose worker is gone does not answer. A run
// whose worker is running local steps answers only once their workflow task ends, or once
// the SDK keeps it alive by completing it (every 80 % of workflows.WorkflowTaskTimeout, 1.6
// s): the bound leaves room for that and the query's own dispatch.
const queryTimeout = 2*workflows.WorkflowTaskTimeout + time.Second

// waiter follows one ChangeMedium run until it ends, printing its steps as they go.
type waiter struct {
	c        client.Client
	out      io.Writer
	tty      bool // redraw the running step's line in place
	width    int  // terminal width for the redrawn line (0 = 80)
	interval time.Duration
	now      func() time.Time // nil = time.Now
}

// wait polls the run's progress query every w.interval until the run ends, and returns its
// result (from its error's details if it failed or was canceled) and its error. If ctx ends
// first, it returns ctx's error (wrapped by the SDK) and what it knows.
func (w *waiter) wait(ctx context.Context, id, runID string) (workflows.ChangeMediumResult, error) {
	type ended struct {
		res workflows.ChangeMediumResult
		err error
	}
	done := make(chan ended, 1)
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		var e ended
		e.err = w.c.GetWorkflow(gctx, id, runID).Get(gctx, &e.res)
		done <- e
	}()
	now := w.now
	if now == nil {
		now = time.Now
	}
	p := &stepPrinter{out: w.out, tty: w.tty, width: w.width, now: now}
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	for {
		select {
		case e := <-done:
			res := e.res
			if e.err != nil {
				if r, ok := workflows.ResultFromError(e.err); ok {
					res = r
				}
			}
			p.finish(res.Steps)
			return res, e.err
		case <-tick.C:
			prog, err := queryProgress(gctx, w.c, id, runID)
			if err != nil {
				// Not ready yet (no workflow task done), or the worker is busy or gone:
				// the run's end still arrives through done.
				continue
			}
			var pending *workflowpb.PendingActivityInfo
			if w.tty && prog.Step != "" {
				pending = pendingActivity(gctx, w.c, id, runID, prog.Step)
			}
			p.wait(prog.Waiting)
			p.update(prog.Steps, pending)
		}
	}
}

// queryProgress asks a ChangeMedium run for its Progress.
func queryProgress(ctx context.Context, c client.Client, id, runID string) (workflows.Progress, error) {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var p workflows.Progress
	v, err := c.QueryWorkflow(qctx, id, runID, workflows.ProgressQuery)
	if err != nil {
		return p, err
	}
	err = v.Get(&p)
	return p, err
}

// pendingActivity returns the run's pending activity of type name (its attempt and last
// failure), or nil.
func pendingActivity(ctx context.Context, c client.Client, id, runID, name string) *workflowpb.PendingActivityInfo {
	desc, err := describe(ctx, c, id, runID)
	if err != nil {
		return nil
	}
	for _, pa := range desc.GetPendingActivities() {
		if pa.GetActivityType().GetName() == name {
			return pa
		}
	}
	return nil
}

// stepPrinter prints a run's step records as they end: one line per finished step, and on a
// terminal a line for the running step that is redrawn in place.
type stepPrinter struct {
	out     io.Writer
	tty     bool
	width   int
	now     func() time.Time
	printed int    // steps printed as finished
	live    bool   // the running step's line is on screen, without its newline
	waiting string // what the run was last seen waiting for ("" = nothing)
}

// wait prints what the run waits for between steps (Progress.Waiting), once each time a
// wait is first seen: a paused guest can hold a swap for hours, with no step running that
// would say so.
func (p *stepPrinter) wait(waiting string) {
	if waiting == p.waiting {
		return
	}
	p.waiting = waiting
	if waiting == "" {
		return
	}
	p.clearLive()
	fmt.Fprintf(p.out, "     ... %s\n", esc(waiting))
}

// update prints the steps that ended since the last call and, on a terminal, redraws the
// running one (steps are the run's records so far: append-only, the running one last).
func (p *stepPrinter) update(steps []workflows.StepRecord, pending *workflowpb.PendingActivityInfo) {
	p.printEnded(steps)
	if !p.tty || p.printed >= len(steps) {
		return
	}
	s := steps[p.printed]
	elapsed := max(p.now().Sub(s.Started), 0)
	line := fmt.Sprintf("  %2d %-21s %-7s %7s", p.printed+1, stepLabel(s), "running", formatDuration(elapsed))
	if pending != nil {
		line += fmt.Sprintf("  attempt %d", pending.GetAttempt())
		if msg := pending.GetLastFailure().GetMessage(); msg != "" {
			line += ", last failed: " + esc(msg)
		}
	}
	p.clearLive()
	fmt.Fprint(p.out, truncate(line, p.lineWidth()-1))
	p.live = true
}

// finish prints the steps not printed yet and leaves no running line behind.
func (p *stepPrinter) finish(steps []workflows.StepRecord) {
	p.printEnded(steps)
	p.clearLive()
}

func (p *stepPrinter) printEnded(steps []workflows.StepRecord) {
	for p.printed < len(steps) && !steps[p.printed].Ended.IsZero() {
		p.clearLive()
		fmt.Fprintln(p.out, stepLine(p.printed+1, steps[p.printed]))
		p.printed++
	}
}

func (p *stepPrinter) clearLive() {
	if p.live {
		fmt.Fprint(p.out, "\r\x1b[K")
		p.live = false
	}
}

func (p *stepPrinter) lineWidth() int {
	if p.width <= 0 {
		return 80
	}
	return p.width
}

// stepLine is the line of a finished step: number, step, ok or failed, duration, attempts
// when retried, then what it was asked or why it failed.
func stepLine(n int, s workflows.StepRecord) string {
	status := "ok"
	if s.Error != "" {
		status = "failed"
	}
	line := fmt.Sprintf("  %2d %-21s %-7s %7s", n, stepLabel(s), status, formatDuration(s.Ended.Sub(s.Started)))
	if s.Attempts > 1 {
		line += fmt.Sprintf("  %d attempts", s.Attempts)
	}
	switch {
	case s.Error != "" && s.ErrorType != "":
		line += fmt.Sprintf("  %s: %s", esc(s.ErrorType), esc(s.Error))
	case s.Error != "":
		line += "  " + esc(s.Error)
	case s.Detail != "":
		line += "  " + esc(s.Detail)
	}
	return line
}

// stepLabel names a step, marking those of the restore of the old medium, escaped.
func stepLabel(s workflows.StepRecord) string {
	if s.Restore {
		return "restore " + esc(s.Name)
	}
	return esc(s.Name)
}

// formatDuration prints d for a person: 12ms, 1.4s, 2m3s.
func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// truncate cuts s to n runes, marking the cut.
func truncate(s string, n int) string {
	if n < 2 || utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return strings.TrimRight(string(r[:n-1]), " ") + "…"
}

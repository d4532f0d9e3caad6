package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cdswap/cdswap/workflows"
)

// statusView is the JSON of `cdswap status --json`.
type statusView struct {
	WorkflowID string `json:"workflow_id"`
	RunID      string `json:"run_id"`
	Status     string `json:"status"`
	Outcome    string `json:"outcome"`
	Phase      string `json:"phase,omitempty"`
	Step       *Step  `json:"step,omitempty"`
	// Waiting says what a running swap waits for between steps (the run's progress
	// query: workflows.WaitingUnpause while its guest is paused), "" when it does not.
	Waiting    string     `json:"waiting,omitempty"`
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

// newStatusCmd is `cdswap status`.
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
			if v.Ended == nil {
				v.Waiting = a.waitingOf(cmd.Context(), v.WorkflowID, v.RunID)
			}
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

// waitingOf asks a running swap what it waits for (Progress.Waiting). The history cannot
// say it: a run that waits for its guest sleeps on a timer, between steps. A run that does
// not answer (no worker, or one too busy) waits for nothing anyone can tell: "".
func (a *App) waitingOf(ctx context.Context, id, runID string) string {
	c, err := a.dial(ctx)
	if err != nil {
		return ""
	}
	defer c.Close()
	p, err := queryProgress(ctx, c, id, runID)
	if err != nil {
		return ""
	}
	return p.Waiting
}

// writeStatus prints a statusView for a person.
func (a *App) writeStatus(v statusView) {
	loc := a.location()
	var b strings.Builder
	fmt.Fprintf(&b, "swap %s (run %s): ", esc(v.WorkflowID), esc(v.RunID))
	switch {
	case v.Ended == nil && v.Step != nil:
		s := v.Step
		fmt.Fprintf(&b, "running, step %d %s (%s", s.Seq, s.label(), esc(s.Status))
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
		fmt.Fprintf(&b, "%s at %s, after %s", esc(v.Outcome), v.Ended.In(loc).Format("2006-01-02 15:04:05 MST"), formatDuration(ms(v.DurationMS)))
		if note := outcomeNote(v.Outcome, v.Old); note != "" {
			fmt.Fprintf(&b, " (%s)", note)
		}
	}
	b.WriteString("\n")
	if v.Waiting != "" {
		fmt.Fprintf(&b, "  now %s\n", esc(v.Waiting))
	}
	fmt.Fprintf(&b, "  %s\n", v.Request.describe(workflows.ChangeMediumName))
	b.WriteString("  " + v.Audit.askedBy())
	fmt.Fprintf(&b, ", started %s\n", v.Started.In(loc).Format("2006-01-02 15:04:05 MST"))
	if v.Error != nil {
		fmt.Fprintf(&b, "  error: %s\n", esc(v.Error.Message))
	}
	if v.Action != "" {
		fmt.Fprintf(&b, "  to do: %s\n", esc(v.Action))
	}
	fmt.Fprintf(&b, "  steps: cdswap history %s\n", esc(v.WorkflowID))
	fmt.Fprint(a.stdout(), b.String())
}

package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/cdswap/cdswap/workflows"
)

// WriteHistoryJSON writes h as the indented JSON document of `cdswap history --json`
// (HistorySchema).
func WriteHistoryJSON(w io.Writer, h *History) error {
	return writeJSON(w, h)
}

// WriteHistoryText writes h for a person: what was asked, by whom and why, how it ended,
// then one line per step with its attempts, start time and duration, and under it the
// failures Temporal kept. Times are shown in loc (nil = time.Local).
func WriteHistoryText(w io.Writer, h *History, loc *time.Location) error {
	if loc == nil {
		loc = time.Local
	}
	var b strings.Builder
	fmt.Fprintf(&b, "swap %s (run %s)\n", esc(h.WorkflowID), esc(h.RunID))
	fmt.Fprintf(&b, "  %s\n", h.Request.describe(h.WorkflowType))
	b.WriteString("  " + h.Audit.askedBy())
	if h.Audit.StartedBy != "" {
		fmt.Fprintf(&b, "; started by client %s", esc(h.Audit.StartedBy))
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "  started %s", h.Started.In(loc).Format("2006-01-02 15:04:05.000 MST"))
	if h.Ended != nil {
		fmt.Fprintf(&b, ", ended %s (%s)\n", h.Ended.In(loc).Format("15:04:05.000"), formatDuration(ms(h.DurationMS)))
	} else {
		fmt.Fprintf(&b, ", running for %s\n", formatDuration(ms(h.DurationMS)))
	}
	if c := h.CancelRequested; c != nil {
		fmt.Fprintf(&b, "  cancel requested at %s by %s", c.At.In(loc).Format("15:04:05.000"), esc(orUnknown(c.By)))
		if c.Reason != "" {
			fmt.Fprintf(&b, ": %q", c.Reason)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "  outcome: %s", esc(h.Outcome))
	if note := outcomeNote(h.Outcome, h.Old); note != "" {
		fmt.Fprintf(&b, " (%s)", note)
	}
	b.WriteString("\n")
	if h.Error != nil {
		fmt.Fprintf(&b, "  error: %s\n", esc(h.Error.Message))
	}
	if h.Action != "" {
		fmt.Fprintf(&b, "  to do: %s\n", esc(h.Action))
	}

	b.WriteString("\n")
	nameW := len("step")
	for _, s := range h.Steps {
		nameW = max(nameW, len(s.label()))
	}
	row := func(seq, name, status, attempts, started, took, detail string) {
		line := fmt.Sprintf("  %3s  %-*s  %-9s  %8s  %-12s  %7s  %s", seq, nameW, name, status, attempts, started, took, detail)
		b.WriteString(strings.TrimRight(line, " ") + "\n")
	}
	row("#", "step", "result", "attempts", "started", "took", "")
	for _, s := range h.Steps {
		started, took, attempts := s.Scheduled.In(loc).Format("15:04:05.000"), "-", ""
		if s.Ended != nil {
			took = formatDuration(ms(s.DurationMS))
		}
		if s.Kind == StepActivity {
			attempts = fmt.Sprint(s.Attempts)
		}
		row(fmt.Sprint(s.Seq), s.label(), esc(s.Status), attempts, started, took, esc(s.Detail))
		for _, f := range s.Failures {
			fmt.Fprintf(&b, "  %3s  attempt %d failed: %s\n", "", f.Attempt, f.text())
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// outcomeNote says what an outcome means for the drive, given the medium it held before
// ("" = empty, or unknown if the run ended before Inspect).
func outcomeNote(outcome, old string) string {
	switch workflows.Outcome(outcome) {
	case workflows.OutcomeChanged, workflows.OutcomeEjected:
		if old != "" {
			return "the drive held " + esc(old)
		}
	case workflows.OutcomeFailedRestored:
		if old == "" {
			return "the drive is empty again, as it was"
		}
		return "the drive holds its old medium " + esc(old) + " again"
	case workflows.OutcomeCanceled:
		if old != "" {
			return "the drive keeps its old medium " + esc(old)
		}
	case workflows.OutcomeRefused, workflows.OutcomeFailed, workflows.OutcomeUnchanged:
		return "the drive was not changed"
	case workflows.OutcomeRestoreFailed:
		return "the drive needs a person: see to do"
	}
	return ""
}

// label is the step's name in the text table, escaped.
func (s Step) label() string {
	if s.Restore {
		return "restore " + esc(s.Name)
	}
	return esc(s.Name)
}

// text is "Type: message", or the message alone, escaped.
func (f Failure) text() string {
	if f.Type == "" {
		return esc(f.Message)
	}
	return esc(f.Type) + ": " + esc(f.Message)
}

// askedBy is "asked by R: "reason" (ticket T)" without a line break, escaped.
func (a Audit) askedBy() string {
	s := "asked by " + esc(orUnknown(a.Requester))
	if a.Reason != "" {
		s += ": " + strconv.Quote(a.Reason)
	}
	if a.Ticket != "" {
		s += " (ticket " + esc(a.Ticket) + ")"
	}
	return s
}

// describe says what was asked, its fields escaped.
func (r Request) describe(workflowType string) string {
	dom := esc(r.Domain)
	if r.DomID != 0 && r.Domain != fmt.Sprint(r.DomID) {
		dom = fmt.Sprintf("%s (domid %d)", dom, r.DomID)
	}
	host, vdev := esc(r.Host), esc(r.Vdev)
	switch {
	case workflowType == workflows.ResolveDriveName:
		return fmt.Sprintf("find drive %s of %s on host %s", vdev, dom, host)
	case workflowType != workflows.ChangeMediumName:
		return fmt.Sprintf("a %s workflow", esc(workflowType))
	case r.Medium == "":
		return fmt.Sprintf("eject drive %s of %s on host %s%s", vdev, dom, host, forced(r.Force))
	}
	return fmt.Sprintf("insert %s (%s) into drive %s of %s on host %s%s", esc(r.Medium), esc(r.Format), vdev, dom, host, forced(r.Force))
}

func forced(force bool) string {
	if force {
		return ", forcing the eject of a locked tray"
	}
	return ""
}

// ms turns milliseconds back into a duration.
func ms(v float64) time.Duration {
	return time.Duration(v * float64(time.Millisecond))
}

// orUnknown is s, or "unknown" when it is empty.
func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

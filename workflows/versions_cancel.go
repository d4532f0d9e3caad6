package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/cdswap/cdswap/activities"
)

// changeCancelTooLate: a cancellation that arrives once the new medium is verified (during
// Verify or Unlock) is recorded as too late (ChangeMediumResult.CancelTooLate, the memo's
// MemoCancel, a warning) rather than passed over in silence. Runs recorded before it replay
// without the memo upsert.
const changeCancelTooLate = "cancel-too-late-recorded"

// changeCancelAtInspect: a run canceled before its Inspect answered asks Inspect's note on
// the disconnected context, and puts the old medium back if the note is there. Since
// localEjectVersion, Inspect, Lock and Eject are local steps of one workflow task, and an
// attempt of that task that was lost (its worker died or its heartbeat came too late) may
// have ejected already; the next attempt, canceled from its start, would otherwise end
// canceled with the drive empty. Only a run canceled that early records the marker.
const changeCancelAtInspect = "cancel-at-inspect-checks-note"

// canceledAtInspect ends a run canceled before its Inspect answered (cause).
func (s *swap) canceledAtInspect(dctx workflow.Context, cause error) end {
	canceled := end{outcome: OutcomeCanceled, canceled: true}
	if !s.localEject || workflow.GetVersion(dctx, changeCancelAtInspect, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return canceled
	}
	insp, err := call(s, dctx, activities.NameInspect, act.Inspect, activities.InspectInput{
		Host: s.in.Host, DomID: s.in.DomID, Vdev: s.in.Vdev, Medium: s.in.Medium, Format: s.in.Format, RunID: s.runID,
		NoteOnly: true,
	}, "the run's note")
	if err != nil || !insp.FromNote {
		// No note: no attempt of this run got as far as Inspect's answer, so none touched
		// the drive. (A note that cannot be read fails Inspect; the run says canceled, as
		// before this change, and the error is in its history.)
		return canceled
	}
	s.log.Warn("Canceled before Inspect answered, but an earlier attempt had inspected the drive; putting the old medium back",
		"step", activities.NameInspect, "old", insp.OldMedium)
	s.insp, s.drive = insp, insp.Drive
	s.addKnown(insp.Fdsets...)
	s.locked = true
	if _, err := call(s, dctx, activities.NameLock, act.Lock, activities.LockInput{DomID: s.in.DomID, Key: s.key}, ""); err != nil {
		return end{outcome: OutcomeRestoreFailed, errType: ErrRestoreFailed, cause: err, action: s.manualAction(err)}
	}
	return s.restore(dctx, cause, true)
}

// MemoCancel is the memo key a ChangeMedium run sets when a cancellation came too late: its
// value says so, with the time the new medium was verified.
const MemoCancel = "cancel"

// noteCancelTooLate records, on the disconnected context dctx, that a cancellation arrived
// after the change ended well: the run keeps what it did and ends with e's outcome, which
// is the truth (a canceled run would promise the old medium back). The history shows the
// WorkflowExecutionCancelRequested event, then the memo upsert and the completed run whose
// result has CancelTooLate.
func (s *swap) noteCancelTooLate(dctx workflow.Context, e end) {
	if workflow.GetVersion(dctx, changeCancelTooLate, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return
	}
	s.cancelTooLate = true
	what := "the new medium was"
	if e.outcome == OutcomeEjected {
		what = "the eject was"
	}
	note := fmt.Sprintf("too late: %s already verified", what)
	if at := s.verifiedAt(); !at.IsZero() {
		note += " at " + at.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	note += fmt.Sprintf("; the run kept it and ended %s", e.outcome)
	s.log.Warn("Cancellation arrived after the change was verified: keeping it", "outcome", e.outcome)
	if err := workflow.UpsertMemo(dctx, map[string]any{MemoCancel: note}); err != nil {
		s.log.Error("Upsert of the memo's cancel note failed", "error", err)
	}
}

// cancelCameTooLate reports whether a run that ended with e was canceled after its change had
// been verified: ctx (the run's own context) is canceled, yet the change ended well.
func cancelCameTooLate(ctx workflow.Context, e end) bool {
	return ctx.Err() != nil && !e.canceled && (e.outcome == OutcomeChanged || e.outcome == OutcomeEjected)
}

// verifiedAt is when the change's own Verify ended well (zero if it did not).
func (s *swap) verifiedAt() time.Time {
	for i := len(s.steps) - 1; i >= 0; i-- {
		if r := s.steps[i]; r.Name == activities.NameVerify && !r.Restore && r.Error == "" {
			return r.Ended
		}
	}
	return time.Time{}
}

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

package workflows

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cdswap/cdswap/activities"
)

// ChangeMediumInput asks for the medium of one drive to be changed, or ejected.
type ChangeMediumInput struct {
	// Host is the dom0 host running the guest; the run and its activities use its queue.
	Host string
	// Domain is the guest as the operator named it (name or domid), for messages.
	Domain string
	// DomID is the guest's domid (ResolveDrive finds it).
	DomID uint32
	// Vdev is the drive: "hdc", "xvdc", "sdc".
	Vdev string
	// Medium is the new medium's path on the host; "" ejects.
	Medium string
	// Format is the new medium's format: "raw" (the default, and the only one a stubdom
	// guest takes), or for dom0 QEMU "qcow2", "vpc", "qcow", "qed".
	Format string
	// Force ejects a tray the guest keeps locked after Eject's retries.
	Force bool
	// Requester, Reason and Ticket say who asked and why; the starter also puts them in
	// the memo.
	Requester, Reason, Ticket string
	// RequesterSource says how Requester was learned: "mtls" (the client certificate's
	// subject), "api-key-jwt-unverified" (the API key's sub claim, read without checking
	// its signature), "api-key" (an opaque API key), "flag" (--requester on a plain
	// connection) or "os" (the OS account); "" in runs started before it existed.
	RequesterSource string `json:",omitempty"`
	// BatchID is the id of the batch (FleetSwap) this swap belongs to, "" for a swap a
	// person started alone; it goes into the CdswapBatch search attribute and the memo.
	BatchID string `json:",omitempty"`
	// Bench is set only by benchmarks, to run the old way beside the new (BenchOptions);
	// nil in production.
	Bench *BenchOptions `json:",omitempty"`
}

// ChangeMediumResult is what a ChangeMedium run did. A successful run returns it; a failed
// or canceled one carries it in its error's details (ResultFromError).
type ChangeMediumResult struct {
	// Outcome is how the run ended.
	Outcome Outcome
	// Kind is where the guest's device model runs ("" if Inspect did not tell).
	Kind activities.Kind
	// Old is the medium the drive held before ("" = empty).
	Old string
	// New is the medium asked for ("" = eject).
	New string
	// Steps are the steps run, in order, with their attempts, times and errors.
	Steps []StepRecord
	// FdsetID is the fdset the drive's medium comes from at the end, -1 if none is known.
	FdsetID int64
	// ErrorType is the activities error type that decided a failure ("" on success).
	ErrorType string
	// Error says what went wrong ("" on success).
	Error string
	// Action is what a person must do after a failed restore ("" otherwise).
	Action string
	// CancelTooLate is true when a cancellation arrived after the change was verified
	// (during Verify or Unlock): the run kept the new medium (or the eject) and ended with
	// Outcome, and its memo's MemoCancel says so.
	CancelTooLate bool `json:",omitempty"`
}

// StepRecord is one step (one activity call, with its retries) of a run.
type StepRecord struct {
	// Name is the activity type (activities.NameInspect...).
	Name string
	// Attempts is how many attempts the step took, 0 if unknown.
	Attempts int32
	// Started and Ended are workflow times; Ended is zero while the step runs.
	Started, Ended time.Time
	// Error is the final error's message, "" on success.
	Error string
	// ErrorType is the final error's type, "" on success.
	ErrorType string
	// Restore marks the steps of the restore of the old medium.
	Restore bool
	// Detail adds what the step was asked ("force", "fdset 4", "params /isos/a.iso").
	Detail string
	// Local marks a step run as a local activity: one LocalActivity marker per attempt in
	// the history, with a timer for each pause between attempts.
	Local bool `json:",omitempty"`
	// Failures are the failures of the attempts before the last of a local step (a regular
	// step's history keeps the one before the last).
	Failures []StepFailure `json:",omitempty"`
}

// StepFailure is how one attempt of a step failed.
type StepFailure struct {
	// Attempt is the attempt's number, from 1.
	Attempt int32
	// ErrorType and Error are as in StepRecord.
	ErrorType, Error string
}

// Phase is what a run is doing.
type Phase string

// Phases.
const (
	PhaseSwap    Phase = "swap"
	PhaseRestore Phase = "restore"
	PhaseDone    Phase = "done"
)

// Progress is the answer to ProgressQuery.
type Progress struct {
	// Phase is what the run is doing.
	Phase Phase
	// Step is the step running now, "" between steps and at the end.
	Step string
	// Kind is the guest kind, once Inspect told.
	Kind activities.Kind
	// Steps are the step records so far, the running one last with Ended zero. Attempts of
	// the running step are known only when it ends; the CLI can read them from
	// DescribeWorkflowExecution's pending activities.
	Steps []StepRecord
	// Outcome is set at the end.
	Outcome Outcome
	// Waiting says what the run waits for between steps, "" when it does not wait:
	// WaitingUnpause while the guest is paused in the middle of a change.
	Waiting string
}

// act calls activities by method value on a nil pointer: only the method's name (the
// activity type) and signature are used.
var act *activities.Activities

// ChangeMedium changes the medium of one CD-ROM drive, or ejects it, as libxl's
// libxl_cdrom_insert does, one activity per step on the host's task queue:
//
//	stubdom: Inspect Lock Eject ReleaseFdset DetachVBD AttachVBD WaitFdset ChangeMedium Record Verify Unlock
//	dom0:    Inspect Lock Eject AddFD ChangeMedium Record Verify Unlock
//
// Since changeLocalSteps the short steps (localSteps: all but Eject, DetachVBD, AttachVBD,
// WaitFdset and AddFD) run as local activities, recorded as LocalActivity markers, and since
// its version 2 DetachVBD and AttachVBD too (vbdSteps), and since version 3 Eject. Version 4
// changes no step: it implies changeValidateLimits, so that a new run records one GetVersion
// before its first step (impliedLimitsVersion). Since version 5 AddFD is local too
// (localAddFDVersion): a dom0 change is one workflow task, and a run resumed after its change
// took only records and verifies it (InspectResult.Taken).
//
// An eject skips ChangeMedium (and AddFD); a stubdom eject still re-attaches the PV disk, with
// the empty-cdrom file, and waits for its fdset, because the drive must keep a vbd.
//
// Once the drive has been touched (Eject was sent), a step that fails for good, or a
// cancellation, makes the run put the old medium back on a disconnected context: a forced
// Eject, then for a stubdom ReleaseFdset DetachVBD AttachVBD(old params) WaitFdset
// [ChangeMedium] and for dom0 [AddFD ChangeMedium], then Record and Verify of the old
// medium; the whole sequence is tried restoreRounds times with longer retry policies. The
// lock is released on every path once taken.
//
// The run fails (Temporal status Failed) with an ApplicationError of type ErrRefused,
// ErrSwapFailed, ErrSwapFailedRestored or ErrRestoreFailed, carrying the ChangeMediumResult
// in its details, so that Temporal's own view and the history tell a failure at a glance and
// the CLI can still print the steps. A canceled run ends Canceled with the result in the
// CanceledError's details.
func ChangeMedium(ctx workflow.Context, in ChangeMediumInput) (ChangeMediumResult, error) {
	s := &swap{
		in:    in,
		key:   workflow.GetInfo(ctx).WorkflowExecution.ID,
		phase: PhaseSwap,
		fdset: -1,
		log:   log.With(workflow.GetLogger(ctx), "host", in.Host, "domid", in.DomID, "vdev", in.Vdev),
	}
	if s.in.Medium != "" && s.in.Format == "" {
		s.in.Format = activities.FormatRaw
	}
	if err := workflow.SetQueryHandler(ctx, ProgressQuery, s.progress); err != nil {
		return ChangeMediumResult{}, fmt.Errorf("set query handler: %w", err)
	}
	return s.run(ctx)
}

// swap is the state of one ChangeMedium run.
type swap struct {
	in  ChangeMediumInput
	key string // the workflow id: the lock key
	log log.Logger

	phase   Phase
	step    string
	waiting string // Progress.Waiting
	steps   []StepRecord
	outcome Outcome

	insp  activities.InspectResult
	drive activities.Drive
	known []int64 // every stub-devid fdset seen, sorted: never taken for a new one
	fdset int64   // the fdset of the medium inserted last, -1 if none

	stepsVersion workflow.Version // the run's version of changeLocalSteps (useLocalSteps)

	local           bool   // the short steps run as local activities (changeLocalSteps)
	localVBD        bool   // so do DetachVBD and AttachVBD (localVBDVersion)
	localEject      bool   // and Eject (localEjectVersion)
	localAddFD      bool   // and AddFD (localAddFDVersion)
	resumed         bool   // the change had taken before a worker was lost (InspectResult.Taken)
	runID           string // the run's id, for Inspect's note (localEjectVersion), else ""
	locked          bool   // Lock was scheduled: Unlock must run
	failedAt        string // the step whose failure ended the change
	restoreFailedAt string // the step whose failure ended the last restore round
	cancelTooLate   bool   // a cancellation arrived after the change was verified
}

// end is how a run ends before its result is built.
type end struct {
	outcome  Outcome
	errType  string // workflow error type, "" on success or cancellation
	cause    error
	canceled bool
	action   string
}

func (s *swap) run(ctx workflow.Context) (ChangeMediumResult, error) {
	// The disconnected context survives a cancellation of ctx, so that the lock is always
	// released, a touched drive is always restored and the outcome always recorded.
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	s.useLocalSteps(ctx) // first: validate reads its version
	if err := s.validate(ctx); err != nil {
		return s.finish(dctx, end{outcome: OutcomeRefused, errType: ErrRefused, cause: err})
	}
	e := s.change(ctx, dctx)
	if s.locked {
		s.unlock(dctx)
	}
	if cancelCameTooLate(ctx, e) {
		s.noteCancelTooLate(dctx, e)
	}
	return s.finish(dctx, e)
}

// validate refuses what no activity needs to look at: the request's own faults, and (since
// changeValidateLimits, and in every run of impliedLimitsVersion of changeLocalSteps, which
// records no changeValidateLimits) whatever breaks Validate's limits.
func (s *swap) validate(ctx workflow.Context) error {
	in := s.in
	limits := s.stepsVersion >= impliedLimitsVersion ||
		workflow.GetVersion(ctx, changeValidateLimits, workflow.DefaultVersion, 1) >= 1
	switch {
	case in.Host == "":
		return badInput("no host given")
	case in.Vdev == "":
		return badInput("no vdev given (hdc, xvdc...)")
	case in.DomID == 0:
		return badInput("domid 0 is dom0, which has no emulated CD-ROM: resolve the guest's domid first")
	case in.Medium != "" && !path.IsAbs(in.Medium):
		return badInput(fmt.Sprintf("medium %q is not an absolute path", in.Medium))
	}
	if limits {
		if err := Validate(in); err != nil {
			return badInput(err.Error())
		}
	}
	return nil
}

// errInspectMismatch is the error type of an Inspect answer that contradicts the request.
const errInspectMismatch = "InspectMismatch"

func badInput(msg string) error {
	return temporal.NewNonRetryableApplicationError(msg, activities.ErrBadInput, nil)
}

// change runs the steps up to Verify and the restore if needed.
func (s *swap) change(ctx, dctx workflow.Context) end {
	insp, err := call(s, ctx, activities.NameInspect, act.Inspect, activities.InspectInput{
		Host: s.in.Host, DomID: s.in.DomID, Vdev: s.in.Vdev, Medium: s.in.Medium, Format: s.in.Format, RunID: s.runID,
		Resume: s.localAddFD,
	}, "")
	if err != nil {
		switch {
		case isCanceled(ctx, err):
			return s.canceledAtInspect(dctx, err)
		case isRefusal(err):
			return end{outcome: OutcomeRefused, errType: ErrRefused, cause: err}
		}
		return end{outcome: OutcomeFailed, errType: ErrSwapFailed, cause: err}
	}
	s.insp, s.drive = insp, insp.Drive
	s.addKnown(insp.Fdsets...)
	switch insp.Drive.Kind {
	case activities.KindStubdom, activities.KindDom0:
	default:
		// Inspect refuses these itself; this keeps a wrong answer from reaching the drive.
		return end{outcome: OutcomeRefused, errType: ErrRefused, cause: temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("domain %s runs a %q device model: only qemu-xen in dom0 or in a Linux stubdom can change media", s.domain(), insp.Drive.Kind),
			activities.ErrUnsupportedDeviceModel, nil)}
	}
	if (insp.Medium == "") != (s.in.Medium == "") {
		// Never turn an insert into an eject, or the reverse, on a wrong answer.
		return end{outcome: OutcomeFailed, errType: ErrSwapFailed, cause: temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("Inspect answered medium %q for a request of %q: a worker bug, nothing was changed", insp.Medium, s.in.Medium),
			errInspectMismatch, nil)}
	}
	if insp.InPlace {
		return end{outcome: OutcomeUnchanged}
	}

	// A cancellation that arrived while a step ran (and was waited for) shows here: stop
	// before touching anything more.
	if ctx.Err() != nil {
		return end{outcome: OutcomeCanceled, canceled: true}
	}
	s.locked = true
	if _, err := call(s, ctx, activities.NameLock, act.Lock, activities.LockInput{DomID: s.in.DomID, Key: s.key}, ""); err != nil {
		if isCanceled(ctx, err) {
			return end{outcome: OutcomeCanceled, canceled: true}
		}
		return end{outcome: OutcomeFailed, errType: ErrSwapFailed, cause: err}
	}

	if ctx.Err() != nil {
		// Canceled while Lock ran: the drive is untouched.
		return end{outcome: OutcomeCanceled, canceled: true}
	}
	if insp.Taken != "" {
		// A worker was lost after the change took (localAddFDVersion): record it.
		s.log.Warn("The change took before a worker was lost; recording it", "step", activities.NameInspect, "file", insp.Taken)
		id, ok := activities.FdsetOfFilename(insp.Taken)
		if !ok {
			return end{outcome: OutcomeFailed, errType: ErrSwapFailed, cause: temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("Inspect answered taken %q, not an fdset: a worker bug, nothing was changed", insp.Taken), errInspectMismatch, nil)}
		}
		s.fdset = id
		s.resumed = true
		if err := s.recordAndVerify(ctx, insp.Medium, insp.Format, insp.NewParams, insp.Taken); err != nil {
			return s.restore(dctx, err, isCanceled(ctx, err))
		}
		return end{outcome: OutcomeChanged}
	}
	if err := s.eject(ctx); err != nil {
		if isCanceled(ctx, err) {
			// The eject may have happened: put the old medium back.
			return s.restore(dctx, err, true)
		}
		// A failed eject leaves the medium in: nothing to restore.
		return end{outcome: OutcomeFailed, errType: ErrSwapFailed, cause: err}
	}

	if s.drive.Kind == activities.KindStubdom {
		err = s.forwardStubdom(ctx)
	} else {
		err = s.forwardDom0(ctx)
	}
	if err != nil {
		return s.restore(dctx, err, isCanceled(ctx, err))
	}
	if s.in.Medium == "" {
		return end{outcome: OutcomeEjected}
	}
	return end{outcome: OutcomeChanged}
}

// eject ejects the old medium, retrying a locked tray by policy and then forcing it if the
// operator asked.
func (s *swap) eject(ctx workflow.Context) error {
	in := activities.EjectInput{Drive: s.drive, Key: s.key}
	_, err := call(s, ctx, activities.NameEject, act.Eject, in, "")
	if err == nil || CauseType(err) != activities.ErrTrayLocked || ctx.Err() != nil {
		return err
	}
	if !s.in.Force {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"the guest keeps the tray of %s locked (domain %s): nothing was changed; ask the guest to eject the disc, or retry with force to eject it anyway",
			s.in.Vdev, s.domain()), activities.ErrTrayLocked, err)
	}
	s.log.Warn("Tray locked by the guest; forcing the eject", "step", activities.NameEject)
	in.Force = true
	_, err = call(s, ctx, activities.NameEject, act.Eject, in, "force")
	return err
}

// forwardStubdom runs a stubdom change after the eject.
//
// Before QEMU 9.1, an fd the stubdom add-fd'd dies with the last QMP connection if no medium
// uses it yet, so a worker that crashes between WaitFdset and ChangeMedium leaves QEMU
// without the set (ErrFdsetGone). The stubdom adds an fd only when its vbd connects, so the
// cure is to cycle the vbd: release, detach, attach, wait, change again, like dom0's AddFD
// round. Runs recorded before this existed restored the old medium instead; GetVersion
// keeps them replaying.
func (s *swap) forwardStubdom(ctx workflow.Context) error {
	for round := 1; ; round++ {
		if err := s.detach(ctx); err != nil {
			return err
		}
		filename, err := s.attachAndInsert(ctx, s.insp.NewParams, s.insp.Medium != "")
		if err == nil {
			return s.recordAndVerify(ctx, s.insp.Medium, s.insp.Format, s.insp.NewParams, filename)
		}
		if CauseType(err) != activities.ErrFdsetGone || round >= addFDRounds || ctx.Err() != nil {
			return err
		}
		if workflow.GetVersion(ctx, changeStubdomReattach, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
			return err
		}
		s.log.Warn("QEMU lost the stubdom's fdset; cycling the PV disk", "step", activities.NameChangeMedium, "fdset", s.fdset)
	}
}

// forwardDom0 runs a dom0 change after the eject.
func (s *swap) forwardDom0(ctx workflow.Context) error {
	filename := ""
	if s.insp.Medium != "" {
		var err error
		if filename, err = s.insertDom0(ctx, s.insp.Medium, s.insp.Format); err != nil {
			return err
		}
	}
	return s.recordAndVerify(ctx, s.insp.Medium, s.insp.Format, s.insp.NewParams, filename)
}

// detach releases the stubdom's fdsets for the drive and detaches its vbd. A paused guest's
// QEMU keeps a released fd, so that the vbd could never close: DetachVBD refuses
// (ErrGuestPaused) and detach waits, with a growing pause, until the guest runs, then
// releases again (a remove-fd while the VM runs closes what the paused QEMU kept) and
// detaches. The wait has no bound: on a restore, the drive can be given its medium back as
// soon as the guest runs again; an operator may cancel a change that waits.
func (s *swap) detach(ctx workflow.Context) error {
	wait := pausedFirstWait
	for {
		if err := s.releaseFdsets(ctx); err != nil {
			return err
		}
		det, err := call(s, ctx, activities.NameDetachVBD, act.DetachVBD, activities.DetachVBDInput{Drive: s.drive, Key: s.key}, "")
		s.addKnown(det.ReleasedFdsets...)
		if err == nil || CauseType(err) != activities.ErrGuestPaused || ctx.Err() != nil {
			return err
		}
		if workflow.GetVersion(ctx, changeWaitPaused, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
			return err
		}
		s.log.Warn("The guest is paused; waiting for it to run before detaching the PV disk", "step", activities.NameDetachVBD, "wait", wait)
		s.waiting = WaitingUnpause
		serr := workflow.Sleep(ctx, wait)
		s.waiting = ""
		if serr != nil {
			return serr
		}
		wait = min(2*wait, pausedMaxWait)
	}
}

// releaseFdsets removes the stubdom's fdsets for the drive and remembers their ids.
func (s *swap) releaseFdsets(ctx workflow.Context) error {
	rel, err := call(s, ctx, activities.NameReleaseFdset, act.ReleaseFdset, activities.ReleaseFdsetInput{Drive: s.drive, Key: s.key}, "")
	if err != nil {
		return err
	}
	s.addKnown(rel.FdsetIDs...)
	return nil
}

// attachAndInsert attaches the stubdom vbd with params, waits for the stubdom's new fdset
// and, if insert, puts it in the drive. It returns the inserted file name ("" if none).
func (s *swap) attachAndInsert(ctx workflow.Context, params string, insert bool) (string, error) {
	if _, err := call(s, ctx, activities.NameAttachVBD, act.AttachVBD,
		activities.AttachVBDInput{Drive: s.drive, Key: s.key, Params: params}, "params "+params); err != nil {
		return "", err
	}
	w, err := call(s, ctx, activities.NameWaitFdset, act.WaitFdset, activities.WaitFdsetInput{
		Drive:       s.drive,
		KnownFdsets: slices.Clone(s.known),
		Interval:    s.fdsetInterval(),
		Wake:        !s.bench().FdsetPollOnly,
		Timeout:     fdsetWaitTimeout,
	}, fmt.Sprintf("known %v", s.known))
	if err != nil {
		return "", err
	}
	s.fdset = w.FdsetID
	s.addKnown(w.FdsetID)
	if !insert {
		return "", nil
	}
	if _, err := call(s, ctx, activities.NameChangeMedium, act.ChangeMedium, activities.ChangeMediumInput{
		Drive: s.drive, Key: s.key, FdsetID: w.FdsetID, Format: activities.FormatHostDevice,
	}, fmt.Sprintf("fdset %d", w.FdsetID)); err != nil {
		return "", err
	}
	return activities.FdsetFilename(w.FdsetID), nil
}

// insertDom0 add-fds medium to dom0 QEMU and inserts it, redoing the add-fd if QEMU lost the
// set (a dropped QMP connection before QEMU 9.1). It returns the inserted file name.
func (s *swap) insertDom0(ctx workflow.Context, medium, format string) (string, error) {
	for round := 1; ; round++ {
		add, err := call(s, ctx, activities.NameAddFD, act.AddFD,
			activities.AddFDInput{Drive: s.drive, Key: s.key, Medium: medium, Format: format, RunID: s.addFDRunID()}, format+":"+medium)
		if err != nil {
			return "", err
		}
		s.fdset = add.FdsetID
		_, err = call(s, ctx, activities.NameChangeMedium, act.ChangeMedium, activities.ChangeMediumInput{
			Drive: s.drive, Key: s.key, FdsetID: add.FdsetID, Format: format,
		}, fmt.Sprintf("fdset %d", add.FdsetID))
		if err == nil {
			return activities.FdsetFilename(add.FdsetID), nil
		}
		if CauseType(err) != activities.ErrFdsetGone || round >= addFDRounds || ctx.Err() != nil {
			return "", err
		}
		s.log.Warn("QEMU lost the fdset; adding the medium again", "step", activities.NameAddFD, "fdset", add.FdsetID)
	}
}

// recordAndVerify writes libxl's records and checks QEMU's view.
func (s *swap) recordAndVerify(ctx workflow.Context, medium, format, params, filename string) error {
	detail := "params " + params
	if s.resumed {
		// The history then says why Eject, AddFD and ChangeMedium are not there.
		detail += "; the change had taken before a worker was lost"
	}
	if _, err := call(s, ctx, activities.NameRecord, act.Record, activities.RecordInput{
		Drive: s.drive, Key: s.key, Medium: medium, Format: format, Params: params,
	}, detail); err != nil {
		return err
	}
	detail = "empty"
	if filename != "" {
		detail = filename
	}
	_, err := call(s, ctx, activities.NameVerify, act.Verify, activities.VerifyInput{Drive: s.drive, Filename: filename}, detail)
	return err
}

// restore puts the old medium back after cause (a step's permanent failure, or a
// cancellation) on the disconnected context ctx.
func (s *swap) restore(ctx workflow.Context, cause error, canceled bool) end {
	s.phase = PhaseRestore
	s.log.Warn("Change failed; putting the old medium back", "step", s.failedAt, "error", cause)
	var err error
	for round := 1; round <= restoreRounds; round++ {
		if err = s.restoreOnce(ctx); err == nil {
			break
		}
		s.log.Error("Restore failed", "round", round, "error", err)
		if deviceModelGone(err) && workflow.GetVersion(ctx, changeDeviceModelGone, workflow.DefaultVersion, 1) != workflow.DefaultVersion {
			// No later round can reach a QEMU (or a domain) that is gone.
			break
		}
		if round < restoreRounds {
			_ = workflow.Sleep(ctx, restorePause(round))
		}
	}
	switch {
	case err != nil:
		return end{outcome: OutcomeRestoreFailed, errType: ErrRestoreFailed, cause: err, action: s.manualAction(err)}
	case canceled:
		return end{outcome: OutcomeCanceled, canceled: true}
	}
	return end{outcome: OutcomeFailedRestored, errType: ErrSwapFailedRestored, cause: cause}
}

// restoreOnce runs the restore sequence once; every step is idempotent, so a round may
// start over whatever an earlier one left.
func (s *swap) restoreOnce(ctx workflow.Context) error {
	old := s.insp
	// Whatever is in QEMU now must go first: a stubdom's PV disk cannot be detached while
	// QEMU holds it, and a guest-locked tray would refuse the change. The medium being
	// forced out is the one this run put in, moments ago.
	if _, err := call(s, ctx, activities.NameEject, act.Eject, activities.EjectInput{Drive: s.drive, Key: s.key, Force: true}, "force"); err != nil {
		return err
	}
	filename := ""
	if s.drive.Kind == activities.KindStubdom {
		if err := s.detach(ctx); err != nil {
			return err
		}
		var err error
		if filename, err = s.attachAndInsert(ctx, old.OldParams, old.OldMedium != ""); err != nil {
			return err
		}
	} else if old.OldMedium != "" {
		var err error
		if filename, err = s.insertDom0(ctx, old.OldMedium, old.OldFormat); err != nil {
			return err
		}
	}
	return s.recordAndVerify(ctx, old.OldMedium, old.OldFormat, old.OldParams, filename)
}

// deviceModelGone reports whether err says the guest's QEMU or the domain itself is gone.
func deviceModelGone(err error) bool {
	switch CauseType(err) {
	case activities.ErrDeviceModelGone, activities.ErrNoSuchDomain:
		return true
	}
	return false
}

// manualAction tells a person how to repair a drive whose restore failed with err.
func (s *swap) manualAction(err error) string {
	if deviceModelGone(err) {
		return fmt.Sprintf("the device model of domain %s on host %s is gone, so drive %s has no medium and none can be put back: %s; once the domain runs again, check the drive with `cdswap status` and submit the change again",
			s.domain(), s.in.Host, s.in.Vdev, ErrorMessage(err, ""))
	}
	cmd := fmt.Sprintf("xl cd-eject %s %s", s.domain(), s.in.Vdev)
	if old := s.insp.OldMedium; old != "" {
		if f := s.insp.OldFormat; f != "" && f != activities.FormatRaw {
			old = f + ":" + old // xl's disk spec prefix
		}
		cmd = fmt.Sprintf("xl cd-insert %s %s %s", s.domain(), s.in.Vdev, old)
	}
	what := "its medium"
	if s.drive.Kind == activities.KindStubdom {
		what = fmt.Sprintf("its medium or its stubdom vbd (/libxl/%d/device/vbd/%d)", s.drive.StubDomID, s.drive.DevID)
	}
	return fmt.Sprintf("drive %s of domain %s on host %s may have lost %s: restoring failed at %s (%s); fix that, then run `%s` on %s, or submit the change again",
		s.in.Vdev, s.domain(), s.in.Host, what, s.restoreFailedAt, ErrorMessage(err, ""), cmd, s.in.Host)
}

// unlock releases libxl's lock on the disconnected context ctx. A failure is logged only:
// the lock dies with the worker process at worst.
func (s *swap) unlock(ctx workflow.Context) {
	s.phase = PhaseDone
	in := activities.UnlockInput{DomID: s.in.DomID, Key: s.key}
	if s.runID != "" {
		in.Vdev, in.RunID = s.in.Vdev, s.runID
	}
	if _, err := call(s, ctx, activities.NameUnlock, act.Unlock, in, ""); err != nil {
		s.log.Error("Unlock failed", "step", activities.NameUnlock, "error", err)
	}
}

// finish records the outcome and returns what the run returns.
func (s *swap) finish(ctx workflow.Context, e end) (ChangeMediumResult, error) {
	s.phase, s.step, s.outcome = PhaseDone, "", e.outcome
	res := ChangeMediumResult{
		Outcome:       e.outcome,
		Kind:          s.drive.Kind,
		Old:           s.insp.OldMedium,
		New:           s.in.Medium,
		Steps:         slices.Clone(s.steps),
		FdsetID:       s.fdset,
		Action:        e.action,
		CancelTooLate: s.cancelTooLate,
	}
	if e.cause != nil {
		res.ErrorType, res.Error = shownType(e.cause), ErrorMessage(e.cause, "")
	}
	s.upsertOutcome(ctx, e.outcome)
	s.log.Info("Change ended", "outcome", e.outcome, "error", res.Error)
	switch {
	case e.canceled:
		return ChangeMediumResult{}, temporal.NewCanceledError(res)
	case e.errType == "":
		return res, nil
	}
	return ChangeMediumResult{}, temporal.NewApplicationErrorWithOptions(s.message(e, res), e.errType,
		temporal.ApplicationErrorOptions{NonRetryable: true, Cause: e.cause, Details: []any{res}})
}

// message is the run's error message for a person.
func (s *swap) message(e end, res ChangeMediumResult) string {
	what := fmt.Sprintf("change of %s on domain %s (host %s)", s.in.Vdev, s.domain(), s.in.Host)
	switch e.errType {
	case ErrRefused:
		return fmt.Sprintf("%s refused: %s", what, res.Error)
	case ErrSwapFailedRestored:
		old := "the drive was left empty, as it was"
		if res.Old != "" {
			old = fmt.Sprintf("the old medium %s was put back", res.Old)
		}
		return fmt.Sprintf("%s failed at %s: %s; %s", what, s.failedAt, res.Error, old)
	case ErrRestoreFailed:
		return fmt.Sprintf("%s failed, and putting the old medium back failed too: %s", what, e.action)
	}
	return fmt.Sprintf("%s failed at %s: %s", what, s.failedAt, res.Error)
}

// upsertOutcome sets CdswapOutcome, if the starter set it (to "running"): an attribute
// that is not registered on the namespace would fail the workflow task over and over, and
// one the starter could set is registered.
func (s *swap) upsertOutcome(ctx workflow.Context, o Outcome) {
	if _, ok := workflow.GetTypedSearchAttributes(ctx).GetKeyword(CdswapOutcome); !ok {
		return
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, CdswapOutcome.ValueSet(string(o))); err != nil {
		s.log.Error("Upsert of CdswapOutcome failed", "error", err)
	}
}

// progress answers ProgressQuery.
func (s *swap) progress() (Progress, error) {
	return Progress{Phase: s.phase, Step: s.step, Kind: s.drive.Kind, Steps: slices.Clone(s.steps), Outcome: s.outcome, Waiting: s.waiting}, nil
}

// domain names the guest for messages.
func (s *swap) domain() string {
	switch {
	case s.drive.Name != "":
		return s.drive.Name
	case s.in.Domain != "":
		return s.in.Domain
	}
	return fmt.Sprint(s.in.DomID)
}

// addKnown adds fdset ids to the sorted set s.known.
func (s *swap) addKnown(ids ...int64) {
	for _, id := range ids {
		if i, found := slices.BinarySearch(s.known, id); !found {
			s.known = slices.Insert(s.known, i, id)
		}
	}
}

// attempter is what every activities result has, through activities.Meta.
type attempter interface{ AttemptNumber() int32 }

// call runs one step with the step's options and records it: as a local activity if the
// run's short steps are local and step is one (localSteps), else as a regular activity on the
// host's queue.
func call[I, O any](s *swap, ctx workflow.Context, step string, fn func(context.Context, I) (O, error), in I, detail string) (O, error) {
	var out O
	restore := s.phase == PhaseRestore
	opts := activityOptions(s.in.Host, step, restore)
	opts.DisableEagerExecution = s.bench().NoEager
	local := s.isLocal(step)
	s.steps = append(s.steps, StepRecord{Name: step, Started: workflow.Now(ctx), Restore: restore, Detail: detail, Local: local})
	i := len(s.steps) - 1
	s.step = step
	var err error
	var localAttempts int32
	if local {
		localAttempts, err = s.runLocal(ctx, i, step, opts, fn, in, &out)
	} else {
		err = workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), fn, in).Get(ctx, &out)
	}
	s.step = ""
	r := &s.steps[i]
	r.Ended = workflow.Now(ctx)
	if err == nil {
		if a, ok := any(out).(attempter); ok {
			r.Attempts = a.AttemptNumber()
		}
		if local {
			r.Attempts = localAttempts
		}
		return out, nil
	}
	r.Attempts = failedAttempts(err, opts.RetryPolicy.MaximumAttempts)
	if local {
		r.Attempts = localAttempts
	}
	r.ErrorType, r.Error = shownType(err), ErrorMessage(err, "")
	if r.ErrorType == "" && isCanceled(ctx, err) {
		r.ErrorType = "Canceled"
	}
	switch s.phase {
	case PhaseSwap:
		s.failedAt = step
	case PhaseRestore:
		s.restoreFailedAt = step
	}
	return out, err
}

// failedAttempts is how many attempts a failed step took: from the last attempt's
// FailureDetails if the activity used activities.NewError, else the policy's maximum if
// the server says it was reached, else unknown (0).
func failedAttempts(err error, maxAttempts int32) int32 {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.HasDetails() {
		var d activities.FailureDetails
		if appErr.Details(&d) == nil && d.Attempt > 0 {
			return d.Attempt
		}
	}
	var actErr *temporal.ActivityError
	if errors.As(err, &actErr) && actErr.RetryState() == enumspb.RETRY_STATE_MAXIMUM_ATTEMPTS_REACHED {
		return maxAttempts
	}
	return 0
}

// shownType is CauseType for a person: "" where the type is only the Go type name of a plain
// error an activity returned ("wrapError"), which the SDK sends as the error's type. The
// activities' own errors (activities.NewError) always carry FailureDetails; plain ones none.
func shownType(err error) string {
	var actErr *temporal.ActivityError
	if errors.As(err, &actErr) {
		//nolint:errorlint // the activity's own error is its direct cause, not any error below it
		if appErr, ok := actErr.Unwrap().(*temporal.ApplicationError); ok && !appErr.HasDetails() {
			return ""
		}
	}
	return CauseType(err)
}

// isCanceled reports whether err ends a step because the run was canceled.
func isCanceled(ctx workflow.Context, err error) bool {
	return ctx.Err() != nil || temporal.IsCanceledError(err)
}

// isRefusal reports whether an Inspect error refuses the request (a permanent answer about
// the request itself) rather than failing it.
func isRefusal(err error) bool {
	switch CauseType(err) {
	case activities.ErrBadInput, activities.ErrWrongHost, activities.ErrNoSuchDomain,
		activities.ErrNoSuchDrive, activities.ErrNotCDROM, activities.ErrUnsupportedDeviceModel,
		activities.ErrMediumOutsideRoots, activities.ErrMediumNotFound,
		activities.ErrMediumNotRegular, activities.ErrFormatMismatch, activities.ErrGuestPaused:
		return true
	}
	return false
}

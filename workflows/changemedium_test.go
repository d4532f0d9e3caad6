package workflows_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/workflows"
)

// Expected call sequences.
var (
	stubdomInsert = []string{"Inspect", "Lock", "Eject", "ReleaseFdset", "DetachVBD", "AttachVBD", "WaitFdset", "ChangeMedium", "Record", "Verify", "Unlock"}
	stubdomEject  = []string{"Inspect", "Lock", "Eject", "ReleaseFdset", "DetachVBD", "AttachVBD", "WaitFdset", "Record", "Verify", "Unlock"}
	dom0Insert    = []string{"Inspect", "Lock", "Eject", "AddFD", "ChangeMedium", "Record", "Verify", "Unlock"}
	dom0Eject     = []string{"Inspect", "Lock", "Eject", "Record", "Verify", "Unlock"}
	// stubdomRestore is the restore of an old medium on a stubdom guest, after the forced
	// eject of whatever the failed change left.
	stubdomRestore = []string{"Eject", "ReleaseFdset", "DetachVBD", "AttachVBD", "WaitFdset", "ChangeMedium", "Record", "Verify"}
)

func concat(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestChangeMediumSuccess(t *testing.T) {
	tests := []struct {
		name    string
		kind    activities.Kind
		medium  string
		format  string
		calls   []string
		outcome workflows.Outcome
		fdset   int64
	}{
		{name: "stubdom insert", kind: activities.KindStubdom, medium: newISO, calls: stubdomInsert, outcome: workflows.OutcomeChanged, fdset: 10},
		{name: "stubdom eject", kind: activities.KindStubdom, medium: "", calls: stubdomEject, outcome: workflows.OutcomeEjected, fdset: 10},
		{name: "dom0 insert", kind: activities.KindDom0, medium: newISO, calls: dom0Insert, outcome: workflows.OutcomeChanged, fdset: 20},
		{name: "dom0 insert qcow2", kind: activities.KindDom0, medium: "/isos/new.qcow2", format: "qcow2", calls: dom0Insert, outcome: workflows.OutcomeChanged, fdset: 20},
		{name: "dom0 eject", kind: activities.KindDom0, medium: "", calls: dom0Eject, outcome: workflows.OutcomeEjected, fdset: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(tt.kind)
			in := testInput()
			in.Medium, in.Format = tt.medium, tt.format
			env, r := newEnv(t, h, in)
			r.execute(t, in)
			require.NoError(t, r.err)

			assert.Equal(t, tt.calls, h.Names())
			assert.Equal(t, tt.outcome, r.res.Outcome)
			assert.Equal(t, tt.kind, r.res.Kind)
			assert.Equal(t, oldISO, r.res.Old)
			assert.Equal(t, tt.medium, r.res.New)
			assert.Equal(t, tt.fdset, r.res.FdsetID)
			assert.Empty(t, r.res.Error)
			assert.Equal(t, tt.calls, stepNames(r.res.Steps))
			for _, s := range r.res.Steps {
				assert.Equal(t, int32(1), s.Attempts, "step %s attempts", s.Name)
				assert.Empty(t, s.Error, "step %s error", s.Name)
				assert.False(t, s.Ended.Before(s.Started), "step %s ended before it started", s.Name)
			}
			assert.Equal(t, []string{string(tt.outcome)}, r.outcomes, "CdswapOutcome upserts")

			// The lock is keyed by the workflow id, in and out.
			wantID := workflows.WorkflowID(testHost, testDomID, testVdev)
			assert.Equal(t, []activities.LockInput{{DomID: testDomID, Key: wantID}}, fakehost.Inputs[activities.LockInput](h, "Lock"))
			// Inspect keeps its answer for the run (local Eject), and Unlock deletes it.
			assert.Equal(t, []activities.UnlockInput{{DomID: testDomID, Key: wantID, Vdev: testVdev, RunID: testRunID}}, fakehost.Inputs[activities.UnlockInput](h, "Unlock"))
			ej := fakehost.Inputs[activities.EjectInput](h, "Eject")
			require.Len(t, ej, 1)
			assert.False(t, ej[0].Force, "Eject forced without being asked")

			wantFormat := tt.format
			if tt.medium != "" && wantFormat == "" {
				wantFormat = activities.FormatRaw
			}
			insp := fakehost.Inputs[activities.InspectInput](h, "Inspect")
			require.Len(t, insp, 1)
			assert.Equal(t, activities.InspectInput{Host: testHost, DomID: testDomID, Vdev: testVdev, Medium: tt.medium, Format: wantFormat, RunID: testRunID, Resume: true}, insp[0])

			rec := fakehost.Inputs[activities.RecordInput](h, "Record")
			require.Len(t, rec, 1)
			assert.Equal(t, h.Params(tt.medium), rec[0].Params)
			assert.Equal(t, tt.medium, rec[0].Medium)
			assert.Equal(t, wantFormat, rec[0].Format)

			ver := fakehost.Inputs[activities.VerifyInput](h, "Verify")
			require.Len(t, ver, 1)
			wantFile := ""
			if tt.medium != "" {
				wantFile = activities.FdsetFilename(tt.fdset)
			}
			assert.Equal(t, wantFile, ver[0].Filename)

			switch tt.kind {
			case activities.KindStubdom:
				att := fakehost.Inputs[activities.AttachVBDInput](h, "AttachVBD")
				require.Len(t, att, 1)
				assert.Equal(t, h.Params(tt.medium), att[0].Params)
				wait := fakehost.Inputs[activities.WaitFdsetInput](h, "WaitFdset")
				require.Len(t, wait, 1)
				assert.Equal(t, []int64{stubOldFdset}, wait[0].KnownFdsets)
				assert.Equal(t, 50*time.Millisecond, wait[0].Interval)
				if tt.medium != "" {
					cm := fakehost.Inputs[activities.ChangeMediumInput](h, "ChangeMedium")
					require.Len(t, cm, 1)
					assert.Equal(t, int64(10), cm[0].FdsetID)
					assert.Equal(t, activities.FormatHostDevice, cm[0].Format)
				}
			case activities.KindDom0:
				if tt.medium != "" {
					add := fakehost.Inputs[activities.AddFDInput](h, "AddFD")
					require.Len(t, add, 1)
					assert.Equal(t, tt.medium, add[0].Medium)
					assert.Equal(t, wantFormat, add[0].Format)
					cm := fakehost.Inputs[activities.ChangeMediumInput](h, "ChangeMedium")
					require.Len(t, cm, 1)
					assert.Equal(t, int64(20), cm[0].FdsetID)
					assert.Equal(t, wantFormat, cm[0].Format)
				}
			}

			// The progress query still answers after the end.
			v, err := env.QueryWorkflow(workflows.ProgressQuery)
			require.NoError(t, err)
			var p workflows.Progress
			require.NoError(t, v.Get(&p))
			assert.Equal(t, workflows.PhaseDone, p.Phase)
			assert.Equal(t, tt.outcome, p.Outcome)
			assert.Equal(t, "", p.Step)
			assert.Len(t, p.Steps, len(tt.calls))
		})
	}
}

func TestChangeMediumRefused(t *testing.T) {
	tests := []struct {
		name      string
		kind      activities.Kind
		mutate    func(*workflows.ChangeMediumInput)
		inspect   fakehost.Hook
		calls     []string
		causeType string
	}{
		{
			name:      "traditional refused by Inspect",
			kind:      activities.KindTraditional,
			inspect:   fakehost.FailWith(activities.ErrUnsupportedDeviceModel),
			calls:     []string{"Inspect"},
			causeType: activities.ErrUnsupportedDeviceModel,
		},
		{
			name:      "traditional let through by Inspect",
			kind:      activities.KindTraditional,
			calls:     []string{"Inspect"},
			causeType: activities.ErrUnsupportedDeviceModel,
		},
		{
			name:      "medium outside roots",
			kind:      activities.KindStubdom,
			inspect:   fakehost.FailWith(activities.ErrMediumOutsideRoots),
			calls:     []string{"Inspect"},
			causeType: activities.ErrMediumOutsideRoots,
		},
		{
			name:      "not a cdrom",
			kind:      activities.KindDom0,
			inspect:   fakehost.FailWith(activities.ErrNotCDROM),
			calls:     []string{"Inspect"},
			causeType: activities.ErrNotCDROM,
		},
		{
			name:      "dom0 domid",
			kind:      activities.KindDom0,
			mutate:    func(in *workflows.ChangeMediumInput) { in.DomID = 0 },
			causeType: activities.ErrBadInput,
		},
		{
			name:      "relative medium",
			kind:      activities.KindDom0,
			mutate:    func(in *workflows.ChangeMediumInput) { in.Medium = "isos/new.iso" },
			causeType: activities.ErrBadInput,
		},
		{
			name:      "no vdev",
			kind:      activities.KindDom0,
			mutate:    func(in *workflows.ChangeMediumInput) { in.Vdev = "" },
			causeType: activities.ErrBadInput,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(tt.kind)
			if tt.inspect != nil {
				h.On("Inspect", tt.inspect)
			}
			in := testInput()
			if tt.mutate != nil {
				tt.mutate(&in)
			}
			_, r := newEnv(t, h, in)
			r.execute(t, in)

			appErr := requireAppError(t, r.err, workflows.ErrRefused)
			assert.Equal(t, tt.causeType, workflows.CauseType(r.err))
			assert.Equal(t, tt.calls, h.Names(), "nothing but Inspect may run")
			assert.Equal(t, workflows.OutcomeRefused, r.res.Outcome)
			assert.Equal(t, tt.causeType, r.res.ErrorType)
			assert.NotEmpty(t, r.res.Error)
			assert.Contains(t, appErr.Error(), "refused")
		})
	}
}

func TestChangeMediumInPlace(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	h.InPlace = true
	r := runChange(t, h)
	require.NoError(t, r.err)
	assert.Equal(t, workflows.OutcomeUnchanged, r.res.Outcome)
	assert.Equal(t, []string{"Inspect"}, h.Names())
}

func TestChangeMediumTrayLocked(t *testing.T) {
	lockedUnlessForced := func(ctx context.Context, n int, in any) error {
		if in.(activities.EjectInput).Force {
			return nil
		}
		return activities.NewError(ctx, activities.ErrTrayLocked, true, nil,
			"Device 'ide-5632' is locked and force was not specified, wait for tray to open and try again")
	}

	t.Run("forced", func(t *testing.T) {
		h := newFakeHost(activities.KindStubdom)
		h.On("Eject", lockedUnlessForced)
		in := testInput()
		in.Force = true
		_, r := newEnv(t, h, in)
		r.execute(t, in)
		require.NoError(t, r.err)
		assert.Equal(t, workflows.OutcomeChanged, r.res.Outcome)

		ej := fakehost.Inputs[activities.EjectInput](h, "Eject")
		require.Len(t, ej, 6, "5 attempts unforced, then one forced")
		for i, e := range ej[:5] {
			assert.False(t, e.Force, "attempt %d forced", i+1)
		}
		assert.True(t, ej[5].Force)
		// The rest of the swap ran once.
		assert.Equal(t, concat(stubdomInsert[:2], []string{"Eject", "Eject", "Eject", "Eject", "Eject", "Eject"}, stubdomInsert[3:]), h.Names())

		require.Equal(t, "Eject", r.res.Steps[2].Name)
		assert.Equal(t, int32(5), r.res.Steps[2].Attempts)
		assert.Equal(t, activities.ErrTrayLocked, r.res.Steps[2].ErrorType)
		assert.Contains(t, r.res.Steps[2].Error, "is locked")
		require.Equal(t, "Eject", r.res.Steps[3].Name)
		assert.Equal(t, "force", r.res.Steps[3].Detail)
		assert.Equal(t, int32(1), r.res.Steps[3].Attempts)
		assert.Empty(t, r.res.Steps[3].Error)
	})

	t.Run("not forced", func(t *testing.T) {
		h := newFakeHost(activities.KindStubdom)
		h.On("Eject", lockedUnlessForced)
		r := runChange(t, h)

		appErr := requireAppError(t, r.err, workflows.ErrSwapFailed)
		assert.Equal(t, activities.ErrTrayLocked, workflows.CauseType(r.err))
		assert.Contains(t, appErr.Error(), "retry with force")
		assert.Equal(t, workflows.OutcomeFailed, r.res.Outcome)
		// Nothing was detached: the drive is untouched, and the lock is released.
		assert.Equal(t, []string{"Inspect", "Lock", "Eject", "Eject", "Eject", "Eject", "Eject", "Unlock"}, h.Names())
		for _, e := range fakehost.Inputs[activities.EjectInput](h, "Eject") {
			assert.False(t, e.Force)
		}
		assert.Equal(t, []string{string(workflows.OutcomeFailed)}, r.outcomes)
	})
}

func TestChangeMediumLockBusy(t *testing.T) {
	h := newFakeHost(activities.KindDom0)
	h.On("Lock", func(ctx context.Context, n int, in any) error {
		return activities.NewError(ctx, activities.ErrLockBusy, true, nil, "libxl-device-changes-lock of domain 7 is held by another process")
	})
	r := runChange(t, h)
	require.Error(t, r.err)
	assert.Equal(t, workflows.OutcomeFailed, r.res.Outcome)
	assert.Equal(t, activities.ErrLockBusy, workflows.CauseType(r.err))
	names := h.Names()
	assert.NotContains(t, names, "Eject")
	assert.Equal(t, "Unlock", names[len(names)-1])
	assert.Len(t, fakehost.Inputs[activities.LockInput](h, "Lock"), 30, "Lock attempts")
}

func TestChangeMediumWaitFdsetTimeoutRestores(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	h.On("WaitFdset", fakehost.FailCalls(1, activities.ErrFdsetTimeout, false, "no new fdset with opaque stub-devid:5632 after 25s: does the stubdom add-fd its cdrom?"))
	r := runChange(t, h)

	appErr := requireAppError(t, r.err, workflows.ErrSwapFailedRestored)
	assert.Equal(t, activities.ErrFdsetTimeout, workflows.CauseType(r.err))
	assert.Contains(t, appErr.Error(), "failed at WaitFdset")
	assert.Contains(t, appErr.Error(), "the old medium "+oldISO+" was put back")

	assert.Equal(t, concat(stubdomInsert[:7], stubdomRestore, []string{"Unlock"}), h.Names())
	assert.Equal(t, workflows.OutcomeFailedRestored, r.res.Outcome)
	assert.Equal(t, activities.ErrFdsetTimeout, r.res.ErrorType)
	assert.Equal(t, []string{string(workflows.OutcomeFailedRestored)}, r.outcomes)
	assertRestoredOld(t, h, r, []int64{stubOldFdset})
}

// assertRestoredOld checks the restore calls of a stubdom run that failed after the detach:
// the old params went back in, the known fdsets were skipped, and the old medium was
// recorded and verified.
func assertRestoredOld(t *testing.T, h *fakehost.Host, r *run, wantKnown []int64) {
	t.Helper()
	ej := fakehost.Inputs[activities.EjectInput](h, "Eject")
	assert.True(t, ej[len(ej)-1].Force, "restore ejects by force")
	att := fakehost.Inputs[activities.AttachVBDInput](h, "AttachVBD")
	require.Len(t, att, 2)
	assert.Equal(t, newISO, att[0].Params)
	assert.Equal(t, oldISO, att[1].Params, "restore attaches the old params")
	wait := fakehost.Inputs[activities.WaitFdsetInput](h, "WaitFdset")
	require.NotEmpty(t, wait)
	assert.Equal(t, wantKnown, wait[len(wait)-1].KnownFdsets)
	cm := fakehost.Inputs[activities.ChangeMediumInput](h, "ChangeMedium")
	require.NotEmpty(t, cm)
	last := cm[len(cm)-1]
	assert.Equal(t, activities.FormatHostDevice, last.Format)
	rec := fakehost.Inputs[activities.RecordInput](h, "Record")
	require.Len(t, rec, 1)
	assert.Equal(t, activities.RecordInput{Drive: h.Drive(), Key: workflows.WorkflowID(testHost, testDomID, testVdev),
		Medium: oldISO, Format: activities.FormatRaw, Params: oldISO}, rec[0])
	ver := fakehost.Inputs[activities.VerifyInput](h, "Verify")
	require.Len(t, ver, 1)
	assert.Equal(t, activities.FdsetFilename(last.FdsetID), ver[0].Filename)
	assert.Equal(t, last.FdsetID, r.res.FdsetID)
	for _, s := range r.res.Steps {
		if s.Name == "Unlock" {
			assert.False(t, s.Restore)
		}
	}
	assert.True(t, r.res.Steps[len(r.res.Steps)-2].Restore, "Verify is a restore step")
}

func TestChangeMediumAttachFailureRestores(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	h.On("AttachVBD", func(ctx context.Context, n int, in any) error {
		if in.(activities.AttachVBDInput).Params == newISO {
			return activities.NewError(ctx, activities.ErrHotplugFailed, false, nil, "hotplug-status error: /isos/new.iso: no loop device")
		}
		return nil
	})
	r := runChange(t, h)

	require.Error(t, r.err)
	assert.Equal(t, workflows.OutcomeFailedRestored, r.res.Outcome)
	assert.Equal(t, activities.ErrHotplugFailed, workflows.CauseType(r.err))
	restore := []string{"Eject", "ReleaseFdset", "DetachVBD", "AttachVBD", "WaitFdset", "ChangeMedium", "Record", "Verify"}
	assert.Equal(t, concat(stubdomInsert[:6], restore, []string{"Unlock"}), h.Names())
	assertRestoredOld(t, h, r, []int64{stubOldFdset})
	att := fakehost.Inputs[activities.AttachVBDInput](h, "AttachVBD")
	assert.Equal(t, oldISO, att[1].Params)
}

func TestChangeMediumRestoreFails(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	h.On("AttachVBD", fakehost.FailWith(activities.ErrHotplugFailed))
	r := runChange(t, h)

	appErr := requireAppError(t, r.err, workflows.ErrRestoreFailed)
	assert.Equal(t, workflows.OutcomeRestoreFailed, r.res.Outcome)
	assert.Contains(t, r.res.Action, "xl cd-insert web1 hdc "+oldISO)
	assert.Contains(t, r.res.Action, "restoring failed at AttachVBD")
	assert.Contains(t, r.res.Action, "/libxl/8/device/vbd/5632")
	assert.Contains(t, appErr.Error(), r.res.Action)

	round := []string{"Eject", "ReleaseFdset", "DetachVBD", "AttachVBD"}
	assert.Equal(t, concat(stubdomInsert[:6], round, round, round, []string{"Unlock"}), h.Names())
	att := fakehost.Inputs[activities.AttachVBDInput](h, "AttachVBD")
	require.Len(t, att, 4)
	for _, a := range att[1:] {
		assert.Equal(t, oldISO, a.Params)
	}
	assert.Equal(t, []string{string(workflows.OutcomeRestoreFailed)}, r.outcomes)
}

func TestChangeMediumRestoreRetriesLonger(t *testing.T) {
	// A DetachVBD that stays busy in the swap and for a while during the restore: the
	// restore's longer policy outlasts it.
	h := newFakeHost(activities.KindStubdom)
	h.On("DetachVBD", fakehost.FailCalls(6, activities.ErrVBDBusy, true, "backend of vbd 5632 still state 5 after 10s"))
	r := runChange(t, h)

	require.Error(t, r.err)
	assert.Equal(t, workflows.OutcomeFailedRestored, r.res.Outcome)
	assert.Equal(t, activities.ErrVBDBusy, r.res.ErrorType)
	assert.Len(t, fakehost.Inputs[activities.DetachVBDInput](h, "DetachVBD"), 7, "3 swap attempts, then 4 restore attempts")
	var detachSteps []workflows.StepRecord
	for _, s := range r.res.Steps {
		if s.Name == "DetachVBD" {
			detachSteps = append(detachSteps, s)
		}
	}
	require.Len(t, detachSteps, 2)
	assert.Equal(t, int32(3), detachSteps[0].Attempts)
	assert.Equal(t, int32(4), detachSteps[1].Attempts)
	assert.True(t, detachSteps[1].Restore)
}

func TestChangeMediumDom0FdsetGoneRedoesAddFD(t *testing.T) {
	h := newFakeHost(activities.KindDom0)
	h.On("ChangeMedium", fakehost.FailCalls(1, activities.ErrFdsetGone, false, "fdset 20 is gone from QEMU"))
	r := runChange(t, h)

	require.NoError(t, r.err)
	assert.Equal(t, workflows.OutcomeChanged, r.res.Outcome)
	assert.Equal(t, []string{"Inspect", "Lock", "Eject", "AddFD", "ChangeMedium", "AddFD", "ChangeMedium", "Record", "Verify", "Unlock"}, h.Names())
	cm := fakehost.Inputs[activities.ChangeMediumInput](h, "ChangeMedium")
	assert.Equal(t, int64(21), cm[1].FdsetID)
	assert.Equal(t, int64(21), r.res.FdsetID)
	assert.Equal(t, activities.FdsetFilename(21), fakehost.Inputs[activities.VerifyInput](h, "Verify")[0].Filename)
}

func TestChangeMediumDom0VerifyFailureRestores(t *testing.T) {
	h := newFakeHost(activities.KindDom0)
	h.On("Verify", func(ctx context.Context, n int, in any) error {
		if in.(activities.VerifyInput).Filename == activities.FdsetFilename(20) {
			return activities.NewError(ctx, activities.ErrVerifyMismatch, true, nil, "ide-5632 holds nothing, want /dev/fdset/20")
		}
		return nil
	})
	r := runChange(t, h)

	require.Error(t, r.err)
	assert.Equal(t, workflows.OutcomeFailedRestored, r.res.Outcome)
	restore := []string{"Eject", "AddFD", "ChangeMedium", "Record", "Verify"}
	assert.Equal(t, concat(dom0Insert[:6], []string{"Verify", "Verify", "Verify"}, restore, []string{"Unlock"}), h.Names())
	add := fakehost.Inputs[activities.AddFDInput](h, "AddFD")
	require.Len(t, add, 2)
	assert.Equal(t, oldISO, add[1].Medium)
	assert.Equal(t, activities.FormatRaw, add[1].Format)
	rec := fakehost.Inputs[activities.RecordInput](h, "Record")
	require.Len(t, rec, 2)
	assert.Equal(t, "aio:"+oldISO, rec[1].Params)
	ver := fakehost.Inputs[activities.VerifyInput](h, "Verify")
	assert.Equal(t, activities.FdsetFilename(21), ver[len(ver)-1].Filename)
}

func TestChangeMediumDom0RestoreOfEmptyDrive(t *testing.T) {
	h := newFakeHost(activities.KindDom0)
	h.EmptyDrive = true
	h.On("ChangeMedium", fakehost.FailWith(activities.ErrFormatMismatch))
	r := runChange(t, h)

	require.Error(t, r.err)
	assert.Equal(t, workflows.OutcomeFailedRestored, r.res.Outcome)
	assert.Contains(t, r.err.Error(), "the drive was left empty")
	assert.Equal(t, concat(dom0Insert[:5], []string{"Eject", "Record", "Verify", "Unlock"}), h.Names())
	ver := fakehost.Inputs[activities.VerifyInput](h, "Verify")
	assert.Equal(t, []activities.VerifyInput{{Drive: h.Drive(), Filename: ""}}, ver)
}

func TestChangeMediumCanceledMidSwapRestores(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	in := testInput()
	env, r := newEnv(t, h, in)
	cancelDuring(t, env, h, "WaitFdset") // as an operator would mid-swap
	r.execute(t, in)

	require.Error(t, r.err)
	var canceled *temporal.CanceledError
	require.True(t, errors.As(r.err, &canceled), "error %v is not a CanceledError", r.err)
	assert.Equal(t, workflows.OutcomeCanceled, r.res.Outcome)
	assert.Equal(t, concat(stubdomInsert[:7], stubdomRestore, []string{"Unlock"}), h.Names())
	assertRestoredOld(t, h, r, []int64{stubOldFdset})
	assert.Equal(t, "Canceled", r.res.Steps[6].ErrorType)
	assert.Equal(t, []string{string(workflows.OutcomeCanceled)}, r.outcomes)
}

func TestChangeMediumCanceledBeforeLock(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	in := testInput()
	env, r := newEnv(t, h, in)
	cancelDuring(t, env, h, "Inspect")
	r.execute(t, in)

	var canceled *temporal.CanceledError
	require.True(t, errors.As(r.err, &canceled), "error %v is not a CanceledError", r.err)
	assert.Equal(t, workflows.OutcomeCanceled, r.res.Outcome)
	assert.Equal(t, []string{"Inspect", "Inspect"}, h.Names(), "the note asked for; nothing to restore or unlock")
	insp := fakehost.Inputs[activities.InspectInput](h, activities.NameInspect)
	assert.True(t, insp[1].NoteOnly, "the second Inspect asks for the run's note only")
}

// TestChangeMediumCanceledAtInspectAfterLostAttempt: canceled before its Inspect answered,
// a run whose note says an earlier, lost attempt of its workflow task had inspected the drive
// (and may have ejected: Inspect, Lock and Eject are local steps of one task) puts the old
// medium back and ends canceled, never leaving the drive empty. A run recorded before
// cancel-at-inspect-checks-note ends canceled at once.
func TestChangeMediumCanceledAtInspectAfterLostAttempt(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	h.NoteKept = true
	in := testInput()
	env, r := newEnv(t, h, in)
	cancelDuring(t, env, h, "Inspect")
	r.execute(t, in)

	var canceled *temporal.CanceledError
	require.True(t, errors.As(r.err, &canceled), "error %v is not a CanceledError", r.err)
	assert.Equal(t, workflows.OutcomeCanceled, r.res.Outcome)
	assert.Equal(t, concat([]string{"Inspect", "Inspect", "Lock"}, stubdomRestore, []string{"Unlock"}), h.Names())
	assert.Equal(t, oldISO, r.res.Old, "the old medium, from the note")
}

func TestChangeMediumProgressQuery(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	in := testInput()
	env, r := newEnv(t, h, in)
	var live workflows.Progress
	var liveErr error
	h.On("WaitFdset", func(ctx context.Context, n int, in any) error {
		// Ask while the step runs, as `cdswap watch` would.
		v, err := env.QueryWorkflow(workflows.ProgressQuery)
		if err != nil {
			liveErr = err
			return nil
		}
		liveErr = v.Get(&live)
		return nil
	})
	r.execute(t, in)
	require.NoError(t, r.err)
	require.NoError(t, liveErr)

	assert.Equal(t, workflows.PhaseSwap, live.Phase)
	assert.Equal(t, "WaitFdset", live.Step)
	assert.Equal(t, activities.KindStubdom, live.Kind)
	assert.Equal(t, workflows.Outcome(""), live.Outcome)
	require.Equal(t, stubdomInsert[:7], stepNames(live.Steps))
	running := live.Steps[6]
	assert.True(t, running.Ended.IsZero(), "the running step has no end")
	assert.Equal(t, int32(0), running.Attempts)
	for _, s := range live.Steps[:6] {
		assert.Equal(t, int32(1), s.Attempts, "step %s", s.Name)
		assert.False(t, s.Ended.IsZero(), "step %s", s.Name)
	}
}

func TestChangeMediumNoSearchAttributesNoUpsert(t *testing.T) {
	h := newFakeHost(activities.KindDom0)
	in := testInput()
	env := newTestEnv()
	workflows.Register(env)
	h.Register(env)
	upserts := 0
	env.OnUpsertTypedSearchAttributes(mock.Anything).Return(nil).Run(func(mock.Arguments) { upserts++ }).Maybe()
	env.ExecuteWorkflow(workflows.ChangeMedium, in)
	require.True(t, env.IsWorkflowCompleted())
	require.NoError(t, env.GetWorkflowError())
	assert.Equal(t, 0, upserts, "upserted an attribute the starter did not set")
	assert.Equal(t, dom0Insert, h.Names())
}

func TestChangeMediumStubdomChangeFailureSkipsNewFdset(t *testing.T) {
	// The new medium's fdset (10) was published but could not be inserted: the restore must
	// not take it for the old medium's.
	h := newFakeHost(activities.KindStubdom)
	h.On("ChangeMedium", func(ctx context.Context, n int, in any) error {
		if in.(activities.ChangeMediumInput).FdsetID == 10 {
			return activities.NewError(ctx, activities.ErrFormatMismatch, false, nil, "QEMU refused fdset 10")
		}
		return nil
	})
	r := runChange(t, h)

	require.Error(t, r.err)
	assert.Equal(t, workflows.OutcomeFailedRestored, r.res.Outcome)
	assert.Equal(t, concat(stubdomInsert[:8], stubdomRestore, []string{"Unlock"}), h.Names())
	assertRestoredOld(t, h, r, []int64{stubOldFdset, 10})
	cm := fakehost.Inputs[activities.ChangeMediumInput](h, "ChangeMedium")
	require.Len(t, cm, 2)
	assert.Equal(t, int64(11), cm[1].FdsetID, "the old medium goes in from the set published after the restore's attach")
}

func TestChangeMediumStubdomFdsetGoneCyclesTheVBD(t *testing.T) {
	// A worker crash between WaitFdset and ChangeMedium loses the stubdom's fdset (QEMU <
	// 9.1): the run detaches and re-attaches the PV disk so the stubdom publishes a new one.
	h := newFakeHost(activities.KindStubdom)
	h.On("ChangeMedium", fakehost.FailCalls(1, activities.ErrFdsetGone, false, "fdset 10 is gone from QEMU"))
	r := runChange(t, h)

	require.NoError(t, r.err)
	assert.Equal(t, workflows.OutcomeChanged, r.res.Outcome)
	cycle := []string{"ReleaseFdset", "DetachVBD", "AttachVBD", "WaitFdset", "ChangeMedium"}
	assert.Equal(t, concat(stubdomInsert[:8], cycle, stubdomInsert[8:]), h.Names())
	cm := fakehost.Inputs[activities.ChangeMediumInput](h, "ChangeMedium")
	require.Len(t, cm, 2)
	assert.Equal(t, int64(11), cm[1].FdsetID)
	assert.Equal(t, int64(11), r.res.FdsetID)
}

func TestChangeMediumStubdomFdsetGoneEveryRoundRestores(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	// Every forward round fails; the restore's ChangeMedium (the 4th) works.
	h.On("ChangeMedium", fakehost.FailCalls(3, activities.ErrFdsetGone, false, "fdset is gone from QEMU"))
	r := runChange(t, h)

	require.Error(t, r.err)
	assert.Equal(t, workflows.OutcomeFailedRestored, r.res.Outcome)
	assert.Len(t, fakehost.Inputs[activities.AttachVBDInput](h, "AttachVBD"), 4, "three forward rounds, then the restore")
}

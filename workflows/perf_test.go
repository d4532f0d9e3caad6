package workflows_test

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/workflows"
)

// regularSteps are the steps that stay regular activities since version 3 of
// local-short-steps.
var regularSteps = map[string]bool{activities.NameWaitFdset: true}

// vbdSteps are the steps that became local activities with version 2 of local-short-steps,
// ejectSteps with version 3, addFDSteps with version 5.
var (
	vbdSteps   = map[string]bool{activities.NameDetachVBD: true, activities.NameAttachVBD: true}
	ejectSteps = map[string]bool{activities.NameEject: true}
	addFDSteps = map[string]bool{activities.NameAddFD: true}
)

// TestChangeMediumLocalSteps checks which steps a new run runs as local activities: all
// but WaitFdset, on both guest kinds; none when a benchmark asks for the oldest way
// (BenchOptions.RegularSteps); not AddFD when it asks for the way before version 5 of
// local-short-steps (RegularAddFD), nor Eject before version 3 (RegularEject), nor the PV
// disk steps before version 2 (RegularVBD); and every step when it asks for WaitFdset local
// too (LocalWait). The steps, their
// order and the outcome are the same in every way.
func TestChangeMediumLocalSteps(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kind  activities.Kind
		bench *workflows.BenchOptions
		want  []string
	}{
		{"stubdom", activities.KindStubdom, nil, stubdomInsert},
		{"dom0", activities.KindDom0, nil, []string{"Inspect", "Lock", "Eject", "AddFD", "ChangeMedium", "Record", "Verify", "Unlock"}},
		{"stubdom regular", activities.KindStubdom, &workflows.BenchOptions{RegularSteps: true}, stubdomInsert},
		{"stubdom regular vbd", activities.KindStubdom, &workflows.BenchOptions{RegularVBD: true}, stubdomInsert},
		{"stubdom regular eject", activities.KindStubdom, &workflows.BenchOptions{RegularEject: true}, stubdomInsert},
		{"stubdom local wait", activities.KindStubdom, &workflows.BenchOptions{LocalWait: true}, stubdomInsert},
		{"dom0 local wait", activities.KindDom0, &workflows.BenchOptions{LocalWait: true}, []string{"Inspect", "Lock", "Eject", "AddFD", "ChangeMedium", "Record", "Verify", "Unlock"}},
		{"dom0 regular addfd", activities.KindDom0, &workflows.BenchOptions{RegularAddFD: true}, []string{"Inspect", "Lock", "Eject", "AddFD", "ChangeMedium", "Record", "Verify", "Unlock"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(tc.kind)
			in := testInput()
			in.Bench = tc.bench
			_, r := newEnv(t, h, in)
			r.execute(t, in)
			require.NoError(t, r.err)
			assert.Equal(t, workflows.OutcomeChanged, r.res.Outcome)
			assert.Equal(t, tc.want, h.Names())
			require.Len(t, r.res.Steps, len(tc.want))
			for _, s := range r.res.Steps {
				local := !regularSteps[s.Name]
				switch {
				case tc.bench == nil:
				case tc.bench.RegularSteps:
					local = false
				case tc.bench.RegularVBD:
					local = local && !vbdSteps[s.Name] && !ejectSteps[s.Name]
				case tc.bench.RegularEject:
					local = local && !ejectSteps[s.Name]
				case tc.bench.RegularAddFD:
					local = local && !addFDSteps[s.Name]
				case tc.bench.LocalWait:
					local = true
				}
				assert.Equal(t, local, s.Local, "step %s: Local", s.Name)
				if tc.bench == nil {
					assert.Equal(t, local, workflows.RunsLocal(s.Name), "step %s: RunsLocal", s.Name)
				}
				assert.EqualValues(t, 1, s.Attempts, "step %s: attempts", s.Name)
			}
		})
	}
}

// TestChangeMediumWaitFdsetWake checks that WaitFdset is asked to wake on the stubdom's vbd
// (WaitFdsetInput.Wake), and polls only when a benchmark asks for the old wait.
func TestChangeMediumWaitFdsetWake(t *testing.T) {
	for _, pollOnly := range []bool{false, true} {
		h := newFakeHost(activities.KindStubdom)
		in := testInput()
		if pollOnly {
			in.Bench = &workflows.BenchOptions{FdsetPollOnly: true, FdsetPollInterval: 20e6}
		}
		_, r := newEnv(t, h, in)
		r.execute(t, in)
		require.NoError(t, r.err)
		waits := fakehost.Inputs[activities.WaitFdsetInput](h, "WaitFdset")
		require.Len(t, waits, 1)
		assert.Equal(t, !pollOnly, waits[0].Wake, "Wake")
		if pollOnly {
			assert.EqualValues(t, 20e6, waits[0].Interval, "Interval")
		}
	}
}

// TestChangeMediumLocalRetriesRecorded checks that a local step retried by its policy
// records each failed attempt (the SDK keeps only a local activity's last), and that a
// non-retryable error is not retried.
func TestChangeMediumLocalRetriesRecorded(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	h.On("Verify", fakehost.FailCalls(2, activities.ErrTrayLocked, true, "the guest keeps the tray of hdc locked"))
	h.On("Record", fakehost.FailCalls(1, "wrapError", true, "xenstored restarting"))
	r := runChange(t, h)
	require.NoError(t, r.err)
	byName := map[string]workflows.StepRecord{}
	for _, s := range r.res.Steps {
		byName[s.Name] = s
	}
	assert.EqualValues(t, 3, byName["Verify"].Attempts)
	assert.Equal(t, []workflows.StepFailure{
		{Attempt: 1, ErrorType: activities.ErrTrayLocked, Error: "the guest keeps the tray of hdc locked"},
		{Attempt: 2, ErrorType: activities.ErrTrayLocked, Error: "the guest keeps the tray of hdc locked"},
	}, byName["Verify"].Failures)
	assert.EqualValues(t, 2, byName["Record"].Attempts)
	assert.Len(t, byName["Record"].Failures, 1)
	assert.Empty(t, byName["Inspect"].Failures)

	h = newFakeHost(activities.KindStubdom)
	h.On("Record", fakehost.FailCalls(1, activities.ErrBadInput, false, "no such drive"))
	r = runChange(t, h)
	require.Error(t, r.err)
	i := slices.IndexFunc(r.res.Steps, func(s workflows.StepRecord) bool { return s.Name == "Record" })
	require.GreaterOrEqual(t, i, 0)
	rec := r.res.Steps[i]
	assert.EqualValues(t, 1, rec.Attempts, "a non-retryable error is not retried: %+v", rec)
	assert.Empty(t, rec.Failures)
	assert.Equal(t, activities.ErrBadInput, rec.ErrorType)
}

// TestChangeMediumResumesTakenChange: a dom0 run whose worker was lost after its change took
// (Inspect, asked again by the run, answers Taken) records and verifies the change without
// ejecting the medium it put in; a run with AddFD regular (before version 5) never asks.
func TestChangeMediumResumesTakenChange(t *testing.T) {
	const taken = "/dev/fdset/9"
	for _, tc := range []struct {
		name  string
		bench *workflows.BenchOptions
		want  []string
	}{
		{"version 5", nil, []string{"Inspect", "Lock", "Record", "Verify", "Unlock"}},
		{"regular addfd", &workflows.BenchOptions{RegularAddFD: true}, []string{"Inspect", "Lock", "Eject", "AddFD", "ChangeMedium", "Record", "Verify", "Unlock"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(activities.KindDom0)
			h.Taken = taken
			in := testInput()
			in.Bench = tc.bench
			_, r := newEnv(t, h, in)
			r.execute(t, in)
			require.NoError(t, r.err)
			assert.Equal(t, workflows.OutcomeChanged, r.res.Outcome)
			assert.Equal(t, tc.want, h.Names())
			insp := fakehost.Inputs[activities.InspectInput](h, activities.NameInspect)
			require.Len(t, insp, 1)
			assert.Equal(t, tc.bench == nil, insp[0].Resume, "Inspect asked to resume")
			if tc.bench == nil {
				ver := fakehost.Inputs[activities.VerifyInput](h, activities.NameVerify)
				require.Len(t, ver, 1)
				assert.Equal(t, taken, ver[0].Filename, "Verify checks the file QEMU holds")
				i := slices.IndexFunc(r.res.Steps, func(s workflows.StepRecord) bool { return s.Name == activities.NameRecord })
				require.GreaterOrEqual(t, i, 0)
				assert.Contains(t, r.res.Steps[i].Detail, "the change had taken before a worker was lost", "Record's detail says why the history has no Eject")
			}
		})
	}
}

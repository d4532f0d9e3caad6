package workflows_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/workflows"
)

// A QEMU that dies at WaitFdset: the restore's first step finds it gone too, and the run
// ends after that one round, saying what happened, instead of trying two more.
func TestChangeMediumDeviceModelGoneStopsRestore(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	h.On("WaitFdset", fakehost.FailWith(activities.ErrDeviceModelGone))
	h.On("Eject", func(ctx context.Context, n int, _ any) error {
		if n > 1 {
			return activities.NewError(ctx, activities.ErrDeviceModelGone, false, nil, "QEMU of domain 7 is gone")
		}
		return nil
	})
	r := runChange(t, h)

	requireAppError(t, r.err, workflows.ErrRestoreFailed)
	assert.Equal(t, workflows.OutcomeRestoreFailed, r.res.Outcome)
	assert.Equal(t, activities.ErrDeviceModelGone, r.res.ErrorType)
	assert.Contains(t, r.res.Action, "device model of domain web1 on host h1 is gone")
	assert.Equal(t, concat(stubdomInsert[:7], []string{"Eject", "Unlock"}), h.Names(), "one restore round")
}

// A plain Go error from an activity carries the Go type name as its type ("wrapError"):
// the step records and the result leave it out.
func TestChangeMediumPlainErrorHasNoTypeName(t *testing.T) {
	h := newFakeHost(activities.KindDom0)
	h.On("Inspect", func(context.Context, int, any) error {
		return errors.New("QEMU of domain 7 does not answer")
	})
	r := runChange(t, h)

	require.Error(t, r.err)
	assert.Empty(t, r.res.ErrorType)
	require.NotEmpty(t, r.res.Steps)
	assert.Empty(t, r.res.Steps[0].ErrorType)
	assert.Contains(t, r.res.Steps[0].Error, "does not answer")
}

// A guest paused mid-swap: DetachVBD answers ErrGuestPaused twice, and the run waits (its
// progress says so), releases again and finishes the change.
func TestChangeMediumWaitsWhileGuestPaused(t *testing.T) {
	h := newFakeHost(activities.KindStubdom)
	h.On("DetachVBD", fakehost.FailCalls(2, activities.ErrGuestPaused, false, "domain web1 is paused"))
	in := testInput()
	env, r := newEnv(t, h, in)
	var during workflows.Progress
	env.RegisterDelayedCallback(func() {
		// The steps take no time in the test environment: at 1 s the run sleeps in its
		// first wait for the guest.
		v, err := env.QueryWorkflow(workflows.ProgressQuery)
		require.NoError(t, err)
		require.NoError(t, v.Get(&during))
	}, time.Second)
	r.execute(t, in)

	require.NoError(t, r.err)
	assert.Equal(t, workflows.OutcomeChanged, r.res.Outcome)
	assert.Equal(t, 3, len(fakehost.Inputs[activities.ReleaseFdsetInput](h, "ReleaseFdset")), "released again after each wait")
	assert.Equal(t, 3, len(fakehost.Inputs[activities.DetachVBDInput](h, "DetachVBD")))
	assert.Equal(t, workflows.WaitingUnpause, during.Waiting, "progress while waiting: %+v", during)
	assert.Empty(t, r.res.Steps[len(r.res.Steps)-1].Error)
}

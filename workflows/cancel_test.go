package workflows_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/workflows"
)

// cancelThenFinish makes the first call of activity step cancel the run in env and then end
// well, as a step that had done its work when the cancellation reached it.
func cancelThenFinish(env *testsuite.TestWorkflowEnvironment, h *fakehost.Host, step string) {
	h.On(step, func(_ context.Context, n int, _ any) error {
		if n == 1 {
			env.CancelWorkflow()
		}
		return nil
	})
}

// TestChangeMediumCancelAtEachStep cancels a stubdom insert while each step runs (the step
// itself then ends well) and checks how the run ends and what it records. Before Verify
// has ended well the cancellation wins: the run stops, puts the old medium back if it
// touched the drive, and ends canceled. Once Verify has ended well it is too late: the run
// keeps the new medium, ends changed (not canceled, which would promise the old medium
// back), and says so in its result (CancelTooLate) and its memo.
func TestChangeMediumCancelAtEachStep(t *testing.T) {
	restored := concat(stubdomRestore, []string{"Unlock"})
	for _, tc := range []struct {
		step    string
		want    workflows.Outcome
		steps   []string // the steps run, in order
		tooLate bool
	}{
		// The run asks Inspect's note (none here: nothing was touched).
		{step: "Inspect", want: workflows.OutcomeCanceled, steps: []string{"Inspect", "Inspect"}},
		{step: "Lock", want: workflows.OutcomeCanceled, steps: []string{"Inspect", "Lock", "Unlock"}},
		{step: "Eject", want: workflows.OutcomeCanceled, steps: concat(stubdomInsert[:3], restored)},
		{step: "ReleaseFdset", want: workflows.OutcomeCanceled, steps: concat(stubdomInsert[:4], restored)},
		{step: "DetachVBD", want: workflows.OutcomeCanceled, steps: concat(stubdomInsert[:5], restored)},
		{step: "AttachVBD", want: workflows.OutcomeCanceled, steps: concat(stubdomInsert[:6], restored)},
		{step: "WaitFdset", want: workflows.OutcomeCanceled, steps: concat(stubdomInsert[:7], restored)},
		{step: "ChangeMedium", want: workflows.OutcomeCanceled, steps: concat(stubdomInsert[:8], restored)},
		{step: "Record", want: workflows.OutcomeCanceled, steps: concat(stubdomInsert[:9], restored)},
		// A Verify still running when the cancellation comes is canceled with the rest (the
		// test environment drops its late result; a real one that ends well before it hears
		// of the cancellation counts as verified, and the run then ends as from Unlock).
		{step: "Verify", want: workflows.OutcomeCanceled, steps: concat(stubdomInsert[:10], restored)},
		{step: "Unlock", want: workflows.OutcomeChanged, steps: stubdomInsert, tooLate: true},
	} {
		t.Run(tc.step, func(t *testing.T) {
			h := newFakeHost(activities.KindStubdom)
			in := testInput()
			env, r := newEnv(t, h, in)
			var memos []map[string]any
			env.OnUpsertMemo(mock.Anything).Return(nil).Run(func(args mock.Arguments) {
				memos = append(memos, args.Get(0).(map[string]any))
			}).Maybe()
			cancelThenFinish(env, h, tc.step)
			r.execute(t, in)

			assert.Equal(t, tc.want, r.res.Outcome, "outcome after a cancel during %s: %+v", tc.step, r.res)
			assert.Equal(t, tc.steps, h.Names())
			assert.Equal(t, []string{string(tc.want)}, r.outcomes, "CdswapOutcome")
			assert.Equal(t, tc.tooLate, r.res.CancelTooLate, "CancelTooLate")
			if !tc.tooLate {
				var canceled *temporal.CanceledError
				require.True(t, errors.As(r.err, &canceled), "error %v is not a CanceledError", r.err)
				assert.Empty(t, memos, "memo upserts of a canceled run")
				return
			}
			require.NoError(t, r.err, "a cancellation that came too late fails nothing")
			assert.Equal(t, newISO, r.res.New)
			require.Len(t, memos, 1, "memo upserts")
			note, _ := memos[0][workflows.MemoCancel].(string)
			assert.Regexp(t, `^too late: the new medium was already verified at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z; the run kept it and ended changed$`, note)
		})
	}
}

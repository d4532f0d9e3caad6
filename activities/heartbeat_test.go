package activities

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// TestHeartbeatInterceptor runs a step that takes three heartbeat timeouts and never
// heartbeats itself: with the interceptor it ends well, heartbeating all along; without it
// the server's view (the test environment's) is that its worker died. A step that heartbeats
// itself (WaitFdset) gets no heartbeat from the interceptor, which would erase its details.
func TestHeartbeatInterceptor(t *testing.T) {
	// A timeout long enough that a loaded machine running the suite with -race still gets
	// every heartbeat in before it.
	const timeout = time.Second
	slow := func(ctx context.Context) error {
		time.Sleep(3 * timeout)
		return nil
	}
	quick := func(ctx context.Context) error { return nil }
	wf := func(ctx workflow.Context, step string) error {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: time.Minute,
			HeartbeatTimeout:    timeout,
			RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
		})
		return workflow.ExecuteActivity(ctx, step).Get(ctx, nil)
	}
	for _, tc := range []struct {
		name          string
		step          string
		interceptors  []interceptor.WorkerInterceptor
		wantErr       bool
		minHeartbeats int32
		quick         bool // the step returns at once instead of taking 3 timeouts
	}{
		{name: "with the interceptor", step: NameDetachVBD, interceptors: []interceptor.WorkerInterceptor{NewHeartbeatInterceptor()}, minHeartbeats: 3},
		{name: "without it", step: NameDetachVBD, wantErr: true},
		{name: "a step that heartbeats itself", step: NameWaitFdset, interceptors: []interceptor.WorkerInterceptor{NewHeartbeatInterceptor()}, wantErr: true},
		// No heartbeat is sent before a quarter of the timeout: a quick step costs none.
		{name: "a quick step", step: NameEject, interceptors: []interceptor.WorkerInterceptor{NewHeartbeatInterceptor()}, quick: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s testsuite.WorkflowTestSuite
			env := s.NewTestWorkflowEnvironment()
			env.SetTestTimeout(30 * time.Second) // the default 3 s is what the slow step takes
			env.SetWorkerOptions(worker.Options{Interceptors: tc.interceptors})
			env.RegisterWorkflow(wf)
			fn := slow
			if tc.quick {
				fn = quick
			}
			env.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: tc.step})
			var beats atomic.Int32
			env.SetOnActivityHeartbeatListener(func(*activity.Info, converter.EncodedValues) { beats.Add(1) })
			env.ExecuteWorkflow(wf, tc.step)
			require.True(t, env.IsWorkflowCompleted())
			err := env.GetWorkflowError()
			if tc.wantErr {
				var timeoutErr *temporal.TimeoutError
				require.ErrorAs(t, err, &timeoutErr, "%s without heartbeats", tc.step)
				assert.Equal(t, "Heartbeat", timeoutErr.TimeoutType().String())
				assert.Zero(t, beats.Load(), "heartbeats of %s", tc.step)
				return
			}
			require.NoError(t, err)
			if tc.quick {
				assert.Zero(t, beats.Load(), "heartbeats of a step that returned at once")
				return
			}
			assert.GreaterOrEqual(t, beats.Load(), tc.minHeartbeats, "heartbeats over %s", 3*timeout)
		})
	}
}

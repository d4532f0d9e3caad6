package activities

import (
	"context"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
)

// StepObserver receives the duration and the error of every activity attempt
// (NewMetricsInterceptor); internal/metrics.Metrics is one.
type StepObserver interface {
	// ObserveStep records one attempt of the activity type step.
	ObserveStep(step string, d time.Duration, err error)
	// ObserveFdsetWait records one attempt of WaitFdset: how long a stubdom's QEMU took to
	// publish the new medium's fdset.
	ObserveFdsetWait(d time.Duration, err error)
}

// NewMetricsInterceptor returns a worker interceptor that times every activity attempt the
// worker runs and reports it to o, by activity type; WaitFdset's also as the fdset wait.
// Register it in worker.Options.Interceptors next to NewHeartbeatInterceptor.
func NewMetricsInterceptor(o StepObserver) interceptor.WorkerInterceptor {
	return AroundSteps(func(ctx context.Context, run func() (any, error)) (any, error) {
		name := activity.GetInfo(ctx).ActivityType.Name
		start := time.Now()
		res, err := run()
		d := time.Since(start)
		o.ObserveStep(name, d, err)
		if name == NameWaitFdset {
			o.ObserveFdsetWait(d, err)
		}
		return res, err
	})
}

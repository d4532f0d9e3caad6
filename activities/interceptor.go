package activities

import (
	"context"

	"go.temporal.io/sdk/interceptor"
)

// AroundSteps returns a worker interceptor that runs around every activity attempt the
// worker executes, local or regular: around gets the attempt's context (activity.GetInfo
// works on it) and run, which executes the attempt; around returns run's result, or its own.
// It is the one piece of the SDK's interceptor plumbing that the heartbeat, the metrics and
// the worker's step log share.
func AroundSteps(around func(ctx context.Context, run func() (any, error)) (any, error)) interceptor.WorkerInterceptor {
	return &aroundSteps{around: around}
}

type aroundSteps struct {
	interceptor.WorkerInterceptorBase
	around func(ctx context.Context, run func() (any, error)) (any, error)
}

func (a *aroundSteps) InterceptActivity(_ context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	i := &aroundStepsInbound{around: a.around}
	i.Next = next
	return i
}

type aroundStepsInbound struct {
	interceptor.ActivityInboundInterceptorBase
	around func(ctx context.Context, run func() (any, error)) (any, error)
}

func (i *aroundStepsInbound) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	return i.around(ctx, func() (any, error) { return i.Next.ExecuteActivity(ctx, in) })
}

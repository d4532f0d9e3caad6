package main

import (
	"context"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"

	"github.com/cdswap/cdswap/activities"
)

// stepLog is a worker interceptor that logs, at debug level, each attempt of a step as it
// starts, with whether it runs as a local activity. A local step leaves no trace in the
// server until the workflow task that ran it completes (no pending activity, no started
// event), so this line is the only sign that it is running, for a person reading the log
// and for the crash tests that kill a worker inside one.
func stepLog() interceptor.WorkerInterceptor {
	return activities.AroundSteps(func(ctx context.Context, run func() (any, error)) (any, error) {
		info := activity.GetInfo(ctx)
		activity.GetLogger(ctx).Debug("Step started", "step", info.ActivityType.Name, "attempt", info.Attempt, "local", info.IsLocalActivity)
		return run()
	})
}

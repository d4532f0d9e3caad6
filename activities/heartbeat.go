package activities

import (
	"context"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
)

// selfHeartbeating are the steps that heartbeat themselves, with details they resume from
// (WaitFdset's poll progress): a heartbeat without details would overwrite those.
var selfHeartbeating = map[string]bool{NameWaitFdset: true}

// NewHeartbeatInterceptor returns a worker interceptor that keeps a heartbeat going while an
// activity runs, for every activity scheduled with a HeartbeatTimeout (the workflows give
// every step one) that does not heartbeat itself. The server notices no more than that the
// worker is alive; it is what lets it retry a step whose worker died (SIGKILL, a crashed host)
// after the heartbeat timeout rather than at the step's StartToClose. A step that hangs in a
// live worker still ends at its StartToClose. Register it in worker.Options.Interceptors of
// every worker that runs the activities.
func NewHeartbeatInterceptor() interceptor.WorkerInterceptor {
	return AroundSteps(func(ctx context.Context, run func() (any, error)) (any, error) {
		info := activity.GetInfo(ctx)
		if info.HeartbeatTimeout > 0 && !selfHeartbeating[info.ActivityType.Name] {
			stop := keepHeartbeating(ctx, heartbeatPeriod(info.HeartbeatTimeout))
			defer stop()
		}
		return run()
	})
}

// heartbeatPeriod is how often keepHeartbeating records a heartbeat for a heartbeat timeout:
// a quarter of it, so that the SDK (which sends at most one per 80 % of the timeout) always
// has a fresh one to send.
func heartbeatPeriod(timeout time.Duration) time.Duration {
	return max(timeout/4, 10*time.Millisecond)
}

// keepHeartbeating records a heartbeat every period, the first one period after the start,
// until stop is called or ctx ends; stop waits for the goroutine, so that no heartbeat follows
// the activity's end.
//
// Not at once: the SDK sends a step's first heartbeat as soon as it is recorded, a call to
// the server that writes the activity's state, and stop would wait for it. A step done within
// a period (Eject, most of them: a millisecond) then costs no heartbeat at all, and the first
// one still comes a quarter of the timeout after the start.
func keepHeartbeating(ctx context.Context, period time.Duration) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			activity.RecordHeartbeat(ctx)
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

package activities

import (
	"context"
	"errors"
	"time"

	"go.temporal.io/sdk/log"

	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xs"
)

// Timings of WaitFdset's wake-up (WaitFdsetInput.Wake).
const (
	// fastFdsetInterval is the poll period once the stubdom's vbd frontend is Connected: the
	// stubdom add-fds its new disk soon after it connected it (mdev runs the add-fd script
	// on the new xvd device), and the set is then seen within this of its add-fd. A
	// query-fdsets costs a real QEMU about 0.35 ms of CPU, so polling every 10 ms takes
	// about 3.6 % of a core while it lasts (every 5 ms: 7 %; BENCHMARKS.md).
	fastFdsetInterval = 10 * time.Millisecond
	// fastFdsetWindow is how long the fast polls last after the frontend connected; then
	// the wait falls back to WaitFdsetInput.Interval, so that a stubdom that never add-fds
	// is polled no harder than before.
	fastFdsetWindow = time.Second
)

// fdsetWake decides when WaitFdset polls next. Before the vbd frontend is Connected the
// stubdom cannot have seen its new disk, so QEMU's monitor is polled only every interval,
// as before; a xenstore watch on the frontend's state wakes the wait at once when it
// changes, and once it is Connected the wait polls every fastFdsetInterval for
// fastFdsetWindow. The stubdom writes nothing to xenstore when it add-fds (facts §4): its
// frontend's connection is the last sign it gives before the set appears. Without Wake, or
// if the watch cannot be set, the wait polls every interval only.
type fdsetWake struct {
	interval  time.Duration
	watch     *xs.Watch // nil: no watch
	connected time.Time // when a poll first saw the frontend Connected
}

// newFdsetWake sets up the wake-up of a wait for drive d's fdset.
func (a *Activities) newFdsetWake(ctx context.Context, d Drive, interval time.Duration, wake bool, logger log.Logger) *fdsetWake {
	w := &fdsetWake{interval: interval}
	if !wake {
		return w
	}
	err := a.withXS(ctx, func(c *xs.Client) error {
		fe, err := c.Read(ctx, xen.LibxlPath(d.StubDomID, d.DevID)+"/frontend")
		if err != nil {
			return err
		}
		w.watch, err = c.Watch(ctx, fe+"/state", "cdswap-fdset-wait")
		return err
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		logger.Warn("Cannot watch the stubdom's vbd frontend; polling every interval only", "error", err)
	}
	return w
}

// wait returns when the next poll is due: connected says whether the last poll saw the
// frontend Connected. It returns ctx's error if ctx ends first.
func (w *fdsetWake) wait(ctx context.Context, connected bool) error {
	d := w.interval
	if w.watch != nil && connected {
		if w.connected.IsZero() {
			w.connected = time.Now()
		}
		if time.Since(w.connected) < fastFdsetWindow {
			d = fastFdsetInterval
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	var events <-chan xs.WatchEvent
	if w.watch != nil {
		events = w.watch.Events()
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		case _, ok := <-events:
			if !ok {
				events = nil // the connection went: poll every interval from now on
				continue
			}
			if !connected {
				// The frontend changed state (a watch also fires once when set): poll now,
				// unless this is the state already seen.
				return nil
			}
		}
	}
}

// stop removes the watch, even once ctx (the activity's) has ended.
func (w *fdsetWake) stop(ctx context.Context) {
	if w.watch == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = w.watch.Close(ctx)
}

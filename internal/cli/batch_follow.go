package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/schollz/progressbar/v3"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/workflows"
)

// lineEvery is how often --wait prints a progress line when it draws no bar.
const lineEvery = 2 * time.Second

// followBatch follows a batch until it ends: on a terminal, a progress bar (done of total,
// the rate and the time left, the failed and running counts); else a line when the
// progress changes, at most every lineEvery. It returns the batch's result.
func (a *App) followBatch(ctx context.Context, c client.Client, id string, w io.Writer, quiet bool) (workflows.FleetSwapResult, error) {
	var bar *progressbar.ProgressBar
	tty := a.TTY && !quiet
	var last workflows.FleetProgress
	var lastLine time.Time
	tick := time.NewTicker(a.pollInterval())
	defer tick.Stop()
	var failingSince time.Time // the first of the polls failing in a row, zero if the last one worked
	for {
		p, res, err := a.batchState(ctx, c, id)
		var ue *userError
		switch {
		case err != nil && (errors.As(err, &ue) || ctx.Err() != nil):
			return workflows.FleetSwapResult{}, err
		case err != nil:
			// A progress query can fail for a moment while the batch continues as new, or
			// while a loaded worker or server is slow to answer: the batch goes on, so only
			// a failure that lasts is reported.
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(failingSince) > followPatience {
				return workflows.FleetSwapResult{}, err
			}
			select {
			case <-ctx.Done():
				return workflows.FleetSwapResult{}, ctx.Err()
			case <-tick.C:
			}
			continue
		}
		failingSince = time.Time{}
		if res != nil {
			if bar != nil {
				_ = bar.Finish()
				fmt.Fprintln(w)
			}
			return *res, nil
		}
		switch {
		case tty:
			if bar == nil {
				bar = progressbar.NewOptions(p.Total, progressbar.OptionSetWriter(w), progressbar.OptionShowCount(),
					progressbar.OptionShowIts(), progressbar.OptionSetItsString("drives"), progressbar.OptionSetPredictTime(true),
					progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
			}
			bar.Describe(fmt.Sprintf("%s: %d failed, %d running", p.Status, p.Failed, p.Running))
			_ = bar.Set(p.Done)
		case !quiet && (p.Done != last.Done || p.Status != last.Status || p.Running != last.Running) && time.Since(lastLine) >= lineEvery:
			eta := "-"
			if rate := rateOf(p, last, lastLine); rate > 0 {
				eta = (time.Duration(float64(p.Waiting+p.Running)/rate) * time.Second).Round(time.Second).String()
			}
			fmt.Fprintf(w, "%s: %d/%d done, %d failed, %d running, %d waiting, time left %s\n", p.Status, p.Done, p.Total, p.Failed, p.Running, p.Waiting, eta)
			last, lastLine = p, time.Now()
		}
		select {
		case <-ctx.Done():
			return workflows.FleetSwapResult{}, ctx.Err()
		case <-tick.C:
		}
	}
}

// followPatience is how long followBatch keeps polling a batch whose progress cannot be
// read before it gives up and reports why.
const followPatience = 30 * time.Second

// rateOf is drives per second since the last line, 0 if unknown.
func rateOf(p, last workflows.FleetProgress, at time.Time) float64 {
	if at.IsZero() || p.Done <= last.Done {
		return 0
	}
	return float64(p.Done-last.Done) / time.Since(at).Seconds()
}

// sortedKeys are m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

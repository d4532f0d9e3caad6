// Package devserver starts the Temporal CLI's dev server (a real Temporal server on SQLite,
// with its Web UI) tuned for cdswap: the embedded default that the demo, the integration
// tests and the benchmarks run against.
//
// The server is a separate binary built from the Temporal CLI module (v1.5.1: server 1.29.1):
// the server cannot share a Go module with SDK v1.51.0, so it is never linked into ours.
// `make deps` builds it once into a cache folder; CLIPath finds it there.
//
// Start runs it as a child process and returns only once that child serves: a server that
// exits during start-up (a port another process holds, most often) is an *ExitError at
// once, and another server already on the port is never taken for ours. The child dies
// with the process that started it, even one killed by SIGKILL (Linux's parent-death
// signal; the package is Linux-only, as cdswap is).
package devserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cdswap/cdswap/internal/versions"
	"github.com/cdswap/cdswap/workflows"
)

// CLIVersion is the Temporal CLI whose dev server we run: the newest tag that
// `go install` can build (later tags carry replace directives). It is pinned in
// internal/versions/versions.env, with the other tools' versions.
var CLIVersion = versions.TemporalCLI

// ErrNoCLI means the Temporal CLI binary was not found.
var ErrNoCLI = errors.New("temporal CLI not found")

// CLIPath returns the Temporal CLI binary: $CDSWAP_TEMPORAL_CLI, else the cache folder that
// `make deps` fills, else `temporal` on PATH only if nothing else is set.
func CLIPath() (string, error) {
	if p := os.Getenv("CDSWAP_TEMPORAL_CLI"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("CDSWAP_TEMPORAL_CLI=%s: %w (run `make deps` to build it)", p, ErrNoCLI)
		}
		return p, nil
	}
	cache := os.Getenv("CDSWAP_CACHE")
	if cache == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("no cache folder (%w); set CDSWAP_TEMPORAL_CLI: %w", err, ErrNoCLI)
		}
		cache = filepath.Join(base, "cdswap")
	}
	p := filepath.Join(cache, "bin", "temporal-"+CLIVersion, "temporal")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w at %s: run `make deps` to build it (about 4 minutes once)", ErrNoCLI, p)
	}
	return p, nil
}

// TunedDynamicConfig are the dynamic-config values the dev server runs with. The history
// service's queue readers default to 20 polls/s, which adds ~44 ms to every
// scheduled->started hop of a short activity; short timers fire up to a second late unless
// the timer queue's max time shift is lowered (both measured on this project's machines;
// see DESIGN.md "Temporal"). Eager activity execution hands an activity that a workflow
// task schedules on the worker's own queue back in the task's completion response, which
// skips matching: about 8 ms a regular step (BENCHMARKS.md); the SDK asks for it unless
// ActivityOptions.DisableEagerExecution.
//
// A history queue drops the tasks it has done from its in-memory slices only at its
// checkpoint, every 30 s by default; until then every new range of tasks is merged by walking
// all of them. Under a batch that walk took a tenth of the server's CPU (the dev server's
// CPU per drive 22-44 ms, 19-28 at a checkpoint a second: BENCHMARKS.md, the fleet). A
// checkpoint is one write of the shard's queue state.
var TunedDynamicConfig = []string{
	"history.transferProcessorMaxPollRPS=10000",
	"history.timerProcessorMaxPollRPS=10000",
	"history.visibilityProcessorMaxPollRPS=10000",
	`history.timerProcessorMaxTimeShift="10ms"`,
	"system.forceSearchAttributesCacheRefreshOnRead=true",
	"system.enableActivityEagerExecution=true",
	`history.transferProcessorUpdateAckInterval="1s"`,
	`history.timerProcessorUpdateAckInterval="1s"`,
	`history.visibilityProcessorUpdateAckInterval="1s"`,
}

// devServerDynamicConfig are values for the dev server alone, after TunedDynamicConfig (the
// last value of a key wins). The dev server creates cdswap's search attributes with its
// namespace before it starts (--search-attribute), so its search-attribute cache, loaded at
// the first use, already holds them: the forced refresh the cluster needs (it registers them
// once it runs, scripts/cluster.sh) only costs the dev server a database read on every
// start, upsert and visibility task, 3 % of its CPU in the fleet benchmark (`make bench-fleet`).
var devServerDynamicConfig = []string{
	"system.forceSearchAttributesCacheRefreshOnRead=false",
}

// serverGOGC is the dev server's GOGC unless the environment sets one. Its live heap is small
// beside its SQLite database and caches: collecting at the default (100) took 8 % of its CPU
// in the fleet benchmark, 2.4 % at 400, with the same resident size (500-800 MB after a few
// thousand swaps).
const serverGOGC = "400"

// SearchAttributes are the keys cdswap writes on every swap, registered at start so that
// `cdswap list` and the Web UI can filter on them.
var SearchAttributes = func() []string {
	var names []string
	for _, k := range workflows.SearchAttributeKeys() {
		names = append(names, k.GetName())
	}
	return names
}()

// quietLogger drops the SDK client's own logs for the server's client.
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}

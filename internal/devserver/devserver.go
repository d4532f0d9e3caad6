// Package devserver starts the Temporal CLI's dev server (a real Temporal server on SQLite,
// with its Web UI) tuned for cdswap: the embedded default that the demo, the integration
// tests and the benchmarks run against.
//
// The server is a separate binary built from the Temporal CLI v1.5.1 module (server 1.29.1):
// the server cannot share a Go module with SDK v1.51.0, so it is never linked into ours.
// `make deps` builds it once into a cache folder; CLIPath finds it there.
package devserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/testsuite"
)

// CLIVersion is the Temporal CLI whose dev server we run: the newest tag that
// `go install` can build (later tags carry replace directives).
const CLIVersion = "v1.5.1"

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
			return "", fmt.Errorf("%w: no cache folder (%v); set CDSWAP_TEMPORAL_CLI", ErrNoCLI, err)
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
// see DESIGN.md "Temporal").
var TunedDynamicConfig = []string{
	"history.transferProcessorMaxPollRPS=10000",
	"history.timerProcessorMaxPollRPS=10000",
	"history.visibilityProcessorMaxPollRPS=10000",
	`history.timerProcessorMaxTimeShift="10ms"`,
	"system.forceSearchAttributesCacheRefreshOnRead=true",
}

// SearchAttributes are the keys cdswap writes on every swap, registered at start so that
// `cdswap list` and the Web UI can filter on them.
var SearchAttributes = []string{"CdswapHost", "CdswapDomain", "CdswapVdev", "CdswapMedium", "CdswapOutcome"}

// Options configure Start. The zero value starts an in-memory server on a free loopback
// port with the UI off.
type Options struct {
	// HostPort to bind the frontend; "" picks a free port on localhost.
	HostPort string
	// Namespace to create; "" means "default".
	Namespace string
	// DBFile keeps state in this SQLite file; "" keeps it in memory.
	DBFile string
	// UI turns on the Web UI, at UIPort ("" = frontend port + 1000).
	UI     bool
	UIPort string
	// Output receives the server's stdout and stderr; nil discards them.
	Output io.Writer
}

// Start runs the dev server and returns once a client can connect.
func Start(ctx context.Context, opts Options) (*testsuite.DevServer, error) {
	cli, err := CLIPath()
	if err != nil {
		return nil, err
	}
	ns := opts.Namespace
	if ns == "" {
		ns = "default"
	}
	out := opts.Output
	if out == nil {
		out = io.Discard
	}
	var extra []string
	for _, kv := range TunedDynamicConfig {
		extra = append(extra, "--dynamic-config-value", kv)
	}
	if opts.UI {
		extra = append(extra, "--ui-ip", "127.0.0.1")
	}
	for _, sa := range SearchAttributes {
		extra = append(extra, "--search-attribute", sa+"=Keyword")
	}
	srv, err := testsuite.StartDevServer(ctx, testsuite.DevServerOptions{
		ExistingPath:  cli,
		ClientOptions: &client.Options{HostPort: opts.HostPort, Namespace: ns, Logger: quietLogger{}},
		DBFilename:    opts.DBFile,
		EnableUI:      opts.UI,
		UIPort:        opts.UIPort,
		LogLevel:      "error",
		ExtraArgs:     extra,
		Stdout:        out,
		Stderr:        out,
	})
	if err != nil {
		return nil, fmt.Errorf("start Temporal dev server %s: %w", cli, err)
	}
	return srv, nil
}

// quietLogger drops the SDK client's own logs for the server's client.
type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}

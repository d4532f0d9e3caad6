package cli

import (
	"context"
	"flag"
	"os"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/worker"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/devserver"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/workflows"
)

// update rewrites the recorded histories and golden files in testdata/.
var update = flag.Bool("update", false, "record the CLI's histories from the dev server and rewrite the golden files")

// One dev server for the package; tests that need it call needServer.
var (
	testServer *devserver.Server
	serverErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	testServer, serverErr = devserver.Start(ctx, devserver.Options{})
	cancel()
	code := m.Run()
	if testServer != nil {
		_ = testServer.Stop()
	}
	os.Exit(code)
}

// needServer returns the package's dev server, or ends the test: a failure with CI=true,
// a skip elsewhere.
func needServer(t *testing.T) *devserver.Server {
	t.Helper()
	if testServer == nil {
		testenv.Unavailable(t, "the Temporal dev server did not start: %v (make deps builds the Temporal CLI)", serverErr)
	}
	return testServer
}

// Fixture values of the fake host.
const (
	oldISO = fakehost.OldISO
	newISO = fakehost.NewISO
)

// startHost runs a worker for host with the real workflows and a fake host with a stubdom
// guest, whose activities run hooks, until the test ends.
func startHost(t *testing.T, host string, hooks map[string]fakehost.Hook) *fakehost.Host {
	t.Helper()
	srv := needServer(t)
	h := &fakehost.Host{Name: host, Kind: activities.KindStubdom}
	for name, f := range hooks {
		h.On(name, f)
	}
	w := worker.New(srv.Client(), activities.TaskQueue(host), worker.Options{
		Interceptors: []interceptor.WorkerInterceptor{activities.NewHeartbeatInterceptor()},
	})
	workflows.Register(w)
	h.Register(w)
	if err := w.Start(); err != nil {
		t.Fatalf("start the worker of %s: %v", host, err)
	}
	t.Cleanup(w.Stop)
	return h
}

// blockFirst makes the first call of a step signal entered, then heartbeat until its
// context ends (a cancellation reaches an activity through its heartbeat) or release is
// closed.
func blockFirst(entered chan<- struct{}, release <-chan struct{}) fakehost.Hook {
	return func(ctx context.Context, n int, _ any) error {
		if n != 1 {
			return nil
		}
		close(entered)
		for {
			activity.RecordHeartbeat(ctx)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-release:
				return nil
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// result is one run of the CLI.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// newApp is an App as the tests run it: alice asks, times in UTC, a short resolve timeout.
func newApp(stdout, stderr *testenv.Buffer) *App {
	env := map[string]string{"USER": "alice"}
	return &App{
		Stdout:         stdout,
		Stderr:         stderr,
		Getenv:         func(k string) string { return env[k] },
		ResolveTimeout: 3 * time.Second,
		PollInterval:   50 * time.Millisecond,
		ConnectTimeout: 3 * time.Second,
		Location:       time.UTC,
	}
}

// run runs the CLI against the package's dev server (or the address in args).
func run(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr testenv.Buffer
	addr := "127.0.0.1:1" // nothing listens: commands must fail before dialing, or say so
	if testServer != nil {
		addr = testServer.FrontendHostPort()
	}
	start := time.Now()
	code := newApp(&stdout, &stderr).Run(ctx, append([]string{"--address", addr}, args...))
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code, took: time.Since(start)}
}

// client returns the dev server's client.
func testClient(t *testing.T) client.Client {
	t.Helper()
	return needServer(t).Client()
}

package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/devserver"
	"github.com/cdswap/cdswap/internal/testenv"
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
	fakeDomain = "web1"
	fakeDomID  = 7
	fakeStubID = 8
	fakeDevID  = 5632
	oldISO     = "/isos/old.iso"
	newISO     = "/isos/new.iso"
	emptyCDROM = "/var/run/xen/empty-cdrom.7"
)

// hook may make the n-th call (1-based, all attempts counted) of one activity fail or block.
type hook func(ctx context.Context, n int) error

// fakeHost answers the activities as a healthy stubdom host would, with canned results,
// and lets a test break or block any step. Its exported methods are the activities: a
// worker registers them under their names, which are the activity type names.
type fakeHost struct {
	host string

	mu    sync.Mutex // guards the fields below
	hooks map[string]hook
	calls map[string]int
	fdset int64
}

// startHost runs a worker for host with the real workflows and a fakeHost, until the test
// ends.
func startHost(t *testing.T, host string, hooks map[string]hook) *fakeHost {
	t.Helper()
	srv := needServer(t)
	h := &fakeHost{host: host, hooks: hooks, calls: map[string]int{}, fdset: 10}
	if h.hooks == nil {
		h.hooks = map[string]hook{}
	}
	w := worker.New(srv.Client(), activities.TaskQueue(host), worker.Options{})
	workflows.Register(w)
	w.RegisterActivity(h)
	if err := w.Start(); err != nil {
		t.Fatalf("start the worker of %s: %v", host, err)
	}
	t.Cleanup(w.Stop)
	return h
}

// enter counts a call and runs its hook.
func (h *fakeHost) enter(ctx context.Context, name string) (activities.Meta, error) {
	h.mu.Lock()
	h.calls[name]++
	n, f := h.calls[name], h.hooks[name]
	h.mu.Unlock()
	if f != nil {
		if err := f(ctx, n); err != nil {
			return activities.Meta{}, err
		}
	}
	return activities.NewMeta(ctx), nil
}

func (h *fakeHost) drive() activities.Drive {
	return activities.Drive{DomID: fakeDomID, Name: fakeDomain, Vdev: "hdc", DevID: fakeDevID,
		Kind: activities.KindStubdom, StubDomID: fakeStubID, BackendType: "phy"}
}

func (h *fakeHost) ResolveDrive(ctx context.Context, in activities.ResolveDriveInput) (activities.ResolveDriveResult, error) {
	m, err := h.enter(ctx, activities.NameResolveDrive)
	if err != nil {
		return activities.ResolveDriveResult{}, err
	}
	if in.Domain != fakeDomain && in.Domain != fmt.Sprint(fakeDomID) {
		return activities.ResolveDriveResult{}, activities.NewError(ctx, activities.ErrNoSuchDomain, false, nil,
			"no guest named or numbered %q on host %s: xl list shows its guests", in.Domain, h.host)
	}
	return activities.ResolveDriveResult{Meta: m, DomID: fakeDomID, Name: fakeDomain, DevID: fakeDevID, Kind: activities.KindStubdom}, nil
}

func (h *fakeHost) Inspect(ctx context.Context, in activities.InspectInput) (activities.InspectResult, error) {
	m, err := h.enter(ctx, activities.NameInspect)
	if err != nil {
		return activities.InspectResult{}, err
	}
	if in.Medium != "" && !strings.HasPrefix(in.Medium, "/isos/") {
		return activities.InspectResult{}, activities.NewError(ctx, activities.ErrMediumOutsideRoots, false, nil,
			"medium %s is outside the ISO roots of host %s (/isos): copy it under a root, or start the worker with --iso-root", in.Medium, h.host)
	}
	params := in.Medium
	if params == "" {
		params = emptyCDROM
	}
	format := in.Format
	if in.Medium == "" {
		format = ""
	}
	return activities.InspectResult{Meta: m, Drive: h.drive(), DMVersion: "qemu_xen", QEMUVersion: "7.2.0",
		QEMUFile: "/dev/fdset/3", OldMedium: oldISO, OldFormat: activities.FormatRaw, OldParams: oldISO,
		Fdsets: []int64{3}, Medium: in.Medium, Format: format, NewParams: params}, nil
}

func (h *fakeHost) Lock(ctx context.Context, _ activities.LockInput) (activities.LockResult, error) {
	m, err := h.enter(ctx, activities.NameLock)
	return activities.LockResult{Meta: m, Path: "/var/lib/xen/userdata-l.7.u.libxl-device-changes-lock"}, err
}

func (h *fakeHost) Unlock(ctx context.Context, _ activities.UnlockInput) (activities.UnlockResult, error) {
	m, err := h.enter(ctx, activities.NameUnlock)
	return activities.UnlockResult{Meta: m, WasHeld: true}, err
}

func (h *fakeHost) Eject(ctx context.Context, _ activities.EjectInput) (activities.EjectResult, error) {
	m, err := h.enter(ctx, activities.NameEject)
	return activities.EjectResult{Meta: m}, err
}

func (h *fakeHost) ReleaseFdset(ctx context.Context, _ activities.ReleaseFdsetInput) (activities.ReleaseFdsetResult, error) {
	m, err := h.enter(ctx, activities.NameReleaseFdset)
	return activities.ReleaseFdsetResult{Meta: m, FdsetIDs: []int64{3}}, err
}

func (h *fakeHost) DetachVBD(ctx context.Context, _ activities.DetachVBDInput) (activities.DetachVBDResult, error) {
	m, err := h.enter(ctx, activities.NameDetachVBD)
	return activities.DetachVBDResult{Meta: m, Params: oldISO}, err
}

func (h *fakeHost) AttachVBD(ctx context.Context, _ activities.AttachVBDInput) (activities.AttachVBDResult, error) {
	m, err := h.enter(ctx, activities.NameAttachVBD)
	return activities.AttachVBDResult{Meta: m}, err
}

func (h *fakeHost) WaitFdset(ctx context.Context, _ activities.WaitFdsetInput) (activities.WaitFdsetResult, error) {
	m, err := h.enter(ctx, activities.NameWaitFdset)
	if err != nil {
		return activities.WaitFdsetResult{}, err
	}
	h.mu.Lock()
	id := h.fdset
	h.fdset++
	h.mu.Unlock()
	return activities.WaitFdsetResult{Meta: m, FdsetID: id, Polls: 2}, nil
}

func (h *fakeHost) AddFD(ctx context.Context, _ activities.AddFDInput) (activities.AddFDResult, error) {
	m, err := h.enter(ctx, activities.NameAddFD)
	return activities.AddFDResult{Meta: m, FdsetID: 20}, err
}

func (h *fakeHost) ChangeMedium(ctx context.Context, in activities.ChangeMediumInput) (activities.ChangeMediumResult, error) {
	m, err := h.enter(ctx, activities.NameChangeMedium)
	return activities.ChangeMediumResult{Meta: m, Filename: activities.FdsetFilename(in.FdsetID)}, err
}

func (h *fakeHost) Record(ctx context.Context, _ activities.RecordInput) (activities.RecordResult, error) {
	m, err := h.enter(ctx, activities.NameRecord)
	return activities.RecordResult{Meta: m, Changed: true}, err
}

func (h *fakeHost) Verify(ctx context.Context, in activities.VerifyInput) (activities.VerifyResult, error) {
	m, err := h.enter(ctx, activities.NameVerify)
	return activities.VerifyResult{Meta: m, File: in.Filename}, err
}

// failOnce fails the first call of a step with a retryable error of type errType.
func failOnce(errType, msg string) hook {
	return func(ctx context.Context, n int) error {
		if n == 1 {
			return activities.NewError(ctx, errType, true, nil, "%s", msg)
		}
		return nil
	}
}

// failFirst fails the first call of a step for good.
func failFirst(errType, msg string) hook {
	return func(ctx context.Context, n int) error {
		if n == 1 {
			return activities.NewError(ctx, errType, false, nil, "%s", msg)
		}
		return nil
	}
}

// blockFirst makes the first call of a step signal entered, then heartbeat until its
// context ends (a cancellation reaches an activity through its heartbeat) or release is
// closed.
func blockFirst(entered chan<- struct{}, release <-chan struct{}) hook {
	return func(ctx context.Context, n int) error {
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
	code := newApp(&stdout, &stderr).Run(ctx, append([]string{"--address", addr}, args...))
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// client returns the dev server's client.
func testClient(t *testing.T) client.Client {
	t.Helper()
	return needServer(t).Client()
}

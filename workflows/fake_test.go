package workflows_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/workflows"
)

// Fixture values.
const (
	testHost     = "h1"
	testDomain   = "web1"
	testDomID    = 7
	testStubID   = 8
	testVdev     = "hdc"
	testDevID    = 5632
	oldISO       = "/isos/old.iso"
	newISO       = "/isos/new.iso"
	emptyCDROM   = "/var/run/xen/empty-cdrom.7"
	stubOldFdset = 3
)

// call is one activity call seen by the fake host.
type call struct {
	Name    string
	In      any
	Attempt int32
}

// hook may make the n-th call (1-based, counting every attempt) of one activity fail; it
// runs in the activity's goroutine.
type hook func(ctx context.Context, n int, in any) error

// fakeHost answers the activities as a healthy host would, records every call, and lets a
// test break any step with a hook. It stands in for package activities, whose
// implementations are tested against xensim.
type fakeHost struct {
	kind      activities.Kind
	oldMedium string // "" = the drive is empty
	inPlace   bool

	mu        sync.Mutex // guards everything below
	calls     []call
	hooks     map[string]hook
	nextFdset int64 // WaitFdset's next new set
	nextAddFD int64 // AddFD's next new set
}

func newFakeHost(kind activities.Kind) *fakeHost {
	return &fakeHost{kind: kind, oldMedium: oldISO, hooks: map[string]hook{}, nextFdset: 10, nextAddFD: 20}
}

// on sets the hook of activity name.
func (h *fakeHost) on(name string, f hook) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hooks[name] = f
}

// names lists the activities called, in order.
func (h *fakeHost) names() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, c := range h.calls {
		out = append(out, c.Name)
	}
	return out
}

// inputs returns the inputs of every call of activity name, in order.
func inputs[I any](h *fakeHost, name string) []I {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []I
	for _, c := range h.calls {
		if c.Name == name {
			out = append(out, c.In.(I))
		}
	}
	return out
}

// enter records a call and runs its hook.
func (h *fakeHost) enter(ctx context.Context, name string, in any) (activities.Meta, error) {
	attempt := activity.GetInfo(ctx).Attempt
	h.mu.Lock()
	h.calls = append(h.calls, call{Name: name, In: in, Attempt: attempt})
	n := 0
	for _, c := range h.calls {
		if c.Name == name {
			n++
		}
	}
	f := h.hooks[name]
	h.mu.Unlock()
	if f != nil {
		if err := f(ctx, n, in); err != nil {
			return activities.Meta{}, err
		}
	}
	return activities.Meta{Attempt: attempt}, nil
}

// params is libxl's vbd params for medium on this host's kind of guest.
func (h *fakeHost) params(medium string) string {
	if h.kind == activities.KindStubdom {
		if medium == "" {
			return emptyCDROM
		}
		return medium
	}
	if medium == "" {
		return ""
	}
	return "aio:" + medium
}

func (h *fakeHost) drive() activities.Drive {
	d := activities.Drive{DomID: testDomID, Name: testDomain, Vdev: testVdev, DevID: testDevID, Kind: h.kind, BackendType: "qdisk"}
	if h.kind == activities.KindStubdom {
		d.StubDomID, d.BackendType = testStubID, "phy"
	}
	return d
}

// register mocks every activity with the fake.
func (h *fakeHost) register(env *testsuite.TestWorkflowEnvironment) {
	var a *activities.Activities
	env.OnActivity(a.ResolveDrive, mock.Anything, mock.Anything).Return(h.ResolveDrive)
	env.OnActivity(a.Inspect, mock.Anything, mock.Anything).Return(h.Inspect)
	env.OnActivity(a.Lock, mock.Anything, mock.Anything).Return(h.Lock)
	env.OnActivity(a.Unlock, mock.Anything, mock.Anything).Return(h.Unlock)
	env.OnActivity(a.Eject, mock.Anything, mock.Anything).Return(h.Eject)
	env.OnActivity(a.ReleaseFdset, mock.Anything, mock.Anything).Return(h.ReleaseFdset)
	env.OnActivity(a.DetachVBD, mock.Anything, mock.Anything).Return(h.DetachVBD)
	env.OnActivity(a.AttachVBD, mock.Anything, mock.Anything).Return(h.AttachVBD)
	env.OnActivity(a.WaitFdset, mock.Anything, mock.Anything).Return(h.WaitFdset)
	env.OnActivity(a.AddFD, mock.Anything, mock.Anything).Return(h.AddFD)
	env.OnActivity(a.ChangeMedium, mock.Anything, mock.Anything).Return(h.ChangeMedium)
	env.OnActivity(a.Record, mock.Anything, mock.Anything).Return(h.Record)
	env.OnActivity(a.Verify, mock.Anything, mock.Anything).Return(h.Verify)
}

func (h *fakeHost) ResolveDrive(ctx context.Context, in activities.ResolveDriveInput) (activities.ResolveDriveResult, error) {
	m, err := h.enter(ctx, activities.NameResolveDrive, in)
	if err != nil {
		return activities.ResolveDriveResult{}, err
	}
	return activities.ResolveDriveResult{Meta: m, DomID: testDomID, Name: testDomain, DevID: testDevID, Kind: h.kind}, nil
}

func (h *fakeHost) Inspect(ctx context.Context, in activities.InspectInput) (activities.InspectResult, error) {
	m, err := h.enter(ctx, activities.NameInspect, in)
	if err != nil {
		return activities.InspectResult{}, err
	}
	r := activities.InspectResult{
		Meta:        m,
		Drive:       h.drive(),
		DMVersion:   "qemu_xen",
		QEMUVersion: "7.2.0",
		OldMedium:   h.oldMedium,
		OldParams:   h.params(h.oldMedium),
		Medium:      in.Medium,
		Format:      in.Format,
		NewParams:   h.params(in.Medium),
		InPlace:     h.inPlace,
	}
	if h.oldMedium != "" {
		r.OldFormat, r.QEMUFile = activities.FormatRaw, "/dev/fdset/1"
	}
	if h.kind == activities.KindStubdom {
		r.Fdsets = []int64{stubOldFdset}
	}
	return r, nil
}

func (h *fakeHost) Lock(ctx context.Context, in activities.LockInput) (activities.LockResult, error) {
	m, err := h.enter(ctx, activities.NameLock, in)
	return activities.LockResult{Meta: m, Path: "/var/lib/xen/userdata-l.7.u.libxl-device-changes-lock"}, err
}

func (h *fakeHost) Unlock(ctx context.Context, in activities.UnlockInput) (activities.UnlockResult, error) {
	m, err := h.enter(ctx, activities.NameUnlock, in)
	return activities.UnlockResult{Meta: m, WasHeld: true}, err
}

func (h *fakeHost) Eject(ctx context.Context, in activities.EjectInput) (activities.EjectResult, error) {
	m, err := h.enter(ctx, activities.NameEject, in)
	return activities.EjectResult{Meta: m}, err
}

func (h *fakeHost) ReleaseFdset(ctx context.Context, in activities.ReleaseFdsetInput) (activities.ReleaseFdsetResult, error) {
	m, err := h.enter(ctx, activities.NameReleaseFdset, in)
	return activities.ReleaseFdsetResult{Meta: m, FdsetIDs: []int64{stubOldFdset}}, err
}

func (h *fakeHost) DetachVBD(ctx context.Context, in activities.DetachVBDInput) (activities.DetachVBDResult, error) {
	m, err := h.enter(ctx, activities.NameDetachVBD, in)
	return activities.DetachVBDResult{Meta: m, Params: h.params(h.oldMedium)}, err
}

func (h *fakeHost) AttachVBD(ctx context.Context, in activities.AttachVBDInput) (activities.AttachVBDResult, error) {
	m, err := h.enter(ctx, activities.NameAttachVBD, in)
	return activities.AttachVBDResult{Meta: m}, err
}

func (h *fakeHost) WaitFdset(ctx context.Context, in activities.WaitFdsetInput) (activities.WaitFdsetResult, error) {
	m, err := h.enter(ctx, activities.NameWaitFdset, in)
	if err != nil {
		return activities.WaitFdsetResult{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	id := h.nextFdset
	h.nextFdset++
	return activities.WaitFdsetResult{Meta: m, FdsetID: id, Polls: 3}, nil
}

func (h *fakeHost) AddFD(ctx context.Context, in activities.AddFDInput) (activities.AddFDResult, error) {
	m, err := h.enter(ctx, activities.NameAddFD, in)
	if err != nil {
		return activities.AddFDResult{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	id := h.nextAddFD
	h.nextAddFD++
	return activities.AddFDResult{Meta: m, FdsetID: id}, nil
}

func (h *fakeHost) ChangeMedium(ctx context.Context, in activities.ChangeMediumInput) (activities.ChangeMediumResult, error) {
	m, err := h.enter(ctx, activities.NameChangeMedium, in)
	return activities.ChangeMediumResult{Meta: m, Filename: activities.FdsetFilename(in.FdsetID)}, err
}

func (h *fakeHost) Record(ctx context.Context, in activities.RecordInput) (activities.RecordResult, error) {
	m, err := h.enter(ctx, activities.NameRecord, in)
	return activities.RecordResult{Meta: m, Changed: true}, err
}

func (h *fakeHost) Verify(ctx context.Context, in activities.VerifyInput) (activities.VerifyResult, error) {
	m, err := h.enter(ctx, activities.NameVerify, in)
	return activities.VerifyResult{Meta: m, File: in.Filename}, err
}

// failWith is a hook that fails every call with a permanent error of type t.
func failWith(t string) hook {
	return func(ctx context.Context, n int, in any) error {
		return activities.NewError(ctx, t, false, nil, "injected %s (call %d)", t, n)
	}
}

// failCalls is a hook that fails calls 1 to n of an activity with an error of type t,
// retryable or not, and lets the later calls through.
func failCalls(n int, t string, retryable bool, msg string) hook {
	return func(ctx context.Context, i int, _ any) error {
		if i <= n {
			return activities.NewError(ctx, t, retryable, nil, "%s", msg)
		}
		return nil
	}
}

// cancelDuring makes the first call of activity step cancel the run in env, then hang as an
// abandoned attempt does until the test ends (the test environment drops its late result).
func cancelDuring(t *testing.T, env *testsuite.TestWorkflowEnvironment, h *fakeHost, step string) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	h.on(step, func(ctx context.Context, n int, in any) error {
		if n > 1 {
			return nil
		}
		env.CancelWorkflow()
		select {
		case <-release:
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
		}
		return errors.New("abandoned")
	})
}

// requireAppError checks that err is an application error of type typ and returns it.
func requireAppError(t *testing.T, err error, typ string) *temporal.ApplicationError {
	t.Helper()
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "error %v (%T) is not an application error", err, err)
	assert.Equal(t, typ, appErr.Type(), "type of %v", err)
	return appErr
}

// testInput is a change of hdc of web1 on h1 to newISO.
func testInput() workflows.ChangeMediumInput {
	return workflows.ChangeMediumInput{
		Host: testHost, Domain: testDomain, DomID: testDomID, Vdev: testVdev, Medium: newISO,
		Requester: "alice", Reason: "monthly ISO", Ticket: "OPS-1",
	}
}

// run is one ChangeMedium run in a test environment.
type run struct {
	env      *testsuite.TestWorkflowEnvironment
	res      workflows.ChangeMediumResult
	err      error
	outcomes []string // CdswapOutcome values upserted
}

// newTestEnv returns a test environment that logs warnings and errors only (to stderr,
// which go test shows for a failing package).
func newTestEnv() *testsuite.TestWorkflowEnvironment {
	var suite testsuite.WorkflowTestSuite
	suite.SetLogger(tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	return suite.NewTestWorkflowEnvironment()
}

// newEnv returns a test environment with the fake's activities, the workflows and the
// start options the starter would use.
func newEnv(t *testing.T, h *fakeHost, in workflows.ChangeMediumInput) (*testsuite.TestWorkflowEnvironment, *run) {
	t.Helper()
	env := newTestEnv()
	env.SetTestTimeout(20 * time.Second)
	workflows.Register(env)
	h.register(env)
	opts := workflows.StartOptions(in)
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: opts.ID, TaskQueue: opts.TaskQueue})
	require.NoError(t, env.SetTypedSearchAttributesOnStart(opts.TypedSearchAttributes))
	r := &run{env: env}
	env.OnUpsertTypedSearchAttributes(mock.Anything).Return(nil).Run(func(args mock.Arguments) {
		// Runs on the workflow's goroutine: no lock needed.
		if v, ok := args.Get(0).(temporal.SearchAttributes).GetKeyword(workflows.CdswapOutcome); ok {
			r.outcomes = append(r.outcomes, v)
		}
	}).Maybe()
	return env, r
}

// runChange runs ChangeMedium with testInput() against h to its end.
func runChange(t *testing.T, h *fakeHost) *run {
	t.Helper()
	in := testInput()
	_, r := newEnv(t, h, in)
	r.execute(t, in)
	return r
}

// execute runs the workflow to its end.
func (r *run) execute(t *testing.T, in workflows.ChangeMediumInput) {
	t.Helper()
	r.env.ExecuteWorkflow(workflows.ChangeMediumName, in)
	require.True(t, r.env.IsWorkflowCompleted(), "workflow did not complete")
	r.err = r.env.GetWorkflowError()
	if r.err == nil {
		require.NoError(t, r.env.GetWorkflowResult(&r.res))
		return
	}
	res, ok := workflows.ResultFromError(r.err)
	require.True(t, ok, "ResultFromError(%v) found no result", r.err)
	r.res = res
}

// stepNames lists the names of a result's step records.
func stepNames(steps []workflows.StepRecord) []string {
	var out []string
	for _, s := range steps {
		name := s.Name
		if s.Restore {
			name = "restore:" + name
		}
		out = append(out, name)
	}
	return out
}

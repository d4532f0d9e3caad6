package workflows_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
	"github.com/cdswap/cdswap/workflows"
)

// Fixture values: the fake host's.
const (
	testHost     = "h1"
	testDomain   = fakehost.Domain
	testDomID    = fakehost.DomID
	testVdev     = fakehost.Vdev
	testDevID    = fakehost.DevID
	oldISO       = fakehost.OldISO
	newISO       = fakehost.NewISO
	stubOldFdset = fakehost.OldFdset
	// testRunID is the run id the SDK's test environment gives every run.
	testRunID = "default-test-run-id"
)

// newFakeHost returns host testHost with a guest of kind k. The fake stands in for package
// activities, whose implementations are tested against xensim.
func newFakeHost(k activities.Kind) *fakehost.Host {
	return &fakehost.Host{Name: testHost, Kind: k}
}

// cancelDuring makes the first call of activity step cancel the run in env, then hang as an
// abandoned attempt does until the test ends (the test environment drops its late result).
func cancelDuring(t *testing.T, env *testsuite.TestWorkflowEnvironment, h *fakehost.Host, step string) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	h.On(step, func(ctx context.Context, n int, in any) error {
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
func newEnv(t *testing.T, h *fakehost.Host, in workflows.ChangeMediumInput) (*testsuite.TestWorkflowEnvironment, *run) {
	t.Helper()
	env := newTestEnv()
	env.SetTestTimeout(20 * time.Second)
	workflows.Register(env)
	h.Register(env)
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
func runChange(t *testing.T, h *fakehost.Host) *run {
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

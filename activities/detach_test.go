package activities

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
)

// detachAttempt is how one attempt of DetachVBD ended.
type detachAttempt struct {
	Attempt   int32
	ErrType   string // "" when the attempt succeeded
	Retryable bool
}

// attemptRecorder is a worker interceptor that records how each attempt of DetachVBD ended:
// the retry happens inside the test environment, and only the last attempt's outcome
// reaches the workflow.
type attemptRecorder struct {
	interceptor.WorkerInterceptorBase
	mu       sync.Mutex // guards attempts
	attempts []detachAttempt
}

func (r *attemptRecorder) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	return &attemptRecorderInbound{ActivityInboundInterceptorBase: interceptor.ActivityInboundInterceptorBase{Next: next}, r: r}
}

func (r *attemptRecorder) get() []detachAttempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]detachAttempt(nil), r.attempts...)
}

type attemptRecorderInbound struct {
	interceptor.ActivityInboundInterceptorBase
	r *attemptRecorder
}

func (i *attemptRecorderInbound) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	res, err := i.Next.ExecuteActivity(ctx, in)
	info := activity.GetInfo(ctx)
	if info.ActivityType.Name == NameDetachVBD {
		a := detachAttempt{Attempt: info.Attempt}
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) {
			a.ErrType, a.Retryable = appErr.Type(), !appErr.NonRetryable()
		} else if err != nil {
			a.ErrType = "not an application error: " + err.Error()
		}
		i.r.mu.Lock()
		i.r.attempts = append(i.r.attempts, a)
		i.r.mu.Unlock()
	}
	return res, err
}

// detachRetried runs DetachVBD as ChangeMedium runs a step: retried on a retryable error.
func detachRetried(ctx workflow.Context, in DetachVBDInput) (DetachVBDResult, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: 100 * time.Millisecond, BackoffCoefficient: 1, MaximumAttempts: 3,
		},
	})
	var res DetachVBDResult
	err := workflow.ExecuteActivity(ctx, NameDetachVBD, in).Get(ctx, &res)
	return res, err
}

// TestDetachVBDRetryReleasesLateFdset: a stub domain that add-fds its disk after
// ReleaseFdset ran leaves a stub-devid set in QEMU that holds the PV disk open, so the vbd
// cannot close and DetachVBD's first attempt fails with ErrVBDBusy. The retried attempt
// removes that set, reports its id in ReleasedFdsets, and the vbd goes. Without a late set
// the first attempt detaches and releases nothing.
func TestDetachVBDRetryReleasesLateFdset(t *testing.T) {
	s := startSim(t, xensim.Config{StubdomGuests: 2})
	a := s.newActivities(func(c *Config) { c.VBDTimeout = time.Second })
	env := newEnv(t, a)
	var doms []xensim.DomainInfo
	for _, d := range s.h.Domains() {
		if d.Kind == xensim.KindStubdom {
			doms = append(doms, d)
		}
	}
	require.Len(t, doms, 2)

	// prepare ejects dom's medium and releases its fdsets, as a change does before
	// DetachVBD, and returns the drive.
	prepare := func(t *testing.T, dom xensim.DomainInfo, key string) Drive {
		d := must(t, env, a.Inspect, InspectInput{Host: s.h.Name(), DomID: dom.DomID, Vdev: dom.Vdev}).Drive
		must(t, env, a.Lock, LockInput{DomID: dom.DomID, Key: key})
		must(t, env, a.Eject, EjectInput{Drive: d, Key: key})
		rel := must(t, env, a.ReleaseFdset, ReleaseFdsetInput{Drive: d, Key: key})
		assert.Empty(t, rel.FdsetIDs, "the drive was cold-plugged: no set to release")
		return d
	}
	// detach runs DetachVBD in a workflow and returns its result and how each attempt ended.
	detach := func(t *testing.T, d Drive, key string) (DetachVBDResult, []detachAttempt) {
		var suite testsuite.WorkflowTestSuite
		suite.SetLogger(tlog.NewStructuredLogger(testLogger(t)))
		wenv := suite.NewTestWorkflowEnvironment()
		wenv.SetTestTimeout(time.Minute)
		rec := &attemptRecorder{}
		wenv.SetWorkerOptions(worker.Options{Interceptors: []interceptor.WorkerInterceptor{rec}})
		wenv.RegisterWorkflow(detachRetried)
		wenv.RegisterActivity(a)
		wenv.ExecuteWorkflow(detachRetried, DetachVBDInput{Drive: d, Key: key})
		require.True(t, wenv.IsWorkflowCompleted())
		require.NoError(t, wenv.GetWorkflowError(), "DetachVBD, attempts %+v", rec.get())
		var res DetachVBDResult
		require.NoError(t, wenv.GetWorkflowResult(&res))
		return res, rec.get()
	}

	t.Run("late set", func(t *testing.T) {
		dom, key := doms[0], "detach-late"
		fake := s.h.QEMU(dom.DomID).Fake()
		d := prepare(t, dom, key)

		// The stub domain add-fds its disk now, over its own monitor, as its agent does. The
		// connection stays open until the end: QEMU before 9.1 drops an unused set when its
		// last monitor client leaves, and the set must last until DetachVBD removes it.
		ctx := testenv.Context(t, time.Minute)
		dev := s.read(dom.BackendPath + "/physical-device-path")
		f, err := os.Open(dev)
		require.NoError(t, err)
		defer f.Close()
		agent, err := qmp.Dial(ctx, dom.AgentSocket)
		require.NoError(t, err)
		defer agent.Close()
		late, err := agent.AddFD(ctx, f, nil, d.DevID.StubOpaque())
		require.NoError(t, err)
		require.Equal(t, []int64{late.FdsetID}, stubSets(fake.Fdsets(), d.DevID), "the late set is in QEMU")

		start := time.Now()
		res, attempts := detach(t, d, key)
		t.Logf("DetachVBD with a late set took %s: attempts %+v", time.Since(start), attempts)
		assert.Equal(t, []detachAttempt{
			{Attempt: 1, ErrType: ErrVBDBusy, Retryable: true},
			{Attempt: 2},
		}, attempts, "the first attempt finds the vbd held open, the second releases the set")
		assert.Equal(t, []int64{late.FdsetID}, res.ReleasedFdsets)
		assert.False(t, res.WasAbsent)
		assert.Equal(t, s.iso(xensim.ISODebian), res.Params)
		assert.Empty(t, stubSets(fake.Fdsets(), d.DevID), "no stub-devid set is left in QEMU")
		assert.Empty(t, s.vbdDevids(dom.StubDomID), "the stub domain's vbd is gone")
		_, err = s.x.Read(ctx, dom.BackendPath+"/state")
		assert.Error(t, err, "the vbd's backend is gone")
		must(t, env, a.Unlock, UnlockInput{DomID: dom.DomID, Key: key})
	})

	t.Run("no late set", func(t *testing.T) {
		dom, key := doms[1], "detach-plain"
		d := prepare(t, dom, key)
		res, attempts := detach(t, d, key)
		assert.Equal(t, []detachAttempt{{Attempt: 1}}, attempts, "the vbd closes at the first attempt")
		assert.Empty(t, res.ReleasedFdsets, "a first attempt releases nothing")
		assert.False(t, res.WasAbsent)
		assert.Empty(t, s.vbdDevids(dom.StubDomID), "the stub domain's vbd is gone")
		must(t, env, a.Unlock, UnlockInput{DomID: dom.DomID, Key: key})
	})
}

package integration

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// rollback runs a change that the stubdom never completes on a host with a stubdom guest
// holding first (from a stubdom fdset): the stubdom agent is set never to add the fd of the
// new medium's vbd, so WaitFdset times out and the workflow puts first back. The knob is
// undone as soon as the stubdom has let the new vbd pass, so that the restore of the old
// medium gets its fd (with the knob left on, no restore could ever succeed on a stubdom).
func rollback(t testing.TB, h *xensim.Host, logs *logBuffer, dom xensim.DomainInfo, first, second string) (client.WorkflowRun, workflows.ChangeMediumResult, error) {
	t.Helper()
	ctx := testenv.Context(t, 2*time.Minute)
	require.NoError(t, h.SetFault(ctx, dom.Name, xensim.KnobNeverAddFD, "true"))
	run := startSwap(t, ctx, swapInput(h, dom, second, ""))
	require.NoError(t, logs.waitFor(ctx, "stub domain will not add the fd"))
	require.NoError(t, h.SetFault(ctx, dom.Name, xensim.KnobNeverAddFD, "false"))
	res, err := waitSwap(ctx, run)
	return run, res, err
}

// TestRollback: with the stubdom never adding the new medium's fd, the change fails at
// WaitFdset after one attempt (its own deadline, not three), the old medium is back in the
// drive (query-block) and in xenstore's one vbd, and `cdswap history` says what happened.
func TestRollback(t *testing.T) {
	need(t)
	t.Parallel()
	h, logs := startHostLogs(t, xensim.Config{
		HostName: hostName("rollback"), Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}},
		QEMU: xensim.QEMUFake, AgentDelay: -1,
	})
	dom := domainOf(t, h, xensim.KindStubdom)
	startWorker(t, h, workerOpts{})
	first, second := iso(h, xensim.ISOTools), iso(h, xensim.ISORescue)
	swapOK(t, h, dom, first, workflows.OutcomeChanged)

	t0 := time.Now()
	run, res, err := rollback(t, h, logs, dom, first, second)
	t.Logf("rolled back in %s", time.Since(t0).Round(time.Millisecond))
	require.Error(t, err, "result %+v", res)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "error %v", err)
	assert.Equal(t, workflows.ErrSwapFailedRestored, appErr.Type(), "error %v", err)
	assert.Equal(t, workflows.OutcomeFailedRestored, res.Outcome, "result %+v", res)
	assert.Equal(t, activities.ErrFdsetTimeout, res.ErrorType, "result %+v", res)

	// The forward WaitFdset failed once, for good: no retry of a timeout that a retry would
	// only repeat.
	var wait *workflows.StepRecord
	for i, s := range res.Steps {
		if s.Name == activities.NameWaitFdset && !s.Restore {
			wait = &res.Steps[i]
		}
	}
	require.NotNil(t, wait, "no WaitFdset step in %+v", res.Steps)
	assert.Equal(t, activities.ErrFdsetTimeout, wait.ErrorType)
	assert.Equal(t, int32(1), wait.Attempts, "WaitFdset attempts")

	checkDrive(t, h, dom, first, second)
	// What a person would ask QEMU: query-block on the stubdom's monitor (libxl's may be held
	// by the worker's connection pool).
	assert.Equal(t, first, mediumPath(t, h, dom, queryBlockFile(t, dom.AgentSocket, dom.DevID.QEMUID())))
	requireReplays(t, run)
	checkHistoryText(t, run.GetID(), activities.NameWaitFdset, "restored")
}

// queryBlockFile returns inserted.file of drive id from query-block on socket ("" = empty).
func queryBlockFile(t testing.TB, socket, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := qmp.Dial(ctx, socket)
	require.NoError(t, err)
	defer c.Close()
	blocks, err := c.QueryBlock(ctx)
	require.NoError(t, err)
	for _, b := range blocks {
		if b.QDev == id || b.Device == id {
			if b.Inserted == nil {
				return ""
			}
			return b.Inserted.File
		}
	}
	t.Fatalf("query-block on %s has no drive %s: %+v", socket, id, blocks)
	return ""
}

// mediumPath maps a /dev/fdset/N file name of the guest's fake QEMU to the file the set's
// descriptor points at.
func mediumPath(t testing.TB, h *xensim.Host, dom xensim.DomainInfo, file string) string {
	t.Helper()
	f := h.QEMU(dom.DomID).Fake()
	require.NotNil(t, f)
	b, ok := f.Block(dom.DevID.QEMUID())
	require.True(t, ok)
	require.Equal(t, file, b.File, "query-block and the fake's state disagree")
	return b.Path
}

package xensim

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/simqemu"
)

// TestStubFdsetNeedsAConnectedMonitor shows a pitfall for the job, with the real QEMU and
// the fake alike: QEMU before 9.1 closes every fdset fd that no drive uses when its last QMP
// client disconnects (monitor_fdsets_cleanup with mon_refcount 0). The stub domain's agent
// connects only to add-fd, so if nobody else is connected when it hangs up, its fd is gone
// before the job can see it. libxl is safe because it holds one QMP connection from the
// eject to blockdev-change-medium; the job must do the same (or be ready to re-attach).
func TestStubFdsetNeedsAConnectedMonitor(t *testing.T) {
	forEachQEMU(t, true, func(t *testing.T, mode simqemu.Mode) {
		h := startHost(t, Config{QEMU: mode, StubdomGuests: 1, AgentDelay: agentDelay})
		x := dialXS(t, h)
		in := domainByKind(t, h, KindStubdom)
		ctx := testCtx(t)

		q := dialQMP(t, in.QMPSocket)
		detach(t, x, q, in)
		require.NoError(t, q.Close()) // no client left while the agent adds its fd
		require.NoError(t, attach(t, x, in, in.Medium))
		require.NoError(t, xen.WaitBackendState(ctx, x, in.BackendPath, xen.StateConnected))
		time.Sleep(10 * agentDelay)

		q = dialQMP(t, in.QMPSocket)
		sets, err := stubSets(ctx, q, in.DevID)
		require.NoError(t, err)
		assert.Empty(t, sets, "the stub domain's fd survived with no QMP client connected")

		// Held open, as libxl holds it, the set stays.
		detach(t, x, q, in)
		require.NoError(t, attach(t, x, in, in.Medium))
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err = waitNewStubSet(wctx, q, in.DevID, nil)
		require.NoError(t, err)
	})
}

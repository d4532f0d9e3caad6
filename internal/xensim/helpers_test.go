package xensim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/loopdev"
	"github.com/cdswap/cdswap/internal/xensim/simqemu"
	"github.com/cdswap/cdswap/internal/xs"
)

// startHost starts a host in a short folder (unless cfg has one) and closes it at cleanup,
// failing the test if Close fails.
func startHost(t testing.TB, cfg Config) *Host {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = testenv.SocketDir(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = testenv.Logger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h, err := Start(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, h.Close()) })
	return h
}

// forEachQEMU runs f as a subtest for the fake QEMU and one for a real qemu-system-x86_64,
// which ends (a failure under CI) when QEMU is missing or, with loop, when read-only loop
// devices cannot be made here (a stubdom guest's medium is one).
func forEachQEMU(t *testing.T, loop bool, f func(t *testing.T, mode simqemu.Mode)) {
	for _, mode := range []simqemu.Mode{QEMUFake, QEMUReal} {
		t.Run(string(mode), func(t *testing.T) {
			if mode == QEMUReal {
				testenv.RequireQEMU(t)
				if loop {
					testenv.Require(t, "read-only loop devices", loopdev.Available())
				}
			}
			f(t, mode)
		})
	}
}

// testCtx is the deadline of one step of a test: generous, so that only a hang trips it.
func testCtx(t testing.TB) context.Context { return testenv.Context(t, time.Minute) }

func dialXS(t testing.TB, h *Host) *xs.Client {
	t.Helper()
	c, err := xs.Dial(testCtx(t), h.XenstoredPath())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func dialQMP(t testing.TB, path string) *qmp.Client {
	t.Helper()
	c, err := qmp.Dial(testCtx(t), path)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func domainByKind(t testing.TB, h *Host, k Kind) DomainInfo {
	t.Helper()
	for _, d := range h.Domains() {
		if d.Kind == k {
			return d
		}
	}
	t.Fatalf("host has no %s guest", k)
	return DomainInfo{}
}

func read(t testing.TB, c *xs.Client, p string) string {
	t.Helper()
	v, err := c.Read(testCtx(t), p)
	require.NoError(t, err, "read %s", p)
	return v
}

// stubSets lists the (fdset, fd) pairs whose opaque is the stub opaque of devid.
func stubSets(ctx context.Context, q *qmp.Client, devid xen.DevID) (map[[2]int64]bool, error) {
	sets, err := q.QueryFdsets(ctx)
	if err != nil {
		return nil, err
	}
	out := map[[2]int64]bool{}
	for _, s := range sets {
		for _, fd := range s.FDs {
			if fd.Opaque == devid.StubOpaque() {
				out[[2]int64{s.FdsetID, fd.FD}] = true
			}
		}
	}
	return out, nil
}

// waitNewStubSet polls query-fdsets every 200 ms, as libxl does, until a set with the stub
// opaque that is not in stale appears, and returns its id.
func waitNewStubSet(ctx context.Context, q *qmp.Client, devid xen.DevID, stale map[[2]int64]bool) (int64, error) {
	for {
		sets, err := stubSets(ctx, q, devid)
		if err != nil {
			return 0, err
		}
		for k := range sets {
			if !stale[k] {
				return k[0], nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, errors.New("no new fdset with opaque " + devid.StubOpaque() + ": " + ctx.Err().Error())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// cdrom returns the query-block entry of the drive.
func cdrom(t testing.TB, q *qmp.Client, devid xen.DevID) qmp.BlockInfo {
	t.Helper()
	bs, err := q.QueryBlock(testCtx(t))
	require.NoError(t, err)
	for _, b := range bs {
		if b.Device == devid.QEMUID() || b.QDev == devid.QEMUID() {
			return b
		}
	}
	t.Fatalf("query-block has no %s: %+v", devid.QEMUID(), bs)
	return qmp.BlockInfo{}
}

// hasLine reports whether text has line as one of its lines.
func hasLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// waitState waits until the backend's state is between lo and hi.
func waitState(ctx context.Context, x *xs.Client, be string, lo, hi xen.XenbusState) error {
	w, err := x.Watch(ctx, be+"/state", "")
	if err != nil {
		return err
	}
	defer w.Close(context.WithoutCancel(ctx))
	for {
		v, err := x.Read(ctx, be+"/state")
		if err == nil {
			if st, err := xen.ParseXenbusState(v); err == nil && st >= lo && st <= hi {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s/state in %d..%d: last %q: %w", be, lo, hi, v, ctx.Err())
		case <-w.Events():
		}
	}
}

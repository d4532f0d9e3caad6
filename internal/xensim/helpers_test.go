package xensim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/loopdev"
	"github.com/cdswap/cdswap/internal/xs"
)

// shortDir is a fresh folder with a short path: unix socket paths must stay below 108
// bytes, and t.TempDir() can be long.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "xst")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// testLogger writes the host's log to the test's log, so a failure shows what happened.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// startHost starts a host in a short folder (unless cfg has one) and closes it at cleanup,
// failing the test if Close fails.
func startHost(t testing.TB, cfg Config) *Host {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = shortDir(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h, err := Start(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, h.Close()) })
	return h
}

// needQEMU skips (or, in CI, fails) a test that needs qemu-system-x86_64.
func needQEMU(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		need(t, "qemu-system-x86_64: install Debian's qemu-system-x86 (make deps)")
	}
}

// needLoop skips (or, in CI, fails) a test that needs read-only loop devices.
func needLoop(t testing.TB) {
	t.Helper()
	if err := loopdev.Available(); err != nil {
		need(t, "read-only loop devices ("+err.Error()+"): run the tests as root")
	}
}

// needTool skips (or, in CI, fails) a test that needs a program in $PATH.
func needTool(t testing.TB, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		need(t, name+": install Debian's "+pkg+" (make deps)")
	}
}

func need(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("this test needs %s", what)
	}
	t.Skipf("this test needs %s", what)
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

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

// syncBuffer is a strings.Builder safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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

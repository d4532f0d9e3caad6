package xs_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xs"
	"github.com/cdswap/cdswap/internal/xs/xenstored"
)

// The tests in this file drive the client against the in-memory xenstored over a unix
// socket, as cdswap uses it.

// startServer runs an in-memory xenstored on a temporary socket and returns it with the path.
func startServer(t testing.TB) (*xenstored.Server, string) {
	t.Helper()
	path := filepath.Join(testenv.SocketDir(t), "xenstored.sock")
	ln, err := xenstored.Listen(path)
	require.NoError(t, err)
	srv := xenstored.New(xenstored.Config{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	return srv, path
}

// newClient starts a server and returns a client connected to it.
func newClient(t *testing.T) (*xs.Client, *xenstored.Server, string) {
	t.Helper()
	srv, path := startServer(t)
	return dial(t, path), srv, path
}

func TestClientNodeOps(t *testing.T) {
	c, _, _ := newClient(t)
	ctx := testCtx(t)

	require.NoError(t, c.Write(ctx, "/vm/1/name", "guest"))
	v, err := c.Read(ctx, "/vm/1/name")
	require.NoError(t, err)
	assert.Equal(t, "guest", v)

	require.NoError(t, c.Write(ctx, "/vm/1/empty", ""))
	v, err = c.Read(ctx, "/vm/1/empty")
	require.NoError(t, err)
	assert.Equal(t, "", v, "Read of an empty value")

	big := strings.Repeat("x", xs.PayloadMax-len("/vm/1/big")-1)
	require.NoError(t, c.Write(ctx, "/vm/1/big", big), "the largest value that fits a frame")
	v, err = c.Read(ctx, "/vm/1/big")
	require.NoError(t, err)
	assert.Equal(t, big, v)

	require.NoError(t, c.Mkdir(ctx, "/vm/1/dir"))
	require.NoError(t, c.Mkdir(ctx, "/vm/1/dir"), "Mkdir of an existing node")
	names, err := c.Directory(ctx, "/vm/1")
	require.NoError(t, err)
	slices.Sort(names)
	assert.Equal(t, []string{"big", "dir", "empty", "name"}, names)
	names, err = c.Directory(ctx, "/vm/1/dir")
	require.NoError(t, err)
	assert.Empty(t, names, "Directory of a node without children")

	ok, err := c.Exists(ctx, "/vm/1/name")
	require.NoError(t, err)
	assert.True(t, ok, "Exists(/vm/1/name)")
	ok, err = c.Exists(ctx, "/vm/1/nothing")
	require.NoError(t, err)
	assert.False(t, ok, "Exists(/vm/1/nothing)")

	require.NoError(t, c.Rm(ctx, "/vm/1"))
	_, err = c.Read(ctx, "/vm/1/name")
	require.ErrorIs(t, err, xs.ErrNotFound, "Read after a recursive Rm")
	require.NoError(t, c.Rm(ctx, "/vm/1"), "Rm of a missing node whose parent exists")
	err = c.Rm(ctx, "/vm/1/deeper/still")
	require.ErrorIs(t, err, xs.ErrNotFound, "Rm whose parent is missing")
	var xe *xs.Error
	require.ErrorAs(t, err, &xe)
	assert.Equal(t, xs.OpRm, xe.Op)
	assert.Equal(t, "/vm/1/deeper/still", xe.Path)

	p, err := c.GetDomainPath(ctx, 7)
	require.NoError(t, err)
	assert.Equal(t, "/local/domain/7", p)
}

func TestClientPerms(t *testing.T) {
	c, _, _ := newClient(t)
	ctx := testCtx(t)
	const node = "/local/domain/0/backend/vbd/5/5632"
	require.NoError(t, c.Write(ctx, node+"/state", "1"))
	want := []xs.Perm{{DomID: 0, Access: xs.AccessNone}, {DomID: 5, Access: xs.AccessRead}}
	require.NoError(t, c.SetPerms(ctx, node, want))
	got, err := c.GetPerms(ctx, node)
	require.NoError(t, err)
	assert.Equal(t, want, got, "GetPerms(%s)", node)
	_, err = c.GetPerms(ctx, node+"/missing")
	assert.ErrorIs(t, err, xs.ErrNotFound)
}

func TestClientReadMissing(t *testing.T) {
	c, _, _ := newClient(t)
	_, err := c.Read(testCtx(t), "/no/such/node")
	require.ErrorIs(t, err, xs.ErrNotFound)
	var xe *xs.Error
	require.ErrorAs(t, err, &xe)
	assert.Equal(t, &xs.Error{Op: xs.OpRead, Path: "/no/such/node", Err: xs.ErrNotFound}, xe)
}

func TestClientTransactionIsolationAndAbort(t *testing.T) {
	c, _, path := newClient(t)
	other := dial(t, path)
	ctx := testCtx(t)
	require.NoError(t, c.Write(ctx, "/t/a", "old"))

	tx, err := c.Begin(ctx)
	require.NoError(t, err)
	assert.NotZero(t, tx.ID())
	require.NoError(t, tx.Write(ctx, "/t/a", "new"))
	require.NoError(t, tx.Write(ctx, "/t/b", "created"))
	v, err := tx.Read(ctx, "/t/a")
	require.NoError(t, err)
	assert.Equal(t, "new", v, "the transaction sees its own write")
	v, err = other.Read(ctx, "/t/a")
	require.NoError(t, err)
	assert.Equal(t, "old", v, "others do not see an uncommitted write")
	ok, err := tx.Exists(ctx, "/t/b")
	require.NoError(t, err)
	assert.True(t, ok)
	names, err := tx.Directory(ctx, "/t")
	require.NoError(t, err)
	slices.Sort(names)
	assert.Equal(t, []string{"a", "b"}, names)
	require.NoError(t, tx.Abort(ctx))

	v, err = c.Read(ctx, "/t/a")
	require.NoError(t, err)
	assert.Equal(t, "old", v, "Abort discards")
	ok, err = c.Exists(ctx, "/t/b")
	require.NoError(t, err)
	assert.False(t, ok, "Abort discards a created node")

	require.ErrorIs(t, tx.Commit(ctx), xs.ErrTxDone, "Commit after Abort")
	require.ErrorIs(t, tx.Write(ctx, "/t/a", "x"), xs.ErrTxDone, "Write after Abort")

	// A committed transaction is visible to everyone.
	tx, err = c.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, tx.Mkdir(ctx, "/t/m"))
	require.NoError(t, tx.SetPerms(ctx, "/t/m", []xs.Perm{{DomID: 0, Access: xs.AccessNone}, {DomID: 3, Access: xs.AccessBoth}}))
	require.NoError(t, tx.Rm(ctx, "/t/a"))
	perms, err := tx.GetPerms(ctx, "/t/m")
	require.NoError(t, err)
	assert.Len(t, perms, 2)
	require.NoError(t, tx.Commit(ctx))
	ok, err = other.Exists(ctx, "/t/m")
	require.NoError(t, err)
	assert.True(t, ok, "committed Mkdir")
	ok, err = other.Exists(ctx, "/t/a")
	require.NoError(t, err)
	assert.False(t, ok, "committed Rm")
}

func TestClientCommitConflict(t *testing.T) {
	c, _, path := newClient(t)
	other := dial(t, path)
	ctx := testCtx(t)
	require.NoError(t, c.Write(ctx, "/n", "0"))

	tx, err := c.Begin(ctx)
	require.NoError(t, err)
	v, err := tx.Read(ctx, "/n")
	require.NoError(t, err)
	require.NoError(t, other.Write(ctx, "/n", "changed"))
	require.NoError(t, tx.Write(ctx, "/n", v+"1"))
	err = tx.Commit(ctx)
	require.ErrorIs(t, err, xs.ErrAgain, "Commit after an intervening write")
	var xe *xs.Error
	require.ErrorAs(t, err, &xe)
	assert.Equal(t, xs.OpTransactionEnd, xe.Op)

	v, err = c.Read(ctx, "/n")
	require.NoError(t, err)
	assert.Equal(t, "changed", v, "a conflicting commit changes nothing")
}

// TestClientUpdateCounter is the contention test: many goroutines share one client (and a
// second client shares the node) and increment one counter through Update. Every increment
// that committed is counted once, and conflicts did happen and were retried.
func TestClientUpdateCounter(t *testing.T) {
	const (
		workers = 16
		each    = 50
	)
	c, srv, path := newClient(t)
	second := dial(t, path)
	ctx := testCtx(t)
	const node = "/counter"
	require.NoError(t, c.Write(ctx, node, "0"))

	var committed, fnRuns atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		cl := c
		if w%4 == 3 {
			cl = second // a quarter of the writers come through another connection
		}
		wg.Go(func() {
			for range each {
				err := cl.Update(ctx, func(tx *xs.Tx) error {
					fnRuns.Add(1)
					v, err := tx.Read(ctx, node)
					if err != nil {
						return err
					}
					n, err := strconv.Atoi(v)
					if err != nil {
						return fmt.Errorf("counter %q: %w", v, err)
					}
					return tx.Write(ctx, node, strconv.Itoa(n+1))
				})
				if err != nil {
					errs <- err
					continue
				}
				committed.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		// Only giving up after UpdateAttempts conflicts is acceptable, and it is not expected.
		require.ErrorIs(t, err, xs.ErrAgain, "Update failed with something else than conflicts")
	}

	v, err := c.Read(ctx, node)
	require.NoError(t, err)
	n, err := strconv.Atoi(v)
	require.NoError(t, err)
	assert.Equal(t, committed.Load(), int64(n), "counter = %d, want the %d committed increments", n, committed.Load())
	assert.Equal(t, int64(workers*each), committed.Load(), "committed increments")

	retries := c.Stats().Retries + second.Stats().Retries
	assert.GreaterOrEqual(t, retries, uint64(1), "no Update ever saw ErrAgain: the test did not contend")
	assert.Equal(t, committed.Load()+int64(retries), fnRuns.Load(), "fn runs = commits + retries")
	st := srv.Stats()
	assert.Equal(t, retries, st.Conflicts, "client retries vs server conflicts")
	t.Logf("%d increments, %d retried after EAGAIN; server: %d commits, %d conflicts", committed.Load(), retries, st.Commits, st.Conflicts)
}

// TestClientUpdateWithInjectedAgain: the server's fault injection fails commits that would
// have succeeded; Update still applies each change exactly once.
func TestClientUpdateWithInjectedAgain(t *testing.T) {
	c, srv, _ := newClient(t)
	ctx := testCtx(t)
	srv.SetFaults(xenstored.Faults{AgainRatio: 0.5})
	for i := range 20 {
		require.NoError(t, c.Update(ctx, func(tx *xs.Tx) error {
			return tx.Write(ctx, fmt.Sprintf("/inj/%d", i), "v")
		}))
	}
	names, err := c.Directory(ctx, "/inj")
	require.NoError(t, err)
	assert.Len(t, names, 20)
	assert.Positive(t, c.Stats().Retries, "no injected EAGAIN was retried")
	assert.Equal(t, c.Stats().Retries, srv.Stats().InjectedAgain)
}

func TestClientWatch(t *testing.T) {
	c, _, path := newClient(t)
	writer := dial(t, path)
	ctx := testCtx(t)
	const dev = "/local/domain/0/backend/vbd/5/5632"
	require.NoError(t, c.Write(ctx, dev+"/state", "1"))
	require.NoError(t, c.Write(ctx, dev+"/online", "1"))

	w, err := c.Watch(ctx, dev, "backend-state")
	require.NoError(t, err)
	assert.Equal(t, xs.WatchEvent{Path: dev, Token: "backend-state"}, <-w.Events(), "the first event fires at once")

	require.NoError(t, writer.Write(ctx, dev+"/state", "4"))
	assert.Equal(t, xs.WatchEvent{Path: dev + "/state", Token: "backend-state"}, <-w.Events())

	// A write in a transaction fires only when it commits.
	tx, err := writer.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, tx.Write(ctx, dev+"/online", "0"))
	// Order the check: a plain write to another node after the transaction's write but
	// before its commit must be the next event.
	require.NoError(t, writer.Write(ctx, dev+"/state", "2"))
	assert.Equal(t, dev+"/state", (<-w.Events()).Path, "an uncommitted write fired a watch")
	require.NoError(t, tx.Commit(ctx))
	assert.Equal(t, dev+"/online", (<-w.Events()).Path)

	// A second watch on the same client with its own token.
	w2, err := c.Watch(ctx, "/elsewhere", "")
	require.NoError(t, err)
	assert.Equal(t, "/elsewhere", (<-w2.Events()).Path)

	require.NoError(t, w.Close(ctx))
	_, open := <-w.Events()
	assert.False(t, open, "Events() open after Close")
	require.NoError(t, w.Err())
	require.NoError(t, writer.Write(ctx, dev+"/state", "5"))
	require.NoError(t, writer.Write(ctx, "/elsewhere", "y"))
	assert.Equal(t, "/elsewhere", (<-w2.Events()).Path, "the other watch still works")
	assert.Zero(t, c.Stats().EventsDropped)

	// The token is free again.
	w3, err := c.Watch(ctx, dev, "backend-state")
	require.NoError(t, err)
	assert.Equal(t, dev, (<-w3.Events()).Path)
}

func TestClientWatchSpecialPath(t *testing.T) {
	c, _, _ := newClient(t)
	ctx := testCtx(t)
	w, err := c.Watch(ctx, "@releaseDomain", "rel")
	require.NoError(t, err)
	assert.Equal(t, xs.WatchEvent{Path: "@releaseDomain", Token: "rel"}, <-w.Events())
}

func TestClientServerGoesAway(t *testing.T) {
	c, srv, _ := newClient(t)
	ctx := testCtx(t)
	w, err := c.Watch(ctx, "/w", "t")
	require.NoError(t, err)
	<-w.Events()
	require.NoError(t, srv.Close())
	for range w.Events() {
	}
	assert.ErrorIs(t, w.Err(), xs.ErrClosed, "watch error after the server closed")
	_, err = c.Read(ctx, "/w")
	assert.ErrorIs(t, err, xs.ErrClosed)
}

func TestClientConcurrentMixedOps(t *testing.T) {
	c, _, _ := newClient(t)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Go(func() {
			for i := range 50 {
				p := fmt.Sprintf("/mix/%d/%d", g, i)
				if err := c.Write(ctx, p, p); err != nil {
					errs <- err
					return
				}
				v, err := c.Read(ctx, p)
				if err != nil {
					errs <- err
					return
				}
				if v != p {
					errs <- fmt.Errorf("Read(%s) = %q, want %q: a reply reached the wrong caller", p, v, p)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// TestClientWithXenstoreUtils checks interoperation with Debian's C libxenstore, through
// xenstore-write and xenstore-read on the same server.
func TestClientWithXenstoreUtils(t *testing.T) {
	read := testenv.RequireCommand(t, "xenstore-read", "xenstore-utils")
	write := testenv.RequireCommand(t, "xenstore-write", "xenstore-utils")
	c, _, path := newClient(t)
	ctx := testCtx(t)
	env := append(os.Environ(), "XENSTORED_PATH="+path)

	cmd := exec.CommandContext(ctx, write, "/from/c", "written by libxenstore")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "xenstore-write: %s", out)
	v, err := c.Read(ctx, "/from/c")
	require.NoError(t, err)
	assert.Equal(t, "written by libxenstore", v)

	require.NoError(t, c.Write(ctx, "/from/go", "written by xs"))
	cmd = exec.CommandContext(ctx, read, "/from/go")
	cmd.Env = env
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "xenstore-read: %s", out)
	assert.Equal(t, "written by xs\n", string(out))

	cmd = exec.CommandContext(ctx, read, "/from/nothing")
	cmd.Env = env
	out, err = cmd.CombinedOutput()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "xenstore-read of a missing node: %v, %s", err, out)
}

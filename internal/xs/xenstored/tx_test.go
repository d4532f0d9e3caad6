package xenstored

import (
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/xs"
)

// begin starts a transaction on r and returns its id.
func (r *raw) begin() uint32 {
	r.t.Helper()
	p := r.ok(xs.OpTransactionStart, 0, z(""))
	require.True(r.t, strings.HasSuffix(p, "\x00"), "TRANSACTION_START reply %q lacks its NUL", p)
	id, err := strconv.ParseUint(strings.TrimSuffix(p, "\x00"), 10, 32)
	require.NoError(r.t, err, "TRANSACTION_START reply %q", p)
	require.NotZero(r.t, id)
	return uint32(id)
}

// end ends a transaction and returns "OK" or the errno name.
func (r *raw) end(id uint32, commit bool) string {
	r.t.Helper()
	arg := "F"
	if commit {
		arg = "T"
	}
	m := r.call(xs.OpTransactionEnd, id, z(arg))
	return strings.TrimSuffix(string(m.Payload), "\x00")
}

func TestTransactionIsolation(t *testing.T) {
	s, path := start(t, Config{})
	a, b := dialRaw(t, path), dialRaw(t, path)
	require.NoError(t, s.Write("/t/old", "0"))

	tx := a.begin()
	a.ok(xs.OpWrite, tx, []byte("/t/new/x\x001"))
	a.ok(xs.OpWrite, tx, []byte("/t/old\x001"))
	a.ok(xs.OpRm, tx, z("/t/gone"))
	assert.Equal(t, "1", a.ok(xs.OpRead, tx, z("/t/new/x")), "the transaction sees its own write")
	assert.Equal(t, "x|", showPayload([]byte(a.ok(xs.OpDirectory, tx, z("/t/new")))), "its own new directory")
	assert.Equal(t, "ENOENT", a.fail(xs.OpRead, 0, z("/t/new/x")), "the same connection outside the transaction")
	assert.Equal(t, "ENOENT", b.fail(xs.OpRead, 0, z("/t/new/x")), "another connection")
	assert.Equal(t, "0", b.ok(xs.OpRead, 0, z("/t/old")), "another connection sees the old value")
	assert.Equal(t, "ENOENT", b.fail(xs.OpRead, tx, z("/t/old")), "another connection cannot use the transaction id")

	assert.Equal(t, "OK", a.end(tx, true))
	assert.Equal(t, "1", b.ok(xs.OpRead, 0, z("/t/new/x")), "after commit")
	assert.Equal(t, "1", b.ok(xs.OpRead, 0, z("/t/old")), "after commit")
	assert.Equal(t, "ENOENT", a.fail(xs.OpRead, tx, z("/t/old")), "the id is gone after the end")

	tx = a.begin()
	a.ok(xs.OpWrite, tx, []byte("/t/old\x002"))
	a.ok(xs.OpRm, tx, z("/t/new"))
	assert.Equal(t, "ENOENT", a.fail(xs.OpRead, tx, z("/t/new/x")), "rm inside the transaction")
	assert.Equal(t, "1", b.ok(xs.OpRead, 0, z("/t/new/x")), "rm not visible outside")
	assert.Equal(t, "OK", a.end(tx, false), "abort")
	assert.Equal(t, "1", b.ok(xs.OpRead, 0, z("/t/old")), "after abort")
	assert.Equal(t, "1", b.ok(xs.OpRead, 0, z("/t/new/x")), "after abort")

	tx = a.begin()
	a.ok(xs.OpRm, tx, z("/t/new"))
	assert.Equal(t, "OK", a.end(tx, true))
	assert.Equal(t, "ENOENT", b.fail(xs.OpRead, 0, z("/t/new/x")), "committed rm")
	assert.Equal(t, "old|", showPayload([]byte(b.ok(xs.OpDirectory, 0, z("/t")))), "committed rm updated the parent")

	st := s.Stats()
	assert.Equal(t, uint64(2), st.Commits, "Stats.Commits")
	assert.Equal(t, uint64(1), st.Aborts, "Stats.Aborts")
}

func TestTransactionErrors(t *testing.T) {
	_, path := start(t, Config{})
	r := dialRaw(t, path)
	tx := r.begin()
	runSteps(t, r, []step{
		{name: "start inside a transaction", op: xs.OpTransactionStart, tx: tx, payload: z(""), wantErr: "EBUSY"},
		{name: "end with a bad argument", op: xs.OpTransactionEnd, tx: tx, payload: z("X"), wantErr: "EINVAL"},
		{name: "end without NUL", op: xs.OpTransactionEnd, tx: tx, payload: []byte("T"), wantErr: "EINVAL"},
		{name: "end of an unknown id", op: xs.OpTransactionEnd, tx: tx + 1, payload: z("T"), wantErr: "ENOENT"},
		{name: "the bad ends left it open", op: xs.OpTransactionEnd, tx: tx, payload: z("T"), want: "OK|"},
	})
	a, b := r.begin(), r.begin()
	assert.NotEqual(t, a, b, "two open transactions share an id")
}

func TestTransactionConflicts(t *testing.T) {
	// Each case runs two connections on a fresh server seeded with /c/x, /c/y and /c/z;
	// run does its interleaving and returns the two commit results.
	tests := []struct {
		name         string
		run          func(a, b *raw, s *Server) (string, string)
		wantA, wantB string
	}{
		{
			name: "both write the same node",
			run: func(a, b *raw, s *Server) (string, string) {
				ta, tb := a.begin(), b.begin()
				a.ok(xs.OpWrite, ta, []byte("/c/x\x00a"))
				b.ok(xs.OpWrite, tb, []byte("/c/x\x00b"))
				return a.end(ta, true), b.end(tb, true)
			},
			wantA: "OK", wantB: "EAGAIN",
		},
		{
			name: "disjoint nodes",
			run: func(a, b *raw, s *Server) (string, string) {
				ta, tb := a.begin(), b.begin()
				a.ok(xs.OpWrite, ta, []byte("/c/x\x00a"))
				b.ok(xs.OpWrite, tb, []byte("/c/y\x00b"))
				a.ok(xs.OpRead, ta, z("/c/z"))
				b.ok(xs.OpRead, tb, z("/c/z"))
				return a.end(ta, true), b.end(tb, true)
			},
			wantA: "OK", wantB: "OK",
		},
		{
			name: "one read what the other wrote",
			run: func(a, b *raw, s *Server) (string, string) {
				ta, tb := a.begin(), b.begin()
				b.ok(xs.OpRead, tb, z("/c/x"))
				a.ok(xs.OpWrite, ta, []byte("/c/x\x00a"))
				b.ok(xs.OpWrite, tb, []byte("/c/y\x00b"))
				return a.end(ta, true), b.end(tb, true)
			},
			wantA: "OK", wantB: "EAGAIN",
		},
		{
			name: "a plain write to a node the transaction read",
			run: func(a, b *raw, s *Server) (string, string) {
				tb := b.begin()
				b.ok(xs.OpRead, tb, z("/c/x"))
				a.ok(xs.OpWrite, 0, []byte("/c/x\x00a"))
				b.ok(xs.OpWrite, tb, []byte("/c/y\x00b"))
				return "OK", b.end(tb, true)
			},
			wantA: "OK", wantB: "EAGAIN",
		},
		{
			// cxenstored takes a node's generation at the transaction's first look, not at
			// its start: the transaction saw "sim" (its write replaced it knowingly).
			name: "a change after the start, before the transaction looked",
			run: func(a, b *raw, s *Server) (string, string) {
				tb := b.begin()
				require.NoError(b.t, s.Write("/c/x", "sim"))
				b.ok(xs.OpWrite, tb, []byte("/c/x\x00b"))
				return "OK", b.end(tb, true)
			},
			wantA: "OK", wantB: "OK",
		},
		{
			name: "a node the transaction found absent was created",
			run: func(a, b *raw, s *Server) (string, string) {
				tb := b.begin()
				b.fail(xs.OpRead, tb, z("/c/new"))
				a.ok(xs.OpWrite, 0, []byte("/c/new\x00a"))
				b.ok(xs.OpWrite, tb, []byte("/c/y\x00b"))
				return "OK", b.end(tb, true)
			},
			wantA: "OK", wantB: "EAGAIN",
		},
		{
			// The node is absent again, but finding it missing made the transaction read
			// its parent (cxenstored's errno_from_parents), whose child list changed twice.
			name: "a node the transaction found absent was created and removed again",
			run: func(a, b *raw, s *Server) (string, string) {
				tb := b.begin()
				b.fail(xs.OpRead, tb, z("/c/new"))
				a.ok(xs.OpWrite, 0, []byte("/c/new\x00a"))
				a.ok(xs.OpRm, 0, z("/c/new"))
				b.ok(xs.OpWrite, tb, []byte("/c/y\x00b"))
				return "OK", b.end(tb, true)
			},
			wantA: "OK", wantB: "EAGAIN",
		},
		{
			name: "a node the transaction read was removed",
			run: func(a, b *raw, s *Server) (string, string) {
				tb := b.begin()
				b.ok(xs.OpRead, tb, z("/c/z"))
				a.ok(xs.OpRm, 0, z("/c/z"))
				b.ok(xs.OpWrite, tb, []byte("/c/y\x00b"))
				return "OK", b.end(tb, true)
			},
			wantA: "OK", wantB: "EAGAIN",
		},
		{
			name: "both create children of one parent",
			run: func(a, b *raw, s *Server) (string, string) {
				// The child list is part of the parent node, as in cxenstored.
				ta, tb := a.begin(), b.begin()
				a.ok(xs.OpWrite, ta, []byte("/c/new-a\x00a"))
				b.ok(xs.OpWrite, tb, []byte("/c/new-b\x00b"))
				return a.end(ta, true), b.end(tb, true)
			},
			wantA: "OK", wantB: "EAGAIN",
		},
		{
			name: "a write elsewhere does not matter",
			run: func(a, b *raw, s *Server) (string, string) {
				tb := b.begin()
				b.ok(xs.OpRead, tb, z("/c/x"))
				a.ok(xs.OpWrite, 0, []byte("/other\x00a"))
				b.ok(xs.OpWrite, tb, []byte("/c/y\x00b"))
				return "OK", b.end(tb, true)
			},
			wantA: "OK", wantB: "OK",
		},
		{
			name: "an aborted transaction changes nothing",
			run: func(a, b *raw, s *Server) (string, string) {
				ta, tb := a.begin(), b.begin()
				a.ok(xs.OpWrite, ta, []byte("/c/x\x00a"))
				b.ok(xs.OpWrite, tb, []byte("/c/x\x00b"))
				return a.end(ta, false), b.end(tb, true)
			},
			wantA: "OK", wantB: "OK",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path := start(t, Config{})
			for _, p := range []string{"/c/x", "/c/y", "/c/z"} {
				require.NoError(t, s.Write(p, "0"))
			}
			a, b := dialRaw(t, path), dialRaw(t, path)
			gotA, gotB := tt.run(a, b, s)
			assert.Equal(t, tt.wantA, gotA, "first commit")
			assert.Equal(t, tt.wantB, gotB, "second commit")
			assertConflicts(t, s, tt.wantB)
		})
	}
}

// assertConflicts checks Stats.Conflicts after one test's only commit, which ended with
// commit ("OK" or an errno name).
func assertConflicts(t *testing.T, s *Server, commit string) {
	t.Helper()
	want := uint64(0)
	if commit == "EAGAIN" {
		want = 1
	}
	assert.Equal(t, want, s.Stats().Conflicts, "Stats.Conflicts after a commit that ended %s", commit)
}

func TestConflictLeavesStoreUnchanged(t *testing.T) {
	s, path := start(t, Config{})
	require.NoError(t, s.Write("/c/x", "0"))
	a, b := dialRaw(t, path), dialRaw(t, path)
	ta, tb := a.begin(), b.begin()
	a.ok(xs.OpWrite, ta, []byte("/c/x\x00a"))
	b.ok(xs.OpWrite, tb, []byte("/c/x\x00b"))
	b.ok(xs.OpWrite, tb, []byte("/c/only-b\x00b"))
	require.Equal(t, "OK", a.end(ta, true))
	require.Equal(t, "EAGAIN", b.end(tb, true))
	got, err := s.Read("/c/x")
	require.NoError(t, err)
	assert.Equal(t, "a", got, "Read(/c/x) after the loser's commit")
	_, err = s.Read("/c/only-b")
	assert.ErrorIs(t, err, xs.ErrNotFound, "the loser's other write")
	assert.Equal(t, "ENOENT", b.fail(xs.OpRead, tb, z("/c/x")), "the failed transaction is gone")
}

func TestFaultInjection(t *testing.T) {
	s, path := start(t, Config{FaultSeed: 7})
	r := dialRaw(t, path)

	s.SetFaults(Faults{AgainRatio: 1})
	tx := r.begin()
	r.ok(xs.OpWrite, tx, []byte("/f/x\x001"))
	assert.Equal(t, "EAGAIN", r.end(tx, true), "commit with AgainRatio 1")
	_, err := s.Read("/f/x")
	assert.ErrorIs(t, err, xs.ErrNotFound, "an injected EAGAIN commits nothing")
	tx = r.begin()
	assert.Equal(t, "OK", r.end(tx, false), "an abort is never failed")

	s.SetFaults(Faults{AgainRatio: 0.5})
	again := 0
	const n = 200
	for range n {
		tx := r.begin()
		r.ok(xs.OpWrite, tx, []byte("/f/y\x001"))
		if r.end(tx, true) == "EAGAIN" {
			again++
		}
	}
	// Seeded, so the count is fixed; the bounds only say it is a share, not all or none.
	assert.Greater(t, again, n/4, "EAGAIN count with AgainRatio 0.5")
	assert.Less(t, again, 3*n/4, "EAGAIN count with AgainRatio 0.5")

	s.SetFaults(Faults{AgainRatio: -3})
	tx = r.begin()
	r.ok(xs.OpWrite, tx, []byte("/f/x\x001"))
	assert.Equal(t, "OK", r.end(tx, true), "a negative ratio is clamped to 0")

	st := s.Stats()
	assert.Equal(t, uint64(1+again), st.InjectedAgain, "Stats.InjectedAgain")
	assert.Equal(t, st.InjectedAgain, st.Conflicts, "Stats.Conflicts")
}

// TestTransactionDirectoryPartGeneration: DIRECTORY_PART inside a transaction answers with
// the generation of the transaction's copy, so a change outside between two pieces does not
// show (the pieces stay one list), while the transaction's own change does.
func TestTransactionDirectoryPartGeneration(t *testing.T) {
	s, path := start(t, Config{})
	require.NoError(t, s.Write("/d/a", "0"))
	r := dialRaw(t, path)
	gen := func(tx uint32) string {
		t.Helper()
		return strings.Split(r.ok(xs.OpDirectoryPart, tx, z("/d", "0")), "\x00")[0]
	}
	tx := r.begin()
	first := gen(tx)
	require.NoError(t, s.Write("/d/b", "0"))
	outside := gen(0)
	assert.NotEqual(t, first, outside, "generation outside after a new child")
	assert.Equal(t, first, gen(tx), "generation in the transaction after a new child outside")
	assert.Equal(t, first+"|a||", showPayload([]byte(r.ok(xs.OpDirectoryPart, tx, z("/d", "0")))),
		"the transaction's child list")

	r.ok(xs.OpWrite, tx, []byte("/d/c\x000"))
	mine := gen(tx)
	assert.NotEqual(t, first, mine, "generation in the transaction after its own new child")
	assert.NotEqual(t, outside, mine, "generation in the transaction after its own new child")
	assert.Equal(t, outside, gen(0), "generation outside after the transaction's uncommitted child")
	assert.Equal(t, "EAGAIN", r.end(tx, true))
}

package xenstored

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xs"
)

// The tests in this file drive the real client (package xs) against the server, one
// transaction on one connection and "outside" changes on another, and check that the
// transaction sees what cxenstored (Xen 4.9 and later, tools/xenstored/transaction.c) would
// show it and that its commit ends as cxenstored's would.

// nodeOps is what a transaction and a client outside it can both do to nodes.
type nodeOps interface {
	Read(ctx context.Context, path string) (string, error)
	Write(ctx context.Context, path, value string) error
	Mkdir(ctx context.Context, path string) error
	Rm(ctx context.Context, path string) error
	Directory(ctx context.Context, path string) ([]string, error)
	GetPerms(ctx context.Context, path string) ([]xs.Perm, error)
	SetPerms(ctx context.Context, path string, perms []xs.Perm) error
}

// op is one call and the result it must give, written as in docs/misc/xenstore.txt: a
// value, child names joined with ',', permissions joined with ',', "OK", or an errno name.
type op struct {
	desc string
	do   func(ctx context.Context, o nodeOps) (string, error)
	want string
}

func (o op) check(t *testing.T, ctx context.Context, who string, on nodeOps) {
	t.Helper()
	got, err := o.do(ctx, on)
	if err != nil {
		got = xs.ErrnoName(err)
	}
	assert.Equal(t, o.want, got, "%s: %s = %q, want %q", who, o.desc, got, o.want)
}

func readOp(path, want string) op {
	return op{desc: "Read(" + path + ")", want: want, do: func(ctx context.Context, o nodeOps) (string, error) {
		return o.Read(ctx, path)
	}}
}

func writeOp(path, value string) op {
	return op{desc: "Write(" + path + ", " + value + ")", want: "OK", do: func(ctx context.Context, o nodeOps) (string, error) {
		return "OK", o.Write(ctx, path, value)
	}}
}

func mkdirOp(path string) op {
	return op{desc: "Mkdir(" + path + ")", want: "OK", do: func(ctx context.Context, o nodeOps) (string, error) {
		return "OK", o.Mkdir(ctx, path)
	}}
}

func rmOp(path string) op {
	return op{desc: "Rm(" + path + ")", want: "OK", do: func(ctx context.Context, o nodeOps) (string, error) {
		return "OK", o.Rm(ctx, path)
	}}
}

func dirOp(path, want string) op {
	return op{desc: "Directory(" + path + ")", want: want, do: func(ctx context.Context, o nodeOps) (string, error) {
		names, err := o.Directory(ctx, path)
		return strings.Join(names, ","), err
	}}
}

func getPermsOp(path, want string) op {
	return op{desc: "GetPerms(" + path + ")", want: want, do: func(ctx context.Context, o nodeOps) (string, error) {
		perms, err := o.GetPerms(ctx, path)
		s := make([]string, len(perms))
		for i, p := range perms {
			s[i] = p.String()
		}
		return strings.Join(s, ","), err
	}}
}

func setPermsOp(path, perms string) op {
	return op{desc: "SetPerms(" + path + ", " + perms + ")", want: "OK", do: func(ctx context.Context, o nodeOps) (string, error) {
		var ps []xs.Perm
		for _, s := range strings.Split(perms, ",") {
			p, err := xs.ParsePerm(s)
			if err != nil {
				return "", err
			}
			ps = append(ps, p)
		}
		return "OK", o.SetPerms(ctx, path, ps)
	}}
}

// bigDir is a node whose child list is over the 4096-byte payload limit, so the client
// lists it with DIRECTORY_PART, a piece at a time.
const bigDir = "/c/big"

// bigNames are the children of bigDir as seeded, joined with ','.
func bigNames(extra ...string) string {
	names := make([]string, 0, 80+len(extra))
	for i := range 80 {
		names = append(names, bigChild(i))
	}
	return strings.Join(append(names, extra...), ",")
}

func bigChild(i int) string { return fmt.Sprintf("child-%02d-%s", i, strings.Repeat("x", 50)) }

// TestTransactionView is one row per way another connection can change what a transaction
// looked at (it then keeps its own view and its commit fails with EAGAIN) and per change it
// may ignore (the commit succeeds).
func TestTransactionView(t *testing.T) {
	// Every row starts from this tree: /c/x = 0, /c/y = 0, /c/d with children a and b,
	// /c/p owned by dom 0 and readable by dom 5, and bigDir with 80 long child names.
	seed := func(t *testing.T, s *Server) {
		for _, p := range []string{"/c/x", "/c/y", "/c/d/a", "/c/d/b", "/c/p"} {
			require.NoError(t, s.Write(p, "0"))
		}
		require.NoError(t, s.SetPerms("/c/p", []xs.Perm{{DomID: 0, Access: xs.AccessNone}, {DomID: 5, Access: xs.AccessRead}}))
		for i := range 80 {
			require.NoError(t, s.Write(bigDir+"/"+bigChild(i), ""))
		}
	}
	tests := []struct {
		name    string
		tx      []op // the transaction's first look
		outside []op // another connection, outside any transaction
		later   op   // the transaction again, after the outside change
		commit  string
		after   op // outside again, after the commit
	}{
		// A node the transaction read.
		{
			name:    "read, written outside",
			tx:      []op{readOp("/c/x", "0")},
			outside: []op{writeOp("/c/x", "o")},
			later:   readOp("/c/x", "0"),
			commit:  "EAGAIN",
			after:   readOp("/c/x", "o"),
		},
		{
			name:    "read, removed outside",
			tx:      []op{readOp("/c/x", "0")},
			outside: []op{rmOp("/c/x")},
			later:   readOp("/c/x", "0"),
			commit:  "EAGAIN",
			after:   readOp("/c/x", "ENOENT"),
		},
		{
			// The same value, but a new node: its generation is new.
			name:    "read, removed and created again outside",
			tx:      []op{readOp("/c/x", "0")},
			outside: []op{rmOp("/c/x"), writeOp("/c/x", "0")},
			later:   readOp("/c/x", "0"),
			commit:  "EAGAIN",
			after:   readOp("/c/x", "0"),
		},
		{
			// Permissions are part of the node, so they count even for a value read.
			name:    "read, permissions set outside",
			tx:      []op{readOp("/c/p", "0")},
			outside: []op{setPermsOp("/c/p", "b0")},
			later:   getPermsOp("/c/p", "n0,r5"),
			commit:  "EAGAIN",
			after:   getPermsOp("/c/p", "b0"),
		},
		{
			name:    "read, written outside with the value it had",
			tx:      []op{readOp("/c/x", "0")},
			outside: []op{writeOp("/c/x", "0")},
			later:   readOp("/c/x", "0"),
			commit:  "EAGAIN",
			after:   readOp("/c/x", "0"),
		},
		// A node the transaction found missing.
		{
			name:    "read as missing, created outside",
			tx:      []op{readOp("/c/new", "ENOENT")},
			outside: []op{writeOp("/c/new", "o")},
			later:   readOp("/c/new", "ENOENT"),
			commit:  "EAGAIN",
			after:   readOp("/c/new", "o"),
		},
		{
			// Missing again at the commit, but finding it missing made the transaction read
			// its parent (errno_from_parents), whose child list changed.
			name:    "read as missing, created and removed again outside",
			tx:      []op{readOp("/c/new", "ENOENT")},
			outside: []op{writeOp("/c/new", "o"), rmOp("/c/new")},
			later:   readOp("/c/new", "ENOENT"),
			commit:  "EAGAIN",
			after:   readOp("/c/new", "ENOENT"),
		},
		{
			// The same parent read: /c, the first of /c/new/deeper's parents that exists.
			name:    "read as missing, a sibling of its first existing parent's children created outside",
			tx:      []op{readOp("/c/new/deeper", "ENOENT")},
			outside: []op{writeOp("/c/other", "o")},
			later:   dirOp("/c", "x,y,d,p,big"),
			commit:  "EAGAIN",
			after:   dirOp("/c", "x,y,d,p,big,other"),
		},
		{
			name:    "listed as missing, created outside",
			tx:      []op{dirOp("/c/new", "ENOENT")},
			outside: []op{mkdirOp("/c/new")},
			later:   dirOp("/c/new", "ENOENT"),
			commit:  "EAGAIN",
			after:   dirOp("/c/new", ""),
		},
		// Directory listings: the child list is part of the node.
		{
			name:    "listed, a child created outside",
			tx:      []op{dirOp("/c/d", "a,b")},
			outside: []op{writeOp("/c/d/c", "o")},
			later:   dirOp("/c/d", "a,b"),
			commit:  "EAGAIN",
			after:   dirOp("/c/d", "a,b,c"),
		},
		{
			name:    "listed, a child removed outside",
			tx:      []op{dirOp("/c/d", "a,b")},
			outside: []op{rmOp("/c/d/a")},
			later:   dirOp("/c/d", "a,b"),
			commit:  "EAGAIN",
			after:   dirOp("/c/d", "b"),
		},
		{
			name:    "listed, removed outside with its children",
			tx:      []op{dirOp("/c/d", "a,b")},
			outside: []op{rmOp("/c/d")},
			later:   dirOp("/c/d", "a,b"),
			commit:  "EAGAIN",
			after:   dirOp("/c/d", "ENOENT"),
		},
		{
			// Listed with DIRECTORY_PART: the transaction's pieces carry its own copy's
			// generation, so its second listing is whole and unchanged too.
			name:    "listed in parts, a child created outside",
			tx:      []op{dirOp(bigDir, bigNames())},
			outside: []op{writeOp(bigDir+"/zz", "o")},
			later:   dirOp(bigDir, bigNames()),
			commit:  "EAGAIN",
			after:   dirOp(bigDir, bigNames("zz")),
		},
		// Permissions.
		{
			name:    "permissions read, set outside",
			tx:      []op{getPermsOp("/c/p", "n0,r5")},
			outside: []op{setPermsOp("/c/p", "b0")},
			later:   getPermsOp("/c/p", "n0,r5"),
			commit:  "EAGAIN",
			after:   getPermsOp("/c/p", "b0"),
		},
		{
			name:    "permissions read, value written outside",
			tx:      []op{getPermsOp("/c/p", "n0,r5")},
			outside: []op{writeOp("/c/p", "o")},
			later:   readOp("/c/p", "0"),
			commit:  "EAGAIN",
			after:   readOp("/c/p", "o"),
		},
		// The transaction's own changes: visible to it, and checked like reads.
		{
			name:    "written, written outside",
			tx:      []op{writeOp("/c/x", "t")},
			outside: []op{readOp("/c/x", "0"), writeOp("/c/x", "o")},
			later:   readOp("/c/x", "t"),
			commit:  "EAGAIN",
			after:   readOp("/c/x", "o"),
		},
		{
			name:    "created, created outside",
			tx:      []op{writeOp("/c/new", "t")},
			outside: []op{readOp("/c/new", "ENOENT"), writeOp("/c/new", "o")},
			later:   readOp("/c/new", "t"),
			commit:  "EAGAIN",
			after:   readOp("/c/new", "o"),
		},
		{
			name:    "removed, written outside",
			tx:      []op{rmOp("/c/x")},
			outside: []op{readOp("/c/x", "0"), writeOp("/c/x", "o")},
			later:   readOp("/c/x", "ENOENT"),
			commit:  "EAGAIN",
			after:   readOp("/c/x", "o"),
		},
		{
			// Removing /c/d read every node below it.
			name:    "removed with its children, a child written outside",
			tx:      []op{rmOp("/c/d")},
			outside: []op{writeOp("/c/d/a", "o")},
			later:   dirOp("/c/d", "ENOENT"),
			commit:  "EAGAIN",
			after:   dirOp("/c/d", "a,b"),
		},
		{
			name:    "permissions set, written outside",
			tx:      []op{setPermsOp("/c/p", "w0")},
			outside: []op{getPermsOp("/c/p", "n0,r5"), writeOp("/c/p", "o")},
			later:   getPermsOp("/c/p", "w0"),
			commit:  "EAGAIN",
			after:   getPermsOp("/c/p", "n0,r5"),
		},
		{
			// Creating /c/d/new changes /c/d's child list.
			name:    "made a directory, a sibling created outside",
			tx:      []op{mkdirOp("/c/d/new")},
			outside: []op{writeOp("/c/d/other", "o")},
			later:   dirOp("/c/d", "a,b,new"),
			commit:  "EAGAIN",
			after:   dirOp("/c/d", "a,b,other"),
		},
		// Changes the transaction may ignore.
		{
			name:    "read, another node written outside",
			tx:      []op{readOp("/c/x", "0")},
			outside: []op{writeOp("/c/y", "o")},
			later:   readOp("/c/x", "0"),
			commit:  "OK",
			after:   readOp("/c/y", "o"),
		},
		{
			// Its first look is after the change: it sees the new value and took that
			// generation, as cxenstored does; the start of the transaction does not matter.
			name:    "written, then a node written outside before the transaction's first look",
			tx:      []op{writeOp("/c/x", "t")},
			outside: []op{writeOp("/c/y", "o")},
			later:   readOp("/c/y", "o"),
			commit:  "OK",
			after:   readOp("/c/x", "t"),
		},
		{
			// A child's value is the child's, not part of the parent's list.
			name:    "listed, a child's value written outside",
			tx:      []op{dirOp("/c/d", "a,b")},
			outside: []op{writeOp("/c/d/a", "o")},
			later:   dirOp("/c/d", "a,b"),
			commit:  "OK",
			after:   readOp("/c/d/a", "o"),
		},
		{
			name:    "written, a node in another subtree created outside",
			tx:      []op{writeOp("/c/d/a", "t")},
			outside: []op{writeOp("/elsewhere/n", "o")},
			later:   readOp("/c/d/a", "t"),
			commit:  "OK",
			after:   readOp("/c/d/a", "t"),
		},
		{
			// Reading is not a change.
			name:    "written, read outside",
			tx:      []op{writeOp("/c/x", "t"), rmOp("/c/y")},
			outside: []op{readOp("/c/x", "0"), dirOp("/c", "x,y,d,p,big"), getPermsOp("/c/x", "n0")},
			later:   dirOp("/c", "x,d,p,big"),
			commit:  "OK",
			after:   dirOp("/c", "x,d,p,big"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path := start(t, Config{})
			seed(t, s)
			ctx := testenv.Context(t, testDeadline)
			in, out := dialClient(t, ctx, path), dialClient(t, ctx, path)

			tx, err := in.Begin(ctx)
			require.NoError(t, err)
			for _, o := range tt.tx {
				o.check(t, ctx, "transaction", tx)
			}
			for _, o := range tt.outside {
				o.check(t, ctx, "outside", out)
			}
			tt.later.check(t, ctx, "transaction, later", tx)
			got := "OK"
			if err := tx.Commit(ctx); err != nil {
				got = xs.ErrnoName(err)
			}
			assert.Equal(t, tt.commit, got, "Commit")
			tt.after.check(t, ctx, "after the commit", out)
			assertConflicts(t, s, tt.commit)
		})
	}
}

// TestTransactionViewUpdate: Client.Update reruns a transaction whose first view went stale,
// and the rerun sees the outside change, so nothing is lost.
func TestTransactionViewUpdate(t *testing.T) {
	s, path := start(t, Config{})
	require.NoError(t, s.Write("/c/n", "1"))
	ctx := testenv.Context(t, testDeadline)
	c := dialClient(t, ctx, path)
	runs := 0
	err := c.Update(ctx, func(tx *xs.Tx) error {
		runs++
		v, err := tx.Read(ctx, "/c/n")
		if err != nil {
			return err
		}
		if runs == 1 {
			require.NoError(t, s.Write("/c/n", "10")) // someone else, between read and write
			again, err := tx.Read(ctx, "/c/n")
			require.NoError(t, err)
			assert.Equal(t, v, again, "a second read in the transaction")
		}
		return tx.Write(ctx, "/c/n", v+"+1")
	})
	require.NoError(t, err)
	assert.Equal(t, 2, runs, "Update runs")
	got, err := s.Read("/c/n")
	require.NoError(t, err)
	assert.Equal(t, "10+1", got, "the value after Update")
}

// dialClient connects the real client to the server at path.
func dialClient(t *testing.T, ctx context.Context, path string) *xs.Client {
	t.Helper()
	c, err := xs.Dial(ctx, path)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

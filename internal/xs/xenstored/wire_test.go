package xenstored

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/xs"
)

// step is one request on a connection and the reply it must get: the payload with NULs
// shown as '|' (want) or an errno name (wantErr). Steps run in order and build on each
// other.
type step struct {
	name    string
	op      xs.Op
	tx      uint32
	payload []byte
	want    string
	wantErr string
}

func runSteps(t *testing.T, r *raw, steps []step) {
	t.Helper()
	for _, st := range steps {
		m := r.call(st.op, st.tx, st.payload)
		if st.wantErr != "" {
			if assert.Equal(t, xs.OpError, m.Op, "%s: %s(%q) = %s %q, want error %s", st.name, st.op, st.payload, m.Op, m.Payload, st.wantErr) {
				assert.Equal(t, st.wantErr+"|", showPayload(m.Payload), "%s: %s(%q)", st.name, st.op, st.payload)
			}
			continue
		}
		if assert.Equal(t, st.op, m.Op, "%s: %s(%q) = %s %q", st.name, st.op, st.payload, m.Op, m.Payload) {
			assert.Equal(t, st.want, showPayload(m.Payload), "%s: %s(%q)", st.name, st.op, st.payload)
		}
	}
}

func TestNodeOps(t *testing.T) {
	_, path := start(t, Config{})
	r := dialRaw(t, path)
	runSteps(t, r, []step{
		{name: "seeded dom0 name", op: xs.OpRead, payload: z("/local/domain/0/name"), want: "Domain-0"},
		{name: "relative read is below /local/domain/0", op: xs.OpRead, payload: z("domid"), want: "0"},
		{name: "root lists seeded children", op: xs.OpDirectory, payload: z("/"), want: "tool|local|"},
		{name: "write creates parents", op: xs.OpWrite, payload: []byte("/a/b/c\x00v1"), want: "OK|"},
		{name: "read back", op: xs.OpRead, payload: z("/a/b/c"), want: "v1"},
		{name: "created parent is empty", op: xs.OpRead, payload: z("/a/b"), want: ""},
		{name: "directory", op: xs.OpDirectory, payload: z("/a"), want: "b|"},
		{name: "leaf has no children", op: xs.OpDirectory, payload: z("/a/b/c"), want: ""},
		{name: "value may hold NULs and no terminator", op: xs.OpWrite, payload: []byte("/a/bin\x00x\x00y"), want: "OK|"},
		{name: "binary value back", op: xs.OpRead, payload: z("/a/bin"), want: "x|y"},
		{name: "empty value", op: xs.OpWrite, payload: []byte("/a/empty\x00"), want: "OK|"},
		{name: "children in creation order", op: xs.OpDirectory, payload: z("/a"), want: "b|bin|empty|"},
		{name: "relative write", op: xs.OpWrite, payload: []byte("rel/x\x00r"), want: "OK|"},
		{name: "relative write is absolute below dom0", op: xs.OpRead, payload: z("/local/domain/0/rel/x"), want: "r"},
		{name: "mkdir new", op: xs.OpMkdir, payload: z("/m/n"), want: "OK|"},
		{name: "mkdir existing is fine", op: xs.OpMkdir, payload: z("/a/b/c"), want: "OK|"},
		{name: "mkdir keeps the value", op: xs.OpRead, payload: z("/a/b/c"), want: "v1"},
		{name: "read absent", op: xs.OpRead, payload: z("/nope"), wantErr: "ENOENT"},
		{name: "directory absent", op: xs.OpDirectory, payload: z("/nope"), wantErr: "ENOENT"},
		{name: "rm absent with parent", op: xs.OpRm, payload: z("/a/none"), want: "OK|"},
		{name: "rm absent without parent", op: xs.OpRm, payload: z("/nope/none"), wantErr: "ENOENT"},
		{name: "rm root", op: xs.OpRm, payload: z("/"), wantErr: "EINVAL"},
		{name: "rm subtree", op: xs.OpRm, payload: z("/a/b"), want: "OK|"},
		{name: "rm removed the leaf", op: xs.OpRead, payload: z("/a/b/c"), wantErr: "ENOENT"},
		{name: "rm updated the parent", op: xs.OpDirectory, payload: z("/a"), want: "bin|empty|"},
		{name: "double slash", op: xs.OpRead, payload: z("/a//b"), wantErr: "EINVAL"},
		{name: "trailing slash", op: xs.OpWrite, payload: []byte("/a/\x00v"), wantErr: "EINVAL"},
		{name: "bad character", op: xs.OpWrite, payload: []byte("/a b\x00v"), wantErr: "EINVAL"},
		{name: "empty path", op: xs.OpRead, payload: z(""), wantErr: "EINVAL"},
		{name: "special name is no node", op: xs.OpRead, payload: z("@releaseDomain"), wantErr: "EINVAL"},
		{name: "path over 3072 bytes", op: xs.OpRead, payload: z("/" + strings.Repeat("x", 3072)), wantErr: "EINVAL"},
		{name: "read without NUL", op: xs.OpRead, payload: []byte("/a/bin"), wantErr: "EINVAL"},
		{name: "read with two strings", op: xs.OpRead, payload: z("/a/bin", "x"), wantErr: "EINVAL"},
		{name: "read empty payload", op: xs.OpRead, payload: nil, wantErr: "EINVAL"},
		{name: "write without NUL", op: xs.OpWrite, payload: []byte("/a/bin"), wantErr: "EINVAL"},
		{name: "rm without NUL", op: xs.OpRm, payload: []byte("/a"), wantErr: "EINVAL"},
		{name: "set perms", op: xs.OpSetPerms, payload: z("/a", "n0", "r5"), want: "OK|"},
		{name: "get perms", op: xs.OpGetPerms, payload: z("/a"), want: "n0|r5|"},
		{name: "new nodes inherit the parent's perms", op: xs.OpWrite, payload: []byte("/a/new/deep\x00d"), want: "OK|"},
		{name: "inherited on the new parent", op: xs.OpGetPerms, payload: z("/a/new"), want: "n0|r5|"},
		{name: "inherited on the new leaf", op: xs.OpGetPerms, payload: z("/a/new/deep"), want: "n0|r5|"},
		{name: "existing nodes keep theirs", op: xs.OpGetPerms, payload: z("/a/bin"), want: "n0|"},
		{name: "set perms ignores bytes after the last NUL", op: xs.OpSetPerms, payload: []byte("/a/bin\x00b3\x00r"), want: "OK|"},
		{name: "get those perms", op: xs.OpGetPerms, payload: z("/a/bin"), want: "b3|"},
		{name: "set perms bad letter", op: xs.OpSetPerms, payload: z("/a", "x5"), wantErr: "EINVAL"},
		{name: "set perms bad domid", op: xs.OpSetPerms, payload: z("/a", "rX"), wantErr: "EINVAL"},
		{name: "set perms none given", op: xs.OpSetPerms, payload: z("/a"), wantErr: "EINVAL"},
		{name: "set perms absent", op: xs.OpSetPerms, payload: z("/nope", "n0"), wantErr: "ENOENT"},
		{name: "get perms absent", op: xs.OpGetPerms, payload: z("/nope"), wantErr: "ENOENT"},
		{name: "get perms of a special node", op: xs.OpGetPerms, payload: z("@releaseDomain"), want: "n0|"},
		{name: "get perms of an unknown special", op: xs.OpGetPerms, payload: z("@other"), wantErr: "ENOENT"},
		{name: "domain path", op: xs.OpGetDomainPath, payload: z("7"), want: "/local/domain/7|"},
		{name: "domain path bad domid", op: xs.OpGetDomainPath, payload: z("x"), wantErr: "EINVAL"},
		{name: "dom0 is introduced", op: xs.OpIsDomainIntroduced, payload: z("0"), want: "T|"},
		{name: "others are not", op: xs.OpIsDomainIntroduced, payload: z("9"), want: "F|"},
		{name: "no features", op: xs.OpGetFeature, payload: nil, want: "0|"},
		{name: "control check", op: xs.OpControl, payload: z("check"), want: "OK|"},
		{name: "control unknown", op: xs.OpControl, payload: z("live-update"), wantErr: "EINVAL"},
		{name: "unknown type", op: xs.Op(99), payload: z("x"), wantErr: "ENOSYS"},
		{name: "introduce is not supported", op: xs.OpIntroduce, payload: z("1", "2", "3"), wantErr: "ENOSYS"},
		{name: "a client must not send WATCH_EVENT", op: xs.OpWatchEvent, payload: z("/a", "t"), wantErr: "ENOSYS"},
		{name: "unknown transaction", op: xs.OpRead, tx: 42, payload: z("/a"), wantErr: "ENOENT"},
		{name: "end outside a transaction", op: xs.OpTransactionEnd, payload: z("T"), wantErr: "ENOENT"},
		{name: "reset watches", op: xs.OpResetWatches, payload: z(""), want: "OK|"},
	})
}

func TestDirectoryPart(t *testing.T) {
	s, path := start(t, Config{})
	r := dialRaw(t, path)
	// 300 children of 20 bytes: 6300 bytes of child list, more than one frame holds.
	var want []string
	for i := range 300 {
		name := fmt.Sprintf("child-%014d", i)
		want = append(want, name)
		require.NoError(t, s.Write("/big/"+name, "v"))
	}
	assert.Equal(t, "E2BIG", r.fail(xs.OpDirectory, 0, z("/big")), "DIRECTORY of a list over 4096 bytes")

	var got []string
	var gen string
	off := 0
	for range 10 {
		m := r.call(xs.OpDirectoryPart, 0, z("/big", fmt.Sprint(off)))
		require.Equal(t, xs.OpDirectoryPart, m.Op, "DIRECTORY_PART(/big, %d) = %q", off, m.Payload)
		require.LessOrEqual(t, len(m.Payload), xs.PayloadMax)
		parts := strings.Split(string(m.Payload), "\x00")
		// <gencnt>|<child>|*, and one more empty string when the list is complete.
		require.GreaterOrEqual(t, len(parts), 3, "payload %q", m.Payload)
		if gen == "" {
			gen = parts[0]
		}
		require.Equal(t, gen, parts[0], "generation changed without a change")
		children := parts[1 : len(parts)-1]
		done := children[len(children)-1] == ""
		if done {
			children = children[:len(children)-1]
		}
		for _, c := range children {
			off += len(c) + 1
		}
		got = append(got, children...)
		if done {
			break
		}
	}
	assert.Equal(t, want, got, "children read with DIRECTORY_PART")

	m := r.call(xs.OpDirectoryPart, 0, z("/big", "100000"))
	assert.Equal(t, gen+"||", showPayload(m.Payload), "DIRECTORY_PART past the end")
	assert.Equal(t, "EINVAL", r.fail(xs.OpDirectoryPart, 0, z("/big")), "DIRECTORY_PART without offset")
	assert.Equal(t, "EINVAL", r.fail(xs.OpDirectoryPart, 0, []byte("/big\x000")), "DIRECTORY_PART offset without NUL")

	require.NoError(t, s.Write("/big/zz", "v"))
	m = r.call(xs.OpDirectoryPart, 0, z("/big", "0"))
	assert.NotEqual(t, gen, strings.Split(string(m.Payload), "\x00")[0], "generation after a new child")
}

func TestInProcessHelpers(t *testing.T) {
	s, path := start(t, Config{})
	r := dialRaw(t, path)
	r.ok(xs.OpWatch, 0, z("/sim", "tok"))

	require.NoError(t, s.Write("/sim/backend/state", "1"))
	got, err := s.Read("/sim/backend/state")
	require.NoError(t, err)
	assert.Equal(t, "1", got, "Read after Write")
	assert.Equal(t, "1", r.ok(xs.OpRead, 0, z("/sim/backend/state")), "wire READ after in-process Write")

	require.NoError(t, s.Mkdir("/sim/dir"))
	d, err := s.Directory("/sim")
	require.NoError(t, err)
	assert.Equal(t, []string{"backend", "dir"}, d, "Directory(/sim)")

	perms := []xs.Perm{{DomID: 0, Access: xs.AccessNone}, {DomID: 3, Access: xs.AccessRead}}
	require.NoError(t, s.SetPerms("/sim/backend", perms))
	gp, err := s.GetPerms("/sim/backend")
	require.NoError(t, err)
	assert.Equal(t, perms, gp, "GetPerms after SetPerms")
	assert.Equal(t, "n0|r3|", showPayload([]byte(r.ok(xs.OpGetPerms, 0, z("/sim/backend")))))

	require.NoError(t, s.Rm("/sim/backend"))
	_, err = s.Read("/sim/backend/state")
	assert.ErrorIs(t, err, xs.ErrNotFound, "Read after Rm")
	var xe *xs.Error
	require.ErrorAs(t, err, &xe)
	assert.Equal(t, xs.OpRead, xe.Op)

	assert.ErrorIs(t, s.Rm("/nope/deeper"), xs.ErrNotFound, "Rm without parent")
	assert.ErrorIs(t, s.Write("/bad//path", "v"), xs.ErrInvalid, "Write of a bad path")
	assert.ErrorIs(t, s.SetPerms("/sim", nil), xs.ErrInvalid, "SetPerms with no perms")

	r.sync()
	assert.Equal(t, []string{
		"/sim|tok|",               // initial
		"/sim/backend/state|tok|", // Write
		"/sim/dir|tok|",           // Mkdir
		"/sim/backend|tok|",       // SetPerms
		"/sim/backend|tok|",       // Rm
	}, r.takeEvents(), "events from in-process changes")

	st := s.Stats()
	assert.Equal(t, uint64(1), st.Connections, "Stats.Connections")
	assert.Equal(t, 1, st.OpenConnections, "Stats.OpenConnections")
	assert.Equal(t, uint64(5), st.WatchEvents, "Stats.WatchEvents")
	assert.Positive(t, st.Requests, "Stats.Requests")
}

package qmptest

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
)

// addFDInfo is add-fd's reply.
type addFDInfo struct {
	FdsetID int64 `json:"fdset-id"`
	FD      int64 `json:"fd"`
}

func addFD(t *testing.T, c *rawClient, f *os.File, args map[string]any) addFDInfo {
	t.Helper()
	r, err := c.execFile("add-fd", args, f)
	require.NoError(t, err)
	require.Nil(t, r.Error, "add-fd: %s", r.Line)
	var info addFDInfo
	require.NoError(t, json.Unmarshal(r.Return, &info))
	return info
}

// query runs command, which takes no arguments, and decodes its return value.
func query[T any](t *testing.T, c *rawClient, command string) T {
	t.Helper()
	r := c.exec(command, nil)
	require.Nil(t, r.Error, r.Line)
	var v T
	require.NoError(t, json.Unmarshal(r.Return, &v))
	return v
}

func queryFdsets(t *testing.T, c *rawClient) []qmp.FdsetInfo {
	t.Helper()
	return query[[]qmp.FdsetInfo](t, c, "query-fdsets")
}

func queryBlock(t *testing.T, c *rawClient) []qmp.BlockInfo {
	t.Helper()
	return query[[]qmp.BlockInfo](t, c, "query-block")
}

func wantOK(t *testing.T, r reply) {
	t.Helper()
	require.Nil(t, r.Error, "reply %s", r.Line)
}

func wantErr(t *testing.T, r reply, class, desc string) {
	t.Helper()
	require.NotNil(t, r.Error, "reply %s, want an error", r.Line)
	assert.Equal(t, class, r.Error.Class, "class in %s", r.Line)
	assert.Equal(t, desc, r.Error.Desc, "desc in %s", r.Line)
}

// TestMediumChangeSequence drives the stubdom medium change of DESIGN.md end to end: the
// stubdom agent publishes /dev/xvdc in an fd set on its own monitor, cdswap (on libxl's
// monitor) puts it in with host_device, and later swaps it for a new one.
func TestMediumChangeSequence(t *testing.T) {
	dir := testenv.SocketDir(t)
	oldISO := writeImage(t, dir, "old.iso", 1<<20)
	newISO := writeImage(t, dir, "new.iso", 2<<20)
	s := New(Options{})
	t.Cleanup(func() { s.Close() })
	libxlSock, agentSock := filepath.Join(dir, "qmp-libxl-7"), filepath.Join(dir, "cdrom.qmp")
	require.NoError(t, s.Listen(libxlSock))
	require.NoError(t, s.Listen(agentSock))
	ctx := testCtx(t)

	cdswap := negotiate(ctx, t, libxlSock)
	agent := negotiate(ctx, t, agentSock)

	// The agent adds the old medium, read-only, tagged with the vbd's devid.
	old := openFile(t, oldISO, os.O_RDONLY)
	info := addFD(t, agent, old, map[string]any{"opaque": "stub-devid:5632"})
	assert.Equal(t, int64(0), info.FdsetID, "first free fdset-id")
	require.NoError(t, agent.uc.Close())

	// cdswap finds the set by opaque and inserts it.
	sets := queryFdsets(t, cdswap)
	require.Len(t, sets, 1, "the set outlives the agent's connection while cdswap is connected")
	require.Equal(t, []qmp.FdsetFD{{FD: info.FD, Opaque: "stub-devid:5632"}}, sets[0].FDs)
	wantOK(t, cdswap.exec("blockdev-change-medium", map[string]any{
		"id": "ide-5632", "filename": "/dev/fdset/0", "format": "host_device"}))
	assert.Equal(t, []bool{true, false}, trayMoves(cdswap.takeEvents(), "ide-5632"))
	bi := queryBlock(t, cdswap)
	require.Len(t, bi, 1)
	require.NotNil(t, bi[0].Inserted)
	assert.Equal(t, "/dev/fdset/0", bi[0].Inserted.File)
	assert.Equal(t, "host_device", bi[0].Inserted.Drv)
	assert.True(t, bi[0].Inserted.RO)
	st, _ := s.Block("ide-5632")
	assert.Equal(t, oldISO, st.Path, "the fake holds a dup of the agent's descriptor")

	// The swap: eject, release the old set, the agent publishes the new medium, change.
	wantOK(t, cdswap.exec("eject", map[string]any{"id": "ide-5632"}))
	assert.Equal(t, []bool{true}, trayMoves(cdswap.takeEvents(), "ide-5632"))
	wantOK(t, cdswap.exec("remove-fd", map[string]any{"fdset-id": 0}))
	assert.Empty(t, queryFdsets(t, cdswap))
	assert.NotContains(t, s.HeldFiles(), oldISO, "the old medium's descriptors are all closed")

	agent = negotiate(ctx, t, agentSock)
	info = addFD(t, agent, openFile(t, newISO, os.O_RDONLY), map[string]any{"opaque": "stub-devid:5632"})
	wantOK(t, cdswap.exec("blockdev-change-medium", map[string]any{
		"id": "ide-5632", "filename": "/dev/fdset/0", "format": "host_device"}))
	assert.Equal(t, []bool{false}, trayMoves(cdswap.takeEvents(), "ide-5632"), "the tray was open already")
	st, _ = s.Block("ide-5632")
	assert.Equal(t, BlockState{Inserted: true, File: "/dev/fdset/0", Format: "host_device", Path: newISO,
		RO: true, FromFdset: true, FdsetID: 0}, st)

	// The agent saw the same events: they go to every negotiated connection.
	ev := agent.waitEvent("DEVICE_TRAY_MOVED")
	assert.Equal(t, map[string]any{"device": "ide-5632", "id": "ide-5632", "tray-open": false}, ev["data"])
	assert.Equal(t, []string{"qmp_capabilities", "qmp_capabilities", "add-fd", "query-fdsets",
		"blockdev-change-medium", "query-block", "eject", "remove-fd", "query-fdsets",
		"qmp_capabilities", "add-fd", "blockdev-change-medium"}, s.Commands())
}

// TestMonitorsShareFdsets: what one monitor adds, the other lists and removes.
func TestMonitorsShareFdsets(t *testing.T) {
	dir := testenv.SocketDir(t)
	iso := writeImage(t, dir, "a.iso", 4096)
	s := New(Options{})
	t.Cleanup(func() { s.Close() })
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	require.NoError(t, s.Listen(a))
	require.NoError(t, s.Listen(b))
	ctx := testCtx(t)
	ca, cb := negotiate(ctx, t, a), negotiate(ctx, t, b)

	i1 := addFD(t, cb, openFile(t, iso, os.O_RDONLY), map[string]any{"fdset-id": 7, "opaque": "x"})
	i2 := addFD(t, cb, openFile(t, iso, os.O_RDONLY), map[string]any{"fdset-id": 7})
	i3 := addFD(t, cb, openFile(t, iso, os.O_RDONLY), nil)
	assert.Equal(t, int64(0), i3.FdsetID)
	want := []qmp.FdsetInfo{
		{FdsetID: 7, FDs: []qmp.FdsetFD{{FD: i1.FD, Opaque: "x"}, {FD: i2.FD}}},
		{FdsetID: 0, FDs: []qmp.FdsetFD{{FD: i3.FD}}},
	}
	assert.Equal(t, want, queryFdsets(t, ca), "monitor a lists what b added, highest id first")
	assert.Equal(t, want, s.Fdsets())

	wantOK(t, ca.exec("remove-fd", map[string]any{"fdset-id": 7, "fd": i1.FD}))
	assert.Equal(t, []qmp.FdsetInfo{
		{FdsetID: 7, FDs: []qmp.FdsetFD{{FD: i2.FD}}},
		{FdsetID: 0, FDs: []qmp.FdsetFD{{FD: i3.FD}}},
	}, queryFdsets(t, cb))
}

// TestAddFD covers the descriptor bookkeeping of add-fd.
func TestAddFD(t *testing.T) {
	dir := testenv.SocketDir(t)
	iso := writeImage(t, dir, "a.iso", 4096)
	s, path := Start(t, Options{})
	c := negotiate(testCtx(t), t, path)

	wantErr(t, c.exec("add-fd", nil), "GenericError", "No file descriptor supplied via SCM_RIGHTS")
	r, err := c.execFile("add-fd", map[string]any{"fdset-id": -1}, openFile(t, iso, os.O_RDONLY))
	require.NoError(t, err)
	wantErr(t, r, "GenericError", "Parameter 'fdset-id' expects a non-negative value")
	assert.Empty(t, s.HeldFiles(), "a refused descriptor is closed")

	// First free ids, explicit ids, and an opaque that is empty but present.
	for i, want := range []int64{0, 1, 2} {
		info := addFD(t, c, openFile(t, iso, os.O_RDONLY), nil)
		assert.Equal(t, want, info.FdsetID, "add-fd #%d", i)
	}
	wantOK(t, c.exec("remove-fd", map[string]any{"fdset-id": 1}))
	assert.Equal(t, int64(1), addFD(t, c, openFile(t, iso, os.O_RDONLY), nil).FdsetID, "the gap is reused")
	assert.Equal(t, int64(3), addFD(t, c, openFile(t, iso, os.O_RDONLY), nil).FdsetID)
	info := addFD(t, c, openFile(t, iso, os.O_RDONLY), map[string]any{"fdset-id": 9, "opaque": ""})
	r = c.exec("query-fdsets", nil)
	assert.Contains(t, r.Line, `{"fds": [{"fd": `+itoa(info.FD)+`, "opaque": ""}], "fdset-id": 9}`)

	// A descriptor that came with an earlier command is still there for add-fd.
	r, err = c.execFile("query-status", nil, openFile(t, iso, os.O_RDONLY))
	require.NoError(t, err)
	wantOK(t, r)
	assert.Equal(t, int64(4), addFD(t, c, nil, nil).FdsetID)
	wantErr(t, c.exec("add-fd", nil), "GenericError", "No file descriptor supplied via SCM_RIGHTS")
	assert.Len(t, s.HeldFiles(), 6, "sets 0, 1, 2, 3, 4 and 9")
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// TestFdsetAccessMode: /dev/fdset/N dups only a member whose access mode matches the
// drive's (monitor_fdset_dup_fd_add), O_RDONLY for a readonly=on cdrom.
func TestFdsetAccessMode(t *testing.T) {
	dir := testenv.SocketDir(t)
	iso := writeImage(t, dir, "a.iso", 4096)
	s, path := Start(t, Options{})
	c := negotiate(testCtx(t), t, path)

	rw := addFD(t, c, openFile(t, iso, os.O_RDWR), map[string]any{"fdset-id": 1})
	wantErr(t, c.exec("blockdev-change-medium", map[string]any{"id": "ide-5632", "filename": "/dev/fdset/1", "format": "raw"}),
		"GenericError", "Could not dup FD for /dev/fdset/1 flags 0: Permission denied")
	assert.Empty(t, c.takeEvents(), "a failed open does not touch the tray")

	// read-only-mode read-write wants O_RDWR, and the drive keeps that mode for "retain".
	wantOK(t, c.exec("blockdev-change-medium", map[string]any{"id": "ide-5632", "filename": "/dev/fdset/1",
		"format": "raw", "read-only-mode": "read-write"}))
	st, _ := s.Block("ide-5632")
	assert.False(t, st.RO)
	wantErr(t, c.exec("blockdev-change-medium", map[string]any{"id": "ide-5632", "filename": "/dev/fdset/5", "format": "raw"}),
		"GenericError", "Could not dup FD for /dev/fdset/5 flags 2: No such file or directory")

	// With both modes in a set, the read-only member is picked.
	ro := addFD(t, c, openFile(t, iso, os.O_RDONLY), map[string]any{"fdset-id": 1})
	wantOK(t, c.exec("blockdev-change-medium", map[string]any{"id": "ide-5632", "filename": "/dev/fdset/1",
		"format": "raw", "read-only-mode": "read-only"}))
	st, _ = s.Block("ide-5632")
	assert.True(t, st.RO)
	assert.NotEqual(t, rw.FD, ro.FD)
}

// TestFdsetLifetime checks QEMU 7.2's rules for when remove-fd really closes a member.
func TestFdsetLifetime(t *testing.T) {
	dir := testenv.SocketDir(t)
	iso := writeImage(t, dir, "a.iso", 4096)
	other := writeImage(t, dir, "b.iso", 4096)
	s, path := Start(t, Options{})
	c := negotiate(testCtx(t), t, path)

	// In use by the medium: the set stays, empty, until the medium goes.
	addFD(t, c, openFile(t, iso, os.O_RDONLY), map[string]any{"opaque": "stub-devid:5632"})
	wantOK(t, c.exec("blockdev-change-medium", map[string]any{"id": "ide-5632", "filename": "/dev/fdset/0", "format": "raw"}))
	wantOK(t, c.exec("remove-fd", map[string]any{"fdset-id": 0}))
	assert.Contains(t, c.exec("query-fdsets", nil).Line, `{"return": [{"fds": [], "fdset-id": 0}]`)
	assert.Equal(t, []string{iso}, s.HeldFiles(), "only the medium's dup is left")
	wantOK(t, c.exec("remove-fd", map[string]any{"fdset-id": 0}))
	wantOK(t, c.exec("eject", map[string]any{"id": "ide-5632"}))
	assert.Empty(t, queryFdsets(t, c))
	assert.Empty(t, s.HeldFiles())

	// While paused, remove-fd only marks: the set stays listed, even after cont, until the
	// next cleanup.
	info := addFD(t, c, openFile(t, other, os.O_RDONLY), nil)
	c.takeEvents()
	wantOK(t, c.exec("stop", nil))
	wantOK(t, c.exec("stop", nil))
	assert.Len(t, c.takeEvents(), 1, "one STOP: stopping a paused VM is a no-op")
	r := c.exec("query-status", nil)
	assert.Contains(t, r.Line, `{"return": {"status": "paused", "singlestep": false, "running": false}`)
	wantOK(t, c.exec("remove-fd", map[string]any{"fdset-id": info.FdsetID}))
	assert.Len(t, queryFdsets(t, c), 1)
	wantOK(t, c.exec("cont", nil))
	assert.Equal(t, "RESUME", c.waitEvent("RESUME")["event"])
	assert.Len(t, queryFdsets(t, c), 1, "cont does not clean up")
	assert.Equal(t, []string{other}, s.HeldFiles())
	wantOK(t, c.exec("remove-fd", map[string]any{"fdset-id": info.FdsetID}))
	assert.Empty(t, queryFdsets(t, c))
	assert.Empty(t, s.HeldFiles())

	// A named fd that is not in an existing set.
	info = addFD(t, c, openFile(t, other, os.O_RDONLY), nil)
	wantErr(t, c.exec("remove-fd", map[string]any{"fdset-id": info.FdsetID, "fd": info.FD + 100}), "GenericError",
		"File descriptor named 'fdset-id:"+itoa(info.FdsetID)+", fd:"+itoa(info.FD+100)+"' not found")
}

// TestFdsetDisconnect: QEMU before 9.1 closes the members of sets not in use when the last
// monitor connection goes (while running); 9.1 keeps them.
func TestFdsetDisconnect(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantSet bool
	}{
		{"7.2 running", Options{}, false},
		{"7.2 paused", Options{Paused: true}, true},
		{"9.1 running", Options{Version: qmp.Version{Major: 9, Minor: 1}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := testenv.SocketDir(t)
			iso := writeImage(t, dir, "a.iso", 4096)
			inUse := writeImage(t, dir, "b.iso", 4096)
			s, path := Start(t, tt.opts)
			ctx := testCtx(t)
			c := negotiate(ctx, t, path)
			addFD(t, c, openFile(t, iso, os.O_RDONLY), map[string]any{"fdset-id": 1})
			addFD(t, c, openFile(t, inUse, os.O_RDONLY), map[string]any{"fdset-id": 2})
			wantOK(t, c.exec("blockdev-change-medium", map[string]any{"id": "ide-5632", "filename": "/dev/fdset/2", "format": "raw"}))
			// DropAfter makes the disconnect's cleanup happen before the client sees EOF.
			s.DropAfter("query-status")
			wantOK(t, c.exec("query-status", nil))
			c.expectEOF()

			c = negotiate(ctx, t, path)
			var ids []int64
			for _, set := range queryFdsets(t, c) {
				ids = append(ids, set.FdsetID)
			}
			want := []int64{2}
			if tt.wantSet {
				want = []int64{2, 1}
			}
			assert.Equal(t, want, ids, "a set in use by the medium always stays")
		})
	}
}

// TestFdsetRemove91 checks QEMU ≥ 9.1's remove-fd, which closes at once even while paused.
func TestFdsetRemove91(t *testing.T) {
	dir := testenv.SocketDir(t)
	iso := writeImage(t, dir, "a.iso", 4096)
	s, path := Start(t, Options{Version: qmp.Version{Major: 9, Minor: 2}, Paused: true})
	c := negotiate(testCtx(t), t, path)
	addFD(t, c, openFile(t, iso, os.O_RDONLY), nil)
	wantOK(t, c.exec("remove-fd", map[string]any{"fdset-id": 0}))
	assert.Empty(t, queryFdsets(t, c))
	assert.Empty(t, s.HeldFiles())
}

// TestLockedTray covers a guest-locked tray: refused without force, the simulated guest
// opening it later, and force.
func TestLockedTray(t *testing.T) {
	dir := testenv.SocketDir(t)
	oldISO := writeImage(t, dir, "old.iso", 4096)
	newISO := writeImage(t, dir, "new.iso", 4096)
	const locked = "Device 'ide-5632' is locked and force was not specified, wait for tray to open and try again"

	t.Run("guest unlocks", func(t *testing.T) {
		s, path := Start(t, Options{GuestUnlocksOnEject: time.Millisecond})
		require.NoError(t, s.Insert("ide-5632", oldISO, "raw"))
		s.LockTray("ide-5632", true)
		c := negotiate(testCtx(t), t, path)
		wantErr(t, c.exec("eject", map[string]any{"id": "ide-5632"}), "GenericError", locked)
		ev := c.waitEvent("DEVICE_TRAY_MOVED")
		assert.Equal(t, map[string]any{"device": "ide-5632", "id": "ide-5632", "tray-open": true}, ev["data"])
		st, _ := s.Block("ide-5632")
		assert.Equal(t, BlockState{TrayOpen: true, Inserted: true, File: oldISO, Format: "raw", Path: oldISO, RO: true}, st,
			"the guest opened the tray; the medium is still in")
		wantOK(t, c.exec("eject", map[string]any{"id": "ide-5632"}))
		assert.Empty(t, c.takeEvents(), "the tray is open already")
		st, _ = s.Block("ide-5632")
		assert.False(t, st.Inserted)
	})

	t.Run("guest never answers", func(t *testing.T) {
		s, path := Start(t, Options{})
		require.NoError(t, s.Insert("ide-5632", oldISO, ""))
		s.LockTray("ide-5632", true)
		c := negotiate(testCtx(t), t, path)
		wantErr(t, c.exec("eject", map[string]any{"device": "ide-5632"}), "GenericError", locked)
		// The new medium is opened, then let go when the locked tray refuses.
		wantErr(t, c.exec("blockdev-change-medium", map[string]any{"id": "ide-5632", "filename": newISO}), "GenericError", locked)
		assert.Equal(t, []string{oldISO}, s.HeldFiles())
		// An open error comes before the lock.
		wantErr(t, c.exec("blockdev-change-medium", map[string]any{"id": "ide-5632", "filename": dir + "/none"}),
			"GenericError", "Could not open '"+dir+"/none': No such file or directory")
		assert.Empty(t, c.takeEvents())
		bi := queryBlock(t, c)
		assert.True(t, bi[0].Locked)

		// force unlocks and changes.
		wantOK(t, c.exec("blockdev-change-medium", map[string]any{"id": "ide-5632", "filename": newISO, "force": true}))
		assert.Equal(t, []bool{true, false}, trayMoves(c.takeEvents(), "ide-5632"))
		st, _ := s.Block("ide-5632")
		assert.Equal(t, BlockState{Inserted: true, File: newISO, Format: "raw", Path: newISO, RO: true}, st)
		assert.Equal(t, []string{newISO}, s.HeldFiles())

		s.LockTray("ide-5632", true)
		wantOK(t, c.exec("eject", map[string]any{"id": "ide-5632", "force": true}))
		st, _ = s.Block("ide-5632")
		assert.Equal(t, BlockState{TrayOpen: true}, st, "a forced eject unlocks, opens and empties")
	})
}

// TestFaults covers FailNext, DropAfter, DropBeforeReply and SetRunning.
func TestFaults(t *testing.T) {
	dir := testenv.SocketDir(t)
	iso := writeImage(t, dir, "a.iso", 4096)
	s, path := Start(t, Options{})
	ctx := testCtx(t)

	s.FailNext("qmp_capabilities", "GenericError", "not now")
	c, _ := dialRaw(ctx, t, path)
	wantErr(t, c.exec("qmp_capabilities", nil), "GenericError", "not now")
	wantErr(t, c.exec("query-status", nil), "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")
	wantOK(t, c.exec("qmp_capabilities", nil))

	s.FailNext("eject", "DeviceNotActive", "first")
	s.FailNext("eject", "GenericError", "second")
	s.FailNext("x-unknown", "GenericError", "faked")
	require.NoError(t, s.Insert("ide-5632", iso, "raw"))
	wantErr(t, c.exec("eject", map[string]any{"id": "ide-5632"}), "DeviceNotActive", "first")
	wantErr(t, c.exec("eject", map[string]any{"id": "nope"}), "GenericError", "second")
	st, _ := s.Block("ide-5632")
	assert.True(t, st.Inserted, "a failed call has no effect")
	wantErr(t, c.exec("x-unknown", nil), "GenericError", "faked")
	wantErr(t, c.exec("x-unknown", nil), "CommandNotFound", "The command x-unknown has not been found")

	// DropAfter: the reply arrives, the effect happened, then EOF.
	s.DropAfter("eject")
	wantOK(t, c.exec("eject", map[string]any{"id": "ide-5632"}))
	c.expectEOF()
	st, _ = s.Block("ide-5632")
	assert.False(t, st.Inserted)

	// DropBeforeReply: the effect happened, no reply.
	c = negotiate(ctx, t, path)
	s.DropBeforeReply("blockdev-change-medium")
	_, err := c.execFile("blockdev-change-medium", map[string]any{"id": "ide-5632", "filename": iso}, nil)
	require.Error(t, err, "no reply")
	st, _ = s.Block("ide-5632")
	assert.True(t, st.Inserted)

	// SetRunning, seen by query-status and as events.
	c = negotiate(ctx, t, path)
	s.SetRunning(false)
	assert.Equal(t, "STOP", c.waitEvent("STOP")["event"])
	assert.Contains(t, c.exec("query-status", nil).Line, `"status": "paused"`)
	s.SetRunning(true)
	assert.Equal(t, "RESUME", c.waitEvent("RESUME")["event"])
	assert.Contains(t, c.exec("query-status", nil).Line, `"status": "running"`)
}

// TestOnCall: the hook sees each dispatched command with its drive and its error, before
// the client gets the reply.
func TestOnCall(t *testing.T) {
	dir := testenv.SocketDir(t)
	iso := writeImage(t, dir, "a.iso", 4096)
	var mu sync.Mutex // guards calls
	var calls []Call
	s, path := Start(t, Options{OnCall: func(c Call) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, c)
	}})
	require.NoError(t, s.Insert("ide-5632", iso, "raw"))
	c := negotiate(testCtx(t), t, path)
	seen := func() []Call {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(calls)
	}
	wantOK(t, c.exec("eject", map[string]any{"id": "ide-5632"}))
	assert.Equal(t, []Call{{Command: "eject", Drive: "ide-5632"}}, seen()[1:], "seen before the reply came")
	wantOK(t, c.exec("blockdev-change-medium", map[string]any{"device": "ide-5632", "filename": iso}))
	wantErr(t, c.exec("blockdev-change-medium", map[string]any{"id": "nope", "filename": iso}), "DeviceNotFound", "Device 'nope' not found")
	got := seen()
	require.Len(t, got, 4)
	assert.Equal(t, Call{Command: "qmp_capabilities"}, got[0])
	assert.Equal(t, Call{Command: "blockdev-change-medium", Drive: "ide-5632"}, got[2])
	assert.Equal(t, "blockdev-change-medium", got[3].Command)
	assert.Equal(t, "nope", got[3].Drive)
	assert.EqualError(t, got[3].Err, "Device 'nope' not found")
}

// TestDelay: a delayed command holds up its own connection only, and Close does not wait
// for it.
func TestDelay(t *testing.T) {
	dir := testenv.SocketDir(t)
	s := New(Options{})
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	require.NoError(t, s.Listen(a))
	require.NoError(t, s.Listen(b))
	ctx := testCtx(t)
	ca, cb := negotiate(ctx, t, a), negotiate(ctx, t, b)

	s.Delay("query-version", time.Hour)
	require.NoError(t, ca.write([]byte(`{"execute":"query-version","id":1}`+"\r\n"), nil))
	wantOK(t, cb.exec("query-status", nil))
	require.Eventually(t, func() bool { return slices.Contains(s.Commands(), "query-version") },
		10*time.Second, time.Millisecond, "the delayed command arrived")
	require.NoError(t, s.Close(), "Close ends the wait")
	ca.expectEOF()

	// Delay 0 removes a delay.
	s2, path := Start(t, Options{})
	s2.Delay("query-status", time.Hour)
	s2.Delay("query-status", 0)
	wantOK(t, negotiate(ctx, t, path).exec("query-status", nil))
}

// TestOneConnectionPerMonitor: like a chardev socket server, a monitor serves one client;
// the next one is greeted when the first has gone.
func TestOneConnectionPerMonitor(t *testing.T) {
	s, path := Start(t, Options{})
	ctx := testCtx(t)
	first := negotiate(ctx, t, path)
	conn, err := net.Dial("unix", path)
	require.NoError(t, err)
	second := conn.(*net.UnixConn)
	t.Cleanup(func() { second.Close() })
	wantOK(t, first.exec("query-status", nil)) // the monitor is busy with first
	assert.Equal(t, 1, s.Connections(), "the second client waits in the listen backlog")
	require.NoError(t, first.uc.Close())
	c := &rawClient{t: t, ctx: ctx, uc: second, br: bufio.NewReader(second)}
	greeting, err := c.readLine()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(greeting, `{"QMP": `), "greeting %q", greeting)
}

// TestCloseLeavesNothing: after Close no goroutine of the fake is left and every descriptor
// it held is closed, even with clients connected, a delayed command and a pending guest.
func TestCloseLeavesNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := testenv.SocketDir(t)
	iso := writeImage(t, dir, "a.iso", 4096)
	s := New(Options{GuestUnlocksOnEject: time.Hour, CDROMs: []string{"ide-5632", "ide-5696"}})
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	require.NoError(t, s.Listen(a))
	require.NoError(t, s.Listen(b))
	ctx := testCtx(t)
	ca, cb := negotiate(ctx, t, a), negotiate(ctx, t, b)
	addFD(t, ca, openFile(t, iso, os.O_RDONLY), nil)
	require.NoError(t, s.Insert("ide-5696", iso, "raw"))
	s.LockTray("ide-5696", true)
	wantErr(t, cb.exec("eject", map[string]any{"id": "ide-5696"}), "GenericError",
		"Device 'ide-5696' is locked and force was not specified, wait for tray to open and try again")
	s.Delay("query-status", time.Hour)
	require.NoError(t, cb.write([]byte(`{"execute":"query-status"}`), nil))
	require.Eventually(t, func() bool { return slices.Contains(s.Commands(), "query-status") },
		10*time.Second, time.Millisecond, "the delayed command arrived")
	require.Len(t, s.HeldFiles(), 2)

	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close twice")
	assert.Empty(t, s.HeldFiles())
	assert.ErrorIs(t, s.Listen(filepath.Join(dir, "c.sock")), ErrServerClosed)
	ca.expectEOF()
	cb.expectEOF()
	ca.uc.Close()
	cb.uc.Close()
	// Poll by hand: require.Eventually runs its condition on goroutines of its own.
	after := runtime.NumGoroutine()
	for deadline := time.Now().Add(10 * time.Second); after > before && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
		after = runtime.NumGoroutine()
	}
	if after > before {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines: %d before, %d after Close:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
	_, err := os.Stat(a)
	assert.True(t, os.IsNotExist(err), "Close removes the socket files")
}

// TestListen covers Listen's checks.
func TestListen(t *testing.T) {
	dir := testenv.SocketDir(t)
	s := New(Options{})
	t.Cleanup(func() { s.Close() })
	p := filepath.Join(dir, "q.sock")
	require.NoError(t, s.Listen(p))
	assert.Error(t, s.Listen(p), "the same path twice")
	assert.Error(t, s.Listen(filepath.Join(dir, strings.Repeat("x", 120))), "path too long")

	// A stale socket file is replaced.
	stale := filepath.Join(dir, "stale.sock")
	s2 := New(Options{})
	require.NoError(t, s2.Listen(stale))
	s2.monitors[0].ln.SetUnlinkOnClose(false)
	require.NoError(t, s2.Close())
	require.NoError(t, s.Listen(stale))
	negotiate(testCtx(t), t, stale)
}

// TestOptions covers drives and versions.
func TestOptions(t *testing.T) {
	dir := testenv.SocketDir(t)
	iso := writeImage(t, dir, "a.iso", 4096)
	s, path := Start(t, Options{CDROMs: []string{"ide-5632", "ide-5632", "", "ide-5696"},
		Version: qmp.Version{Major: 2, Minor: 6, Micro: 0, Package: "old"}})
	c, greeting := dialRaw(testCtx(t), t, path)
	assert.Equal(t, `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 6, "major": 2}, "package": "old"}, "capabilities": []}}`+"\r\n", greeting)
	wantOK(t, c.exec("qmp_capabilities", nil))
	var ids []string
	for _, b := range queryBlock(t, c) {
		ids = append(ids, b.Device)
	}
	assert.Equal(t, []string{"ide-5632", "ide-5696"}, ids)
	wantErr(t, c.exec("eject", map[string]any{"id": "ide-5632"}), "GenericError", "Parameter 'id' is unexpected")
	wantOK(t, c.exec("eject", map[string]any{"device": "ide-5696"}))
	wantErr(t, c.exec("blockdev-change-medium", map[string]any{"device": "ide-5696", "filename": iso, "force": true}),
		"GenericError", "Parameter 'force' is unexpected")

	_, ok := s.Block("ide-9999")
	assert.False(t, ok)
	s.LockTray("ide-9999", true) // ignored
	assert.Error(t, s.Insert("ide-9999", iso, "raw"))
	assert.Error(t, s.Insert("ide-5632", iso, "vmdk"))
	assert.Error(t, s.Insert("ide-5632", dir+"/none", ""))
}

// TestStrictHostDevice: host_device on a regular file passes unless StrictHostDevice.
func TestStrictHostDevice(t *testing.T) {
	dir := testenv.SocketDir(t)
	iso := writeImage(t, dir, "a.iso", 4096)
	for _, strict := range []bool{false, true} {
		s, path := Start(t, Options{StrictHostDevice: strict})
		c := negotiate(testCtx(t), t, path)
		addFD(t, c, openFile(t, iso, os.O_RDONLY), nil)
		r := c.exec("blockdev-change-medium", map[string]any{"id": "ide-5632", "filename": "/dev/fdset/0", "format": "host_device"})
		if strict {
			wantErr(t, r, "GenericError", "'host_device' driver requires '/dev/fdset/0' to be either a character or block device")
			assert.Equal(t, []string{iso}, s.HeldFiles(), "the dup is let go, the set member stays")
			continue
		}
		wantOK(t, r)
		st, _ := s.Block("ide-5632")
		assert.Equal(t, "host_device", st.Format)
	}
}

// TestConcurrentUse runs clients on two monitors while the test reconfigures the fake and
// reads its state, for the race detector.
func TestConcurrentUse(t *testing.T) {
	dir := testenv.SocketDir(t)
	iso := writeImage(t, dir, "a.iso", 4096)
	s := New(Options{GuestUnlocksOnEject: time.Microsecond})
	t.Cleanup(func() { s.Close() })
	socks := []string{filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")}
	for _, p := range socks {
		require.NoError(t, s.Listen(p))
	}
	ctx := testCtx(t)
	clients := []*rawClient{negotiate(ctx, t, socks[0]), negotiate(ctx, t, socks[1])}
	files := []*os.File{openFile(t, iso, os.O_RDONLY), openFile(t, iso, os.O_RDONLY)}

	done := make(chan error, len(clients))
	for i, c := range clients {
		go func() {
			for range 50 {
				for _, cmd := range []struct {
					name string
					args map[string]any
					f    *os.File
				}{
					{"add-fd", map[string]any{"fdset-id": i}, files[i]},
					{"blockdev-change-medium", map[string]any{"id": "ide-5632", "filename": "/dev/fdset/" + itoa(int64(i)), "format": "raw"}, nil},
					{"query-block", nil, nil},
					{"eject", map[string]any{"id": "ide-5632"}, nil},
					{"remove-fd", map[string]any{"fdset-id": i}, nil},
					{"query-fdsets", nil, nil},
				} {
					if _, err := c.execFile(cmd.name, cmd.args, cmd.f); err != nil {
						done <- err
						return
					}
				}
			}
			done <- nil
		}()
	}
	for range 200 {
		s.LockTray("ide-5632", true)
		s.Block("ide-5632")
		s.Fdsets()
		s.HeldFiles()
		s.Commands()
		s.FailNext("query-fdsets", "GenericError", "busy")
		s.SetRunning(false)
		s.SetRunning(true)
		s.LockTray("ide-5632", false)
	}
	for range clients {
		require.NoError(t, <-done)
	}
}

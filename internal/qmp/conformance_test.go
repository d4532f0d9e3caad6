package qmp_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// peerStarter starts a QMP server with one empty CD-ROM named cdromID and returns its socket.
type peerStarter func(tb testing.TB) string

// conformance is the state the steps of runConformance share.
type conformance struct {
	c      *qmp.Client
	medium string   // a 4 KiB raw image
	file   *os.File // medium, opened O_RDONLY for add-fd
	added  qmp.AddFDInfo
	sets   []qmp.FdsetInfo // what query-fdsets showed last
}

// conformanceSteps drive a medium change the way cdswap does for a guest whose QEMU runs in
// dom0, plus the failures it must recognise. Each expectation is what QEMU 7.2 does; a fake
// that differs fails here.
var conformanceSteps = []struct {
	name string
	run  func(t *testing.T, ctx context.Context, s *conformance)
}{
	{"version", func(t *testing.T, ctx context.Context, s *conformance) {
		v := s.c.Version()
		assert.True(t, v.Major == 7 && v.Minor == 2, "Version() = %v, want 7.2.x", v)
		got, err := s.c.QueryVersion(ctx)
		require.NoError(t, err)
		assert.Equal(t, v, got, "QueryVersion() differs from the greeting")
	}},
	{"greeting capabilities", func(t *testing.T, ctx context.Context, s *conformance) {
		assert.Equal(t, []string{"oob"}, s.c.Capabilities())
	}},
	{"qmp_capabilities twice", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.Execute(ctx, "qmp_capabilities", nil, nil)
		wantQMPError(t, err, qmp.ErrCommandNotFound, "Capabilities negotiation is already complete, command ignored")
	}},
	{"query-status", func(t *testing.T, ctx context.Context, s *conformance) {
		st, err := s.c.QueryStatus(ctx)
		require.NoError(t, err)
		assert.Equal(t, qmp.StatusInfo{Running: true, Status: "running"}, st)
	}},
	{"query-block empty drive", func(t *testing.T, ctx context.Context, s *conformance) {
		b := cdrom(t, ctx, s.c)
		assert.Equal(t, qmp.BlockInfo{Device: cdromID, QDev: cdromID, Type: "unknown", Removable: true,
			TrayOpen: ptr(false), IOStatus: "ok"}, b)
	}},
	{"eject empty drive opens the tray", func(t *testing.T, ctx context.Context, s *conformance) {
		require.NoError(t, s.c.Eject(ctx, cdromID, false))
		waitTray(t, ctx, s.c, true)
		b := cdrom(t, ctx, s.c)
		assert.Equal(t, ptr(true), b.TrayOpen, "tray_open after eject")
		assert.Nil(t, b.Inserted)
	}},
	{"add-fd", func(t *testing.T, ctx context.Context, s *conformance) {
		info, err := s.c.AddFD(ctx, s.file, nil, "raw:"+s.medium)
		require.NoError(t, err)
		assert.Equal(t, int64(0), info.FdsetID, "the first free fdset id")
		assert.Positive(t, info.FD, "fd number inside QEMU")
		s.added = info
	}},
	{"query-fdsets shows the fd", func(t *testing.T, ctx context.Context, s *conformance) {
		sets, err := s.c.QueryFdsets(ctx)
		require.NoError(t, err)
		assert.Equal(t, []qmp.FdsetInfo{{FdsetID: s.added.FdsetID,
			FDs: []qmp.FdsetFD{{FD: s.added.FD, Opaque: "raw:" + s.medium}}}}, sets)
	}},
	{"add-fd to the same set", func(t *testing.T, ctx context.Context, s *conformance) {
		set := s.added.FdsetID
		info, err := s.c.AddFD(ctx, s.file, &set, "second")
		require.NoError(t, err)
		assert.Equal(t, set, info.FdsetID)
		assert.NotEqual(t, s.added.FD, info.FD)
		sets, err := s.c.QueryFdsets(ctx)
		require.NoError(t, err)
		assert.Equal(t, []qmp.FdsetInfo{{FdsetID: set, FDs: []qmp.FdsetFD{
			{FD: s.added.FD, Opaque: "raw:" + s.medium}, {FD: info.FD, Opaque: "second"}}}}, sets)
		require.NoError(t, s.c.RemoveFD(ctx, set, &info.FD))
		sets, err = s.c.QueryFdsets(ctx)
		require.NoError(t, err)
		assert.Equal(t, []qmp.FdsetInfo{{FdsetID: set, FDs: []qmp.FdsetFD{
			{FD: s.added.FD, Opaque: "raw:" + s.medium}}}}, sets, "after remove-fd of the second fd")
	}},
	{"add-fd to a negative set", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.ExecuteWithFile(ctx, "add-fd", map[string]int{"fdset-id": -1}, s.file, nil)
		wantQMPError(t, err, qmp.ErrGenericError, "Parameter 'fdset-id' expects a non-negative value")
	}},
	{"change medium to a missing file", func(t *testing.T, ctx context.Context, s *conformance) {
		missing := filepath.Join(filepath.Dir(s.medium), "missing.raw")
		err := s.c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: cdromID, Filename: missing, Format: "raw"})
		wantQMPError(t, err, qmp.ErrGenericError, fmt.Sprintf("Could not open '%s': No such file or directory", missing))
	}},
	{"change medium to an unknown fdset", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: cdromID, Filename: "/dev/fdset/99", Format: "raw"})
		wantQMPError(t, err, qmp.ErrGenericError, "Could not dup FD for /dev/fdset/99 flags 0: No such file or directory",
			"IsFdsetDupFailed")
		b := cdrom(t, ctx, s.c)
		assert.Nil(t, b.Inserted)
		assert.Equal(t, ptr(true), b.TrayOpen, "a failed change leaves the open tray open")
	}},
	{"blockdev-change-medium from the fdset", func(t *testing.T, ctx context.Context, s *conformance) {
		require.NoError(t, s.c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{
			ID: cdromID, Filename: fdsetPath(s.added.FdsetID), Format: "raw"}))
		waitTray(t, ctx, s.c, false)
		b := cdrom(t, ctx, s.c)
		assert.Equal(t, ptr(false), b.TrayOpen, "tray_open after the change")
		require.NotNil(t, b.Inserted, "query-block inserted")
		assert.NotEmpty(t, b.Inserted.NodeName)
		b.Inserted.NodeName = ""
		assert.Equal(t, qmp.BlockInserted{File: fdsetPath(s.added.FdsetID), Drv: "raw", RO: true}, *b.Inserted)
	}},
	{"query-block shape", func(t *testing.T, ctx context.Context, s *conformance) {
		var raw []map[string]any
		require.NoError(t, s.c.Execute(ctx, "query-block", nil, &raw))
		require.Len(t, raw, 1)
		assert.ElementsMatch(t, []string{"device", "qdev", "type", "removable", "locked", "tray_open",
			"io-status", "inserted"}, keys(raw[0]), "query-block entry keys")
		inserted, _ := raw[0]["inserted"].(map[string]any)
		assert.ElementsMatch(t, []string{"file", "node-name", "ro", "drv", "encrypted", "detect_zeroes",
			"bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr", "image", "cache", "write_threshold",
			"backing_file_depth"}, keys(inserted), "query-block inserted keys")
		image, _ := inserted["image"].(map[string]any)
		assert.ElementsMatch(t, []string{"filename", "format", "virtual-size", "actual-size", "dirty-flag"},
			keys(image), "query-block inserted.image keys")
		assert.Equal(t, fdsetPath(s.added.FdsetID), image["filename"])
		assert.Equal(t, "raw", image["format"])
		assert.Equal(t, float64(4096), image["virtual-size"])
		assert.Equal(t, map[string]any{"no-flush": false, "direct": false, "writeback": true}, inserted["cache"])
	}},
	{"remove-fd keeps the set while the medium uses it", func(t *testing.T, ctx context.Context, s *conformance) {
		require.NoError(t, s.c.RemoveFD(ctx, s.added.FdsetID, nil))
		sets, err := s.c.QueryFdsets(ctx)
		require.NoError(t, err)
		assert.Equal(t, []qmp.FdsetInfo{{FdsetID: s.added.FdsetID, FDs: []qmp.FdsetFD{}}}, sets)
	}},
	{"remove-fd again succeeds", func(t *testing.T, ctx context.Context, s *conformance) {
		assert.NoError(t, s.c.RemoveFD(ctx, s.added.FdsetID, nil))
	}},
	{"remove-fd of an unknown fd", func(t *testing.T, ctx context.Context, s *conformance) {
		fd := int64(999)
		err := s.c.RemoveFD(ctx, s.added.FdsetID, &fd)
		wantQMPError(t, err, qmp.ErrGenericError, fmt.Sprintf("File descriptor named 'fdset-id:%d, fd:999' not found", s.added.FdsetID),
			"IsFdsetNotFound")
	}},
	{"remove-fd of an unknown set", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.RemoveFD(ctx, 77, nil)
		wantQMPError(t, err, qmp.ErrGenericError, "File descriptor named 'fdset-id:77' not found", "IsFdsetNotFound")
	}},
	{"add-fd without a descriptor", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.Execute(ctx, "add-fd", map[string]string{"opaque": "x"}, nil)
		wantQMPError(t, err, qmp.ErrGenericError, "No file descriptor supplied via SCM_RIGHTS")
	}},
	{"eject without a device", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.Execute(ctx, "eject", map[string]any{}, nil)
		wantQMPError(t, err, qmp.ErrGenericError, "Need exactly one of 'device' and 'id'")
	}},
	{"unexpected parameter", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.Execute(ctx, "eject", map[string]any{"id": cdromID, "bogus": 1}, nil)
		wantQMPError(t, err, qmp.ErrGenericError, "Parameter 'bogus' is unexpected")
	}},
	{"eject by the deprecated device argument", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.Execute(ctx, "eject", map[string]any{"device": "nope"}, nil)
		wantQMPError(t, err, qmp.ErrDeviceNotFound, "Device 'nope' not found")
	}},
	{"eject of a missing device", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.Eject(ctx, "nope", false)
		wantQMPError(t, err, qmp.ErrDeviceNotFound, "Device 'nope' not found")
	}},
	{"change medium of a missing device", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: "nope", Filename: s.medium, Format: "raw"})
		wantQMPError(t, err, qmp.ErrDeviceNotFound, "Device 'nope' not found")
	}},
	{"host_device on a regular file", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: cdromID, Filename: s.medium, Format: "host_device"})
		wantQMPError(t, err, qmp.ErrGenericError,
			fmt.Sprintf("'host_device' driver requires '%s' to be either a character or block device", s.medium),
			"IsFormatRefused")
		b := cdrom(t, ctx, s.c)
		require.NotNil(t, b.Inserted, "the failed change must leave the medium in")
		assert.Equal(t, fdsetPath(s.added.FdsetID), b.Inserted.File)
		assert.Equal(t, ptr(false), b.TrayOpen)
	}},
	{"file on a character device", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: cdromID, Filename: os.DevNull, Format: "file"})
		wantQMPError(t, err, qmp.ErrGenericError,
			fmt.Sprintf("'file' driver requires '%s' to be a regular file", os.DevNull), "IsFormatRefused")
	}},
	{"qcow2 on a raw image", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: cdromID, Filename: s.medium, Format: "qcow2"})
		wantQMPError(t, err, qmp.ErrGenericError, "Image is not in qcow2 format", "IsFormatRefused")
		b := cdrom(t, ctx, s.c)
		require.NotNil(t, b.Inserted, "the failed change must leave the medium in")
		assert.Equal(t, fdsetPath(s.added.FdsetID), b.Inserted.File)
	}},
	{"unknown format", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: cdromID, Filename: s.medium, Format: "nosuch"})
		wantQMPError(t, err, qmp.ErrGenericError, "Unknown driver 'nosuch'", "IsFormatRefused")
	}},
	{"unknown command", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.Execute(ctx, "no-such-cmd", nil, nil)
		wantQMPError(t, err, qmp.ErrCommandNotFound, "The command no-such-cmd has not been found")
	}},
	{"eject releases the removed fdset", func(t *testing.T, ctx context.Context, s *conformance) {
		require.NoError(t, s.c.Eject(ctx, cdromID, false))
		waitTray(t, ctx, s.c, true)
		b := cdrom(t, ctx, s.c)
		assert.Nil(t, b.Inserted, "query-block inserted after eject")
		assert.Equal(t, ptr(true), b.TrayOpen)
		sets, err := s.c.QueryFdsets(ctx)
		require.NoError(t, err)
		assert.Empty(t, sets, "query-fdsets once nothing uses the removed set")
	}},
	{"change medium by path", func(t *testing.T, ctx context.Context, s *conformance) {
		require.NoError(t, s.c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{
			ID: cdromID, Filename: s.medium, Format: "raw", ReadOnlyMode: "retain", Force: true}))
		waitTray(t, ctx, s.c, false)
		b := cdrom(t, ctx, s.c)
		require.NotNil(t, b.Inserted)
		assert.Equal(t, s.medium, b.Inserted.File)
		assert.Equal(t, "raw", b.Inserted.Drv)
	}},
	{"eject with force", func(t *testing.T, ctx context.Context, s *conformance) {
		require.NoError(t, s.c.Eject(ctx, cdromID, true))
		waitTray(t, ctx, s.c, true)
		assert.Nil(t, cdrom(t, ctx, s.c).Inserted)
	}},
	{"eject of an open empty drive", func(t *testing.T, ctx context.Context, s *conformance) {
		assert.NoError(t, s.c.Eject(ctx, cdromID, false))
	}},
	{"query-fdsets lists the newest set first", func(t *testing.T, ctx context.Context, s *conformance) {
		a, err := s.c.AddFD(ctx, s.file, nil, "a")
		require.NoError(t, err)
		b, err := s.c.AddFD(ctx, s.file, nil, "b")
		require.NoError(t, err)
		assert.Equal(t, []int64{0, 1}, []int64{a.FdsetID, b.FdsetID}, "fdset ids (the first free id is reused)")
		sets, err := s.c.QueryFdsets(ctx)
		require.NoError(t, err)
		assert.Equal(t, []qmp.FdsetInfo{
			{FdsetID: b.FdsetID, FDs: []qmp.FdsetFD{{FD: b.FD, Opaque: "b"}}},
			{FdsetID: a.FdsetID, FDs: []qmp.FdsetFD{{FD: a.FD, Opaque: "a"}}},
		}, sets)
		require.NoError(t, s.c.RemoveFD(ctx, a.FdsetID, nil))
		require.NoError(t, s.c.RemoveFD(ctx, b.FdsetID, nil))
		sets, err = s.c.QueryFdsets(ctx)
		require.NoError(t, err)
		assert.Empty(t, sets, "a running VM closes removed, unused fds at once")
	}},
}

// lockedSteps check QEMU's refusals while the guest keeps the tray locked
// (startQEMULockingGuest, startFakeLockingGuest).
var lockedSteps = []struct {
	name string
	run  func(t *testing.T, ctx context.Context, s *conformance)
}{
	{"the guest locks the tray", func(t *testing.T, ctx context.Context, s *conformance) {
		// The real guest locks it once SeaBIOS has booted it.
		deadline := time.Now().Add(15 * time.Second)
		for !cdrom(t, ctx, s.c).Locked {
			if time.Now().After(deadline) {
				t.Fatalf("query-block: %s not locked within 15 s", cdromID)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}},
	{"eject of a locked tray", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.Eject(ctx, cdromID, false)
		wantQMPError(t, err, qmp.ErrGenericError, lockedDesc, "IsTrayLocked")
		b := cdrom(t, ctx, s.c)
		assert.True(t, b.Locked, "locked after the refused eject")
		assert.Equal(t, ptr(false), b.TrayOpen, "tray_open after the refused eject")
	}},
	{"change medium of a locked tray", func(t *testing.T, ctx context.Context, s *conformance) {
		err := s.c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: cdromID, Filename: s.medium, Format: "raw"})
		wantQMPError(t, err, qmp.ErrGenericError, lockedDesc, "IsTrayLocked")
		assert.Nil(t, cdrom(t, ctx, s.c).Inserted, "the refused change inserts nothing")
	}},
}

// lockedDesc is QEMU's refusal to open cdromID's locked tray without force.
const lockedDesc = "Device '" + cdromID + "' is locked and force was not specified, wait for tray to open and try again"

// pausedSteps check what differs while the VM does not run: QEMU 7.2 closes no removed fd
// then, so remove-fd changes nothing that query-fdsets shows, and cont does not close it either.
var pausedSteps = []struct {
	name string
	run  func(t *testing.T, ctx context.Context, s *conformance)
}{
	{"stop", func(t *testing.T, ctx context.Context, s *conformance) {
		require.NoError(t, s.c.Execute(ctx, "stop", nil, nil))
		waitEvent(t, ctx, s.c, "STOP")
		st, err := s.c.QueryStatus(ctx)
		require.NoError(t, err)
		assert.Equal(t, qmp.StatusInfo{Running: false, Status: "paused"}, st)
	}},
	{"remove-fd while paused keeps the fd", func(t *testing.T, ctx context.Context, s *conformance) {
		a, err := s.c.AddFD(ctx, s.file, nil, "a")
		require.NoError(t, err)
		require.NoError(t, s.c.RemoveFD(ctx, a.FdsetID, nil))
		b, err := s.c.AddFD(ctx, s.file, nil, "b")
		require.NoError(t, err)
		assert.Equal(t, a.FdsetID+1, b.FdsetID, "a removed but open set keeps its id")
		s.sets = []qmp.FdsetInfo{
			{FdsetID: b.FdsetID, FDs: []qmp.FdsetFD{{FD: b.FD, Opaque: "b"}}},
			{FdsetID: a.FdsetID, FDs: []qmp.FdsetFD{{FD: a.FD, Opaque: "a"}}},
		}
		sets, err := s.c.QueryFdsets(ctx)
		require.NoError(t, err)
		assert.Equal(t, s.sets, sets)
	}},
	{"cont does not close removed fds", func(t *testing.T, ctx context.Context, s *conformance) {
		require.NoError(t, s.c.Execute(ctx, "cont", nil, nil))
		waitEvent(t, ctx, s.c, "RESUME")
		st, err := s.c.QueryStatus(ctx)
		require.NoError(t, err)
		assert.Equal(t, qmp.StatusInfo{Running: true, Status: "running"}, st)
		sets, err := s.c.QueryFdsets(ctx)
		require.NoError(t, err)
		assert.Equal(t, s.sets, sets, "query-fdsets after cont")
	}},
}

// runConformance runs steps in order against the peer that start starts.
func runConformance(t *testing.T, start peerStarter, steps []struct {
	name string
	run  func(t *testing.T, ctx context.Context, s *conformance)
}) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := start(t)
	c, err := qmp.Dial(ctx, path)
	require.NoError(t, err)
	defer c.Close()

	s := &conformance{c: c, medium: filepath.Join(t.TempDir(), "medium.raw")}
	require.NoError(t, os.WriteFile(s.medium, make([]byte, 4096), 0o644))
	s.file, err = os.Open(s.medium)
	require.NoError(t, err)
	defer s.file.Close()

	for _, step := range steps {
		if !t.Run(step.name, func(t *testing.T) { step.run(t, ctx, s) }) {
			break // later steps depend on this one
		}
	}
	assert.Nil(t, c.Err(), "the connection must survive every step")
	assert.Equal(t, qmp.Stats{}, c.Stats())
}

func TestConformance(t *testing.T) {
	t.Run("qemu", func(t *testing.T) { runConformance(t, startQEMU, conformanceSteps) })
	t.Run("qmptest", func(t *testing.T) { runConformance(t, startFake, conformanceSteps) })
}

func TestConformanceLockedTray(t *testing.T) {
	t.Run("qemu", func(t *testing.T) { runConformance(t, startQEMULockingGuest, lockedSteps) })
	t.Run("qmptest", func(t *testing.T) { runConformance(t, startFakeLockingGuest, lockedSteps) })
}

func TestConformancePaused(t *testing.T) {
	t.Run("qemu", func(t *testing.T) { runConformance(t, startQEMU, pausedSteps) })
	t.Run("qmptest", func(t *testing.T) { runConformance(t, startFake, pausedSteps) })
}

// cdrom returns the query-block entry of cdromID.
func cdrom(t *testing.T, ctx context.Context, c *qmp.Client) qmp.BlockInfo {
	t.Helper()
	blocks, err := c.QueryBlock(ctx)
	require.NoError(t, err)
	for _, b := range blocks {
		if b.Device == cdromID {
			return b
		}
	}
	t.Fatalf("QueryBlock() = %+v, want an entry for %s", blocks, cdromID)
	return qmp.BlockInfo{}
}

// waitTray reads events until DEVICE_TRAY_MOVED says cdromID's tray is open (or closed).
func waitTray(t *testing.T, ctx context.Context, c *qmp.Client, open bool) {
	t.Helper()
	var tm qmp.TrayMoved
	waitFor(t, ctx, c, fmt.Sprintf("DEVICE_TRAY_MOVED tray-open=%v for %s", open, cdromID), func(ev qmp.Event) bool {
		if ev.Name != qmp.EventDeviceTrayMoved {
			return false
		}
		assert.False(t, ev.Time.IsZero(), "%s without a timestamp", ev.Name)
		require.NoError(t, ev.DecodeData(&tm))
		return tm.ID == cdromID && tm.TrayOpen == open
	})
	assert.Equal(t, cdromID, tm.Device, "DEVICE_TRAY_MOVED device")
}

// waitEvent reads events until one named name arrives.
func waitEvent(t *testing.T, ctx context.Context, c *qmp.Client, name string) qmp.Event {
	t.Helper()
	ev := waitFor(t, ctx, c, name+" event", func(ev qmp.Event) bool { return ev.Name == name })
	assert.False(t, ev.Time.IsZero(), "%s without a timestamp", ev.Name)
	return ev
}

// waitFor reads events for up to 5 s until match accepts one, and returns it; what names
// the awaited event in the failure message.
func waitFor(t *testing.T, ctx context.Context, c *qmp.Client, what string, match func(qmp.Event) bool) qmp.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var seen []string
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("events closed while waiting for %s; seen %q", what, seen)
			}
			if match(ev) {
				return ev
			}
			seen = append(seen, ev.Name+" "+string(ev.Data))
		case <-ctx.Done():
			t.Fatalf("no %s; seen %q", what, seen)
		}
	}
}

// predicates are package qmp's description predicates, by name.
var predicates = map[string]func(error) bool{
	"IsTrayLocked":     qmp.IsTrayLocked,
	"IsFdsetNotFound":  qmp.IsFdsetNotFound,
	"IsFdsetDupFailed": qmp.IsFdsetDupFailed,
	"IsFormatRefused":  qmp.IsFormatRefused,
}

// wantQMPError checks an error reply's class sentinel and exact description, and that of
// qmp's predicates exactly those named in is hold for it, so every error step checks each
// predicate: true on its own error, false on every other.
func wantQMPError(t *testing.T, err error, class error, desc string, is ...string) {
	t.Helper()
	require.Error(t, err)
	assert.ErrorIs(t, err, class)
	var qe *qmp.Error
	require.True(t, errors.As(err, &qe), "error %v is not a *qmp.Error", err)
	assert.Equal(t, desc, qe.Desc)
	for _, name := range is {
		require.Contains(t, predicates, name, "no predicate qmp.%s", name)
	}
	for name, pred := range predicates {
		assert.Equal(t, slices.Contains(is, name), pred(err), "qmp.%s(%v)", name, err)
	}
}

func fdsetPath(id int64) string { return fmt.Sprintf("/dev/fdset/%d", id) }

func ptr[T any](v T) *T { return &v }

func keys(m map[string]any) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	return k
}

package qmptest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/qmp/qmptest"
)

// TestWithClient runs package qmp's client against the fake: the medium change, a locked
// tray and a dropped connection.
func TestWithClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iso := filepath.Join(t.TempDir(), "new.iso")
	require.NoError(t, os.WriteFile(iso, make([]byte, 4096), 0o644))

	s, path := qmptest.Start(t, qmptest.Options{})
	c, err := qmp.Dial(ctx, path)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	assert.Equal(t, qmp.Version{Major: 7, Minor: 2}, c.Version())

	f, err := os.Open(iso)
	require.NoError(t, err)
	defer f.Close()
	info, err := c.AddFD(ctx, f, nil, "stub-devid:5632")
	require.NoError(t, err)
	sets, err := c.QueryFdsets(ctx)
	require.NoError(t, err)
	assert.Equal(t, []qmp.FdsetInfo{{FdsetID: info.FdsetID, FDs: []qmp.FdsetFD{{FD: info.FD, Opaque: "stub-devid:5632"}}}}, sets)

	filename := fmt.Sprintf("/dev/fdset/%d", info.FdsetID)
	require.NoError(t, c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: "ide-5632", Filename: filename, Format: "host_device"}))
	for _, want := range []bool{true, false} {
		select {
		case ev := <-c.Events():
			var tm qmp.TrayMoved
			require.NoError(t, ev.DecodeData(&tm))
			assert.Equal(t, "DEVICE_TRAY_MOVED", ev.Name)
			assert.Equal(t, want, tm.TrayOpen, "event %s", ev.Data)
		case <-ctx.Done():
			t.Fatal("no DEVICE_TRAY_MOVED event")
		}
	}
	blocks, err := c.QueryBlock(ctx)
	require.NoError(t, err)
	require.Len(t, blocks, 1)
	require.NotNil(t, blocks[0].Inserted)
	assert.Equal(t, filename, blocks[0].Inserted.File)
	assert.Equal(t, "host_device", blocks[0].Inserted.Drv)

	s.LockTray("ide-5632", true)
	err = c.Eject(ctx, "ide-5632", false)
	assert.ErrorIs(t, err, qmp.ErrGenericError)
	var qe *qmp.Error
	require.ErrorAs(t, err, &qe)
	assert.Equal(t, "Device 'ide-5632' is locked and force was not specified, wait for tray to open and try again", qe.Desc)
	require.NoError(t, c.Eject(ctx, "ide-5632", true))
	assert.ErrorIs(t, c.Eject(ctx, "ide-9999", false), qmp.ErrDeviceNotFound)
	require.NoError(t, c.RemoveFD(ctx, info.FdsetID, nil))
	assert.Empty(t, s.HeldFiles())

	s.DropAfter("query-status")
	_, err = c.QueryStatus(ctx)
	require.NoError(t, err)
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("the client did not notice the dropped connection")
	}
	_, err = c.QueryStatus(ctx)
	assert.ErrorIs(t, err, qmp.ErrClosed)
}

// Example shows a fake QEMU with a locked tray, as a test of a medium change would set it
// up.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "qmpx")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	s := qmptest.New(qmptest.Options{})
	defer s.Close()
	if err := s.Listen(filepath.Join(dir, "qmp.sock")); err != nil {
		fmt.Println(err)
		return
	}
	s.LockTray(qmptest.DefaultCDROM, true)

	c, err := qmp.Dial(ctx, filepath.Join(dir, "qmp.sock"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	err = c.Eject(ctx, qmptest.DefaultCDROM, false)
	var qe *qmp.Error
	if errors.As(err, &qe) {
		fmt.Println(qe.Class + ": " + qe.Desc)
	}
	fmt.Println(c.Eject(ctx, qmptest.DefaultCDROM, true))
	st, _ := s.Block(qmptest.DefaultCDROM)
	fmt.Println("tray open:", st.TrayOpen, "locked:", st.Locked)
	// Output:
	// GenericError: Device 'ide-5632' is locked and force was not specified, wait for tray to open and try again
	// <nil>
	// tray open: true locked: false
}

package loopdev

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cdswap/cdswap/internal/testenv"
)

// attach attaches file and detaches it when the test ends, so no test leaks a loop device.
func attach(ctx context.Context, t *testing.T, file string) string {
	t.Helper()
	dev, err := AttachReadOnly(ctx, file)
	require.NoError(t, err, "AttachReadOnly(%s)", file)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := Detach(ctx, dev); err != nil {
			t.Errorf("cleanup: Detach(%s) = %v", dev, err)
		}
	})
	return dev
}

func TestAttachReadOnly(t *testing.T) {
	testenv.Require(t, "read-only loop devices", Available())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := make([]byte, 3*4096+512) // not a multiple of the page size: the device rounds down to 512
	_, err := rand.Read(want)
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "medium.iso")
	require.NoError(t, os.WriteFile(file, want, 0o600))

	dev := attach(ctx, t, file)

	fi, err := os.Stat(dev)
	require.NoError(t, err)
	assert.True(t, fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0,
		"mode of %s = %v, want a block device", dev, fi.Mode())
	backing, err := BackingFile(dev)
	require.NoError(t, err)
	assert.Equal(t, file, backing, "BackingFile(%s)", dev)

	f, err := os.Open(dev)
	require.NoError(t, err)
	defer f.Close()
	ro, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKROGET)
	require.NoError(t, err, "ioctl BLKROGET")
	assert.Equal(t, 1, ro, "BLKROGET(%s)", dev)
	got, err := io.ReadAll(f)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "read %d bytes from %s, want the %d bytes of the file", len(got), dev, len(want))

	// The kernel lets a read-only block device be opened for writing and refuses the write.
	w, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err == nil {
		_, err = w.Write(make([]byte, 512))
		w.Close()
	}
	assert.ErrorIs(t, err, unix.EPERM, "write to %s", dev)
}

func TestDetach(t *testing.T) {
	testenv.Require(t, "read-only loop devices", Available())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	file := filepath.Join(t.TempDir(), "empty-cdrom.1")
	require.NoError(t, os.WriteFile(file, nil, 0o400)) // the empty cdrom file is zero-size

	dev, err := AttachReadOnly(ctx, file)
	require.NoError(t, err)
	detached := false
	t.Cleanup(func() {
		if !detached {
			_ = Detach(context.Background(), dev)
		}
	})
	require.NoError(t, Detach(ctx, dev), "Detach(%s)", dev)
	detached = true
	_, err = BackingFile(dev)
	assert.ErrorIs(t, err, os.ErrNotExist, "BackingFile(%s) after Detach", dev)
	assert.NoError(t, Detach(ctx, dev), "second Detach(%s)", dev)
}

func TestAttachMissingFile(t *testing.T) {
	testenv.Require(t, "read-only loop devices", Available())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dev, err := AttachReadOnly(ctx, filepath.Join(t.TempDir(), "missing.iso"))
	if err == nil {
		_ = Detach(ctx, dev)
	}
	assert.ErrorIs(t, err, os.ErrNotExist, "AttachReadOnly(missing file)")
}

func TestBadDeviceNames(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, dev := range []string{"", "/dev/sda", "/dev/loop", "/dev/loop1x", "loop1", "/dev/loop-control"} {
		t.Run(dev, func(t *testing.T) {
			assert.ErrorIs(t, Detach(ctx, dev), ErrNotLoop, "Detach(%q)", dev)
			_, err := BackingFile(dev)
			assert.ErrorIs(t, err, ErrNotLoop, "BackingFile(%q)", dev)
		})
	}
}

func TestAvailable(t *testing.T) {
	err := Available()
	if err != nil {
		assert.True(t, errors.Is(err, ErrUnavailable), "Available() = %v, want an error wrapping ErrUnavailable", err)
		if testenv.InCI() {
			t.Fatalf("Available() = %v; CI runs as root and needs loop devices", err)
		}
		return
	}
	assert.Zero(t, os.Geteuid(), "Available() = nil, but not root")
}

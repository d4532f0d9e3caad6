package xensim

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
)

// inode is the inode number of path.
func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestISODir(t *testing.T) {
	shared := filepath.Join(t.TempDir(), "library")
	a := startHost(t, Config{HostName: "sim-a", ISODir: shared, QEMU: QEMUFake, StubdomGuests: 1})
	assert.Equal(t, shared, a.ISODir())
	tools := filepath.Join(shared, ISOTools)
	before := inode(t, tools)
	// A file a person put in the library stays, and so does an image already made: a guest
	// of host a may hold it.
	require.NoError(t, os.WriteFile(filepath.Join(shared, "custom.iso"), []byte("x"), 0o644))

	b := startHost(t, Config{HostName: "sim-b", ISODir: shared, QEMU: QEMUFake, Dom0Guests: 1})
	assert.Equal(t, a.ISOs(), b.ISOs(), "one library, one path per image")
	assert.Equal(t, before, inode(t, tools), "an image already in the library is kept as it is")
	assert.FileExists(t, filepath.Join(shared, "custom.iso"))
	assert.Contains(t, b.WorkerFlags(), shared)

	// A missing image is made again; a host's own folder is still made anew at each start.
	require.NoError(t, os.Remove(tools))
	startHost(t, Config{HostName: "sim-c", ISODir: shared, QEMU: QEMUFake, Dom0Guests: 1})
	assert.FileExists(t, tools)
	dir := testenv.SocketDir(t)
	own := startHost(t, Config{Dir: dir, QEMU: QEMUFake, Dom0Guests: 1})
	assert.Equal(t, filepath.Join(dir, "isos"), own.ISODir())
}

package qmp_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/simqemu/qemuproc"
)

// cdromDevID is vdev hdc, whose drive libxl names cdromID, used as both the block backend
// name and the qdev id.
const (
	cdromDevID xen.DevID = 5632
	cdromID              = "ide-5632"
)

// startQEMU starts a real QEMU with one empty IDE CD-ROM named like libxl names hdc, and
// returns the path of its QMP socket once QEMU listens there. The VM runs (SeaBIOS finds
// nothing to boot), since QEMU closes removed fds only while the VM runs. Without
// qemu-system-x86_64 the test fails under CI=true and is skipped otherwise.
func startQEMU(tb testing.TB) string {
	tb.Helper()
	bin := testenv.RequireQEMU(tb)
	sock := filepath.Join(testenv.SocketDir(tb), "qmp.sock")
	// No InitialMedium: the drive starts empty, like libxl's empty cdrom before a medium
	// is inserted.
	p, err := qemuproc.Start(testenv.Context(tb, 20*time.Second), qemuproc.Config{
		Binary: bin, CDROMs: []xen.DevID{cdromDevID}, Monitors: []string{sock}})
	if err != nil {
		tb.Fatalf("start %s: %v", bin, err)
	}
	tb.Cleanup(func() { p.Stop() })
	return sock
}

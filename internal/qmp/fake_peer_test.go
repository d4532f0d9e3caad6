package qmp_test

import (
	"path/filepath"
	"testing"

	"github.com/cdswap/cdswap/internal/qmp/qmptest"
	"github.com/cdswap/cdswap/internal/testenv"
)

// startFake starts the fake QEMU of package qmptest with the drive and the host_device check
// the conformance steps expect.
func startFake(tb testing.TB) string {
	tb.Helper()
	_, path := startFakeWith(tb, qmptest.Options{CDROMs: []string{cdromID}, StrictHostDevice: true})
	return path
}

// startFakeLockingGuest is startFake with the tray locked, as startQEMULockingGuest's guest
// keeps it.
func startFakeLockingGuest(tb testing.TB) string {
	tb.Helper()
	srv, path := startFakeWith(tb, qmptest.Options{CDROMs: []string{cdromID}, StrictHostDevice: true})
	srv.LockTray(cdromID, true)
	return path
}

func startFakeWith(tb testing.TB, opts qmptest.Options) (*qmptest.Server, string) {
	tb.Helper()
	srv := qmptest.New(opts)
	tb.Cleanup(func() { srv.Close() })
	path := filepath.Join(testenv.SocketDir(tb), "qmp.sock")
	if err := srv.Listen(path); err != nil {
		tb.Fatal(err)
	}
	return srv, path
}

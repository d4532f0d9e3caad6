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
	return startFakeWith(tb, qmptest.Options{CDROMs: []string{cdromID}, StrictHostDevice: true})
}

func startFakeWith(tb testing.TB, opts qmptest.Options) string {
	tb.Helper()
	srv := qmptest.New(opts)
	tb.Cleanup(func() { srv.Close() })
	path := filepath.Join(testenv.SocketDir(tb), "qmp.sock")
	if err := srv.Listen(path); err != nil {
		tb.Fatal(err)
	}
	return path
}

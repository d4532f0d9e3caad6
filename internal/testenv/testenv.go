// Package testenv holds the scaffolding that cdswap's tests share: finding the real peers
// they drive (QEMU, Debian's xenstore-utils, the Temporal CLI, loop devices) and deciding
// what a missing one means, short folders for unix sockets, contexts that end with a test,
// buffers and loggers a running process or server may write to while the test reads, and
// whether a process (a server a test started, or its children) still runs.
//
// It is for tests only: production code must not import it.
//
// A missing peer fails a test under CI (CI=true), where every test must run, and skips it
// elsewhere, with a message saying what to install.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// InCI reports whether the tests run under CI (the environment has CI=true), where a test
// may not skip for want of a peer.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable ends tb because something it needs is missing here: under CI it fails,
// elsewhere it skips. The message (format and args, as for fmt.Sprintf) should say what is
// missing and how to get it.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		tb.Fatalf("%s [CI=true: a missing prerequisite fails the test]", msg)
		return // for a testing.TB whose Fatalf returns
	}
	tb.Skip(msg)
}

// Require ends tb through Unavailable when err says that what the test needs (what, such as
// "read-only loop devices") cannot be had here; with a nil err it does nothing.
func Require(tb testing.TB, what string, err error) {
	tb.Helper()
	if err != nil {
		Unavailable(tb, "this test needs %s: %v", what, err)
	}
}

// RequireCommand returns the path of the program name in $PATH, or ends tb through
// Unavailable naming debianPackage, the Debian package that installs it (make deps
// installs every one the tests use).
func RequireCommand(tb testing.TB, name, debianPackage string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(tb, "this test needs %s, which is not in $PATH: apt-get install %s (make deps does it)", name, debianPackage)
	}
	return p
}

// RequireQEMU is RequireCommand for qemu-system-x86_64, from Debian's qemu-system-x86: the
// device model libxl runs for a guest, and the real peer of the QMP tests.
func RequireQEMU(tb testing.TB) string {
	tb.Helper()
	return RequireCommand(tb, "qemu-system-x86_64", "qemu-system-x86")
}

// maxSocketDir bounds the length of the folder SocketDir returns, so that socket names of up
// to 40 bytes below it, sub-folders included, fit in sun_path.
const maxSocketDir = 108 - 1 - 40

// SocketDir returns a new empty folder for unix sockets, removed at cleanup. A socket path
// must be shorter than 108 bytes (sun_path), and t.TempDir() can be longer than that before
// the socket's own name, so the folder is made directly in os.TempDir(). It fails tb if
// even that path is too long (set TMPDIR to a shorter folder).
func SocketDir(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "cds")
	if err != nil {
		tb.Fatalf("make a folder for unix sockets: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if len(dir) > maxSocketDir {
		tb.Fatalf("folder for unix sockets %s is %d bytes, more than %d: set TMPDIR to a shorter folder", dir, len(dir), maxSocketDir)
	}
	return dir
}

// Context returns a context that ends after d, or when tb and its cleanups end, so that a
// test that hangs on a peer still stops by itself.
func Context(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// Buffer is a bytes.Buffer that a process, a server or a logger may write to while the test
// reads it. The zero value is an empty buffer ready for use; it is safe for concurrent use.
type Buffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Logger returns a logger that writes every record, debug included, to tb's log, which go
// test shows for a failed test or with -v. Nothing may log to it once tb has ended:
// stop whatever holds it in a cleanup.
func Logger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// logWriter writes each record the handler formats as one line of tb's log.
type logWriter struct{ tb testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

//go:build linux || freebsd || netbsd || openbsd || darwin

package xen

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func TestLockExcludesAndWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "userdata-l.3.uuid.libxl-device-changes-lock")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	l1, err := Lock(ctx, path)
	if err != nil {
		t.Fatalf("Lock(%s) = %v", path, err)
	}

	// A second Lock, even in this process, cannot get it: flock belongs to the open file.
	short, cancelShort := context.WithTimeout(ctx, 30*time.Millisecond)
	_, err = Lock(short, path)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock while held = %v, want context.DeadlineExceeded", err)
	}

	var released atomic.Bool
	type result struct {
		l            *FileLock
		err          error
		afterRelease bool
	}
	done := make(chan result, 1)
	go func() {
		l, err := Lock(ctx, path)
		done <- result{l, err, released.Load()}
	}()
	time.Sleep(20 * time.Millisecond) // let the waiter reach its poll loop; not an assertion
	released.Store(true)
	if err := l1.Unlock(); err != nil {
		t.Fatalf("Unlock = %v", err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("waiting Lock = %v", r.err)
	}
	if !r.afterRelease {
		t.Fatalf("waiting Lock returned before the first Unlock")
	}
	// The first holder unlinked the file: the waiter must hold the file path names now.
	if same, err := sameFile(r.l.f, path); err != nil || !same {
		t.Fatalf("waiter holds a file that is not %s (same=%v, err=%v)", path, same, err)
	}
	if err := r.l.Unlock(); err != nil {
		t.Fatalf("Unlock = %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Unlock, Stat(%s) = %v, want not exist (libxl unlinks on unlock)", path, err)
	}
	if err := r.l.Unlock(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Unlock = %v, want os.ErrClosed", err)
	}
}

func TestLockCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := Lock(ctx, path)
	if err != nil {
		t.Fatalf("Lock = %v", err)
	}
	defer l.Unlock()

	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := Lock(wctx, path)
		done <- err
	}()
	wcancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock after cancel = %v, want context.Canceled", err)
	}
}

func TestLockBadPath(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "missing-dir", "lock")
	if _, err := Lock(ctx, path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Lock(%s) = %v, want os.ErrNotExist", path, err)
	}
}

// lockHelperEnv makes the test binary a helper process that takes the lock named by the
// variable, prints "locked", and unlocks when its stdin closes.
const lockHelperEnv = "CDSWAP_XEN_LOCK_HELPER"

func TestLockHelperProcess(t *testing.T) {
	path := os.Getenv(lockHelperEnv)
	if path == "" {
		t.Skip("helper process for TestLockAcrossProcesses")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := Lock(ctx, path)
	if err != nil {
		t.Fatalf("helper Lock = %v", err)
	}
	os.Stdout.WriteString("locked\n")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent closes stdin
	if err := l.Unlock(); err != nil {
		t.Fatalf("helper Unlock = %v", err)
	}
}

func TestLockAcrossProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLockHelperProcess$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		stdin.Close()
		_ = cmd.Wait()
		t.Fatalf("helper said %q, %v, want \"locked\"", line, err)
	}

	short, cancelShort := context.WithTimeout(ctx, 30*time.Millisecond)
	_, err = Lock(short, path)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		stdin.Close()
		_ = cmd.Wait()
		t.Fatalf("Lock while another process holds it = %v, want context.DeadlineExceeded", err)
	}

	stdin.Close() // the helper unlocks and exits
	l, err := Lock(ctx, path)
	if err != nil {
		_ = cmd.Wait()
		t.Fatalf("Lock after the helper released = %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("helper process: %v", err)
	}
	if err := l.Unlock(); err != nil {
		t.Errorf("Unlock = %v", err)
	}
}

//go:build linux || freebsd || netbsd || openbsd || darwin

package xen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// Polling bounds for a held lock: flock has no timeout, so Lock retries LOCK_NB with a
// growing pause to let ctx end the wait.
const (
	lockPollFirst = time.Millisecond
	lockPollMax   = 50 * time.Millisecond
)

// FileLock is a lock file held with flock(LOCK_EX), compatible with libxl's userdata
// locks: xl, libvirt's libxl driver and cdswap exclude each other on the same file.
type FileLock struct {
	path string

	mu sync.Mutex // guards f
	f  *os.File   // nil once unlocked
}

// Lock takes the lock file at path as libxl__lock_domain_userdata and libxl__ev_devlock
// do: open it O_RDWR|O_CREAT 0666, flock it exclusively, then check that path still names
// the locked inode (fstat and stat agree on device and inode). A holder unlinks the file
// before it unlocks, so a waiter that wins the flock on the unlinked inode starts again.
//
// Lock waits until the lock is free or ctx ends; the wait polls with LOCK_NB, since a
// blocking flock could not be cancelled. flock locks belong to an open file description:
// two Locks of one path conflict even inside one process.
func Lock(ctx context.Context, path string) (*FileLock, error) {
	pause := lockPollFirst
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		for {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				break
			}
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			if !errors.Is(err, syscall.EWOULDBLOCK) {
				f.Close()
				return nil, fmt.Errorf("lock %s: flock: %w", path, err)
			}
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				f.Close()
				return nil, fmt.Errorf("lock %s: still held by another process or file: %w", path, ctx.Err())
			case <-t.C:
			}
			pause = min(2*pause, lockPollMax)
		}

		same, err := sameFile(f, path)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if same {
			return &FileLock{path: path, f: f}, nil
		}
		// The previous holder unlinked the file while we waited: the lock we hold is on a
		// dead inode. Closing releases it; try the file that path names now.
		f.Close()
	}
}

// sameFile reports whether path still names the file open as f; a path that no longer
// exists is not the same file.
func sameFile(f *os.File, path string) (bool, error) {
	var fst, st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &fst); err != nil {
		return false, fmt.Errorf("fstat: %w", err)
	}
	if err := syscall.Stat(path, &st); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("stat: %w", err)
	}
	return fst.Dev == st.Dev && fst.Ino == st.Ino, nil
}

// Path is the lock file's path.
func (l *FileLock) Path() string { return l.path }

// Unlock releases the lock as libxl does: unlink the file first, then unlock and close, so
// that a waiter that gets the old inode sees it is gone and retries. Unlocking twice
// returns an error wrapping os.ErrClosed.
func (l *FileLock) Unlock() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return fmt.Errorf("unlock %s: %w", l.path, os.ErrClosed)
	}
	f := l.f
	l.f = nil
	var errs []error
	if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		errs = append(errs, fmt.Errorf("flock: %w", err))
	}
	if err := f.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unlock %s: %w", l.path, err)
	}
	return nil
}

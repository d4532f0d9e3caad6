package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/cdswap/cdswap/internal/xen"
)

// lockTable holds the libxl-device-changes-lock files this worker process holds, by lock
// key (the workflow id of the swap). A flock belongs to the open file, so the table is what
// keeps a lock between the activities of one swap; it dies with the process, and a new
// worker takes the lock again at the swap's next step.
type lockTable struct {
	mu   sync.Mutex // guards held
	held map[string]*heldLock
}

// heldLock is one held device-changes lock.
type heldLock struct {
	domid uint32
	uuid  string
	lock  *xen.FileLock
}

func newLockTable() *lockTable { return &lockTable{held: map[string]*heldLock{}} }

// get returns the lock held under key, or nil.
func (t *lockTable) get(key string) *heldLock {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.held[key]
}

// holds reports whether any swap in this process holds domid's lock.
func (t *lockTable) holds(domid uint32, uuid string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, h := range t.held {
		if h.domid == domid && h.uuid == uuid {
			return true
		}
	}
	return false
}

// holderOf returns the key that holds domid's lock in this process, or "".
func (t *lockTable) holderOf(domid uint32) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var keys []string
	for k, h := range t.held {
		if h.domid == domid {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		return ""
	}
	return keys[0]
}

// put records a lock taken under key; if another one got there first (two attempts of one
// step at once), it keeps that one and reports false.
func (t *lockTable) put(key string, h *heldLock) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.held[key]; ok {
		return false
	}
	t.held[key] = h
	return true
}

// take removes the lock held under key from the table and returns it (nil if none).
func (t *lockTable) take(key string) *heldLock {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.held[key]
	delete(t.held, key)
	return h
}

// releaseAll unlocks every held lock (the worker is stopping).
func (t *lockTable) releaseAll() error {
	t.mu.Lock()
	held := t.held
	t.held = map[string]*heldLock{}
	t.mu.Unlock()
	var errs []error
	for _, h := range held {
		if err := h.lock.Unlock(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// acquire takes domid's device-changes lock under key unless this process holds it under
// key already (then held is true). Held by anyone else after LockWait, it fails with
// ErrLockBusy (retryable). As libxl does after taking it, it checks that the domain still
// exists.
func (a *Activities) acquire(ctx context.Context, key string, domid uint32) (h *heldLock, already bool, err error) {
	if key == "" {
		return nil, false, NewError(ctx, ErrBadInput, false, nil, "no lock key given: pass the workflow id as Key")
	}
	if h := a.locks.get(key); h != nil {
		if h.domid != domid {
			return nil, false, NewError(ctx, ErrBadInput, false, nil,
				"lock key %s holds the lock of domain %d, not of domain %d: one swap, one domain", key, h.domid, domid)
		}
		return h, true, nil
	}
	info, err := a.domainInfo(ctx, domid)
	if err != nil {
		return nil, false, err
	}
	p := xen.DeviceChangesLockPath(a.cfg.LibxlDir, domid, info.UUID)
	lctx, cancel := context.WithTimeout(ctx, a.cfg.LockWait)
	defer cancel()
	l, err := xen.Lock(lctx, p)
	if err != nil {
		if ctx.Err() != nil {
			return nil, false, err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			who := "another process (xl, libvirt) or another cdswap-worker"
			if other := a.locks.holderOf(domid); other != "" {
				who = fmt.Sprintf("the swap %s on this worker", other)
			}
			return nil, false, NewError(ctx, ErrLockBusy, true, err,
				"libxl's device-changes lock of domain %d (%s) is held by %s: it is retried; if it stays busy, look for a stuck `xl cd-insert` or a swap of another drive of the domain",
				domid, p, who)
		}
		if errors.Is(err, os.ErrNotExist) {
			return nil, false, fmt.Errorf("lock %s: libxl's folder is missing (--libxl-dir %s): %w", p, a.cfg.LibxlDir, err)
		}
		return nil, false, err
	}
	h = &heldLock{domid: domid, uuid: info.UUID, lock: l}
	// libxl checks the domain still exists once it holds the lock: it may have been
	// destroyed while we waited.
	if _, err := a.domainInfo(ctx, domid); err != nil {
		l.Unlock()
		return nil, false, err
	}
	if !a.locks.put(key, h) {
		l.Unlock()
		return a.locks.get(key), true, nil
	}
	return h, false, nil
}

// ensureLock is what a mutating step does first: make sure this process holds the swap's
// lock, taking it again if the worker restarted since Lock.
func (a *Activities) ensureLock(ctx context.Context, key string, domid uint32) error {
	key = lockKey(ctx, key)
	_, already, err := a.acquire(ctx, key, domid)
	if err == nil && !already {
		a.logger(ctx, NameLock).Info("Took libxl's device-changes lock again (the worker restarted since Lock)", "domid", domid, "key", key)
	}
	return err
}

// Lock takes libxl's device-changes lock for a domain (see LockInput).
func (a *Activities) Lock(ctx context.Context, in LockInput) (LockResult, error) {
	log := a.logger(ctx, NameLock, "domid", in.DomID)
	key := lockKey(ctx, in.Key)
	h, already, err := a.acquire(ctx, key, in.DomID)
	if err != nil {
		return LockResult{}, err
	}
	if !already {
		log.Info("Took libxl's device-changes lock", "path", h.lock.Path(), "key", key)
	}
	return LockResult{Meta: NewMeta(ctx), Path: h.lock.Path(), AlreadyHeld: already}, nil
}

// Unlock releases the lock taken by Lock (see UnlockInput).
func (a *Activities) Unlock(ctx context.Context, in UnlockInput) (UnlockResult, error) {
	log := a.logger(ctx, NameUnlock, "domid", in.DomID)
	key := lockKey(ctx, in.Key)
	h := a.locks.get(key)
	if h == nil {
		return UnlockResult{Meta: NewMeta(ctx)}, nil
	}
	if h.domid != in.DomID {
		return UnlockResult{}, NewError(ctx, ErrBadInput, false, nil,
			"lock key %s holds the lock of domain %d, not of domain %d: nothing was released", key, h.domid, in.DomID)
	}
	h = a.locks.take(key)
	if h == nil {
		return UnlockResult{Meta: NewMeta(ctx)}, nil
	}
	err := h.lock.Unlock()
	// The swap is over: its QMP connection need not outlive it.
	a.qmp.unpinned(h.domid, h.uuid)
	if err != nil {
		// The flock is gone with the closed file either way; only the unlink failed.
		log.Warn("Unlock of libxl's device-changes lock reported an error", "path", h.lock.Path(), "error", err)
	} else {
		log.Info("Released libxl's device-changes lock", "path", h.lock.Path(), "key", key)
	}
	return UnlockResult{Meta: NewMeta(ctx), WasHeld: true}, nil
}

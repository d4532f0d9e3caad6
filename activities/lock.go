package activities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"go.temporal.io/sdk/log"

	"github.com/cdswap/cdswap/internal/xen"
)

// lockTable holds the libxl-device-changes-lock files this worker process holds, by lock
// key (the workflow id of the swap). A flock belongs to the open file, so the table is what
// keeps a lock between the activities of one swap; it dies with the process, and a new
// worker takes the lock again at the swap's next step.
//
// Entries are leases: one that no step has touched for lease is let go (expire), so that a
// swap whose workflow was terminated without Unlock does not hold the domain forever.
type lockTable struct {
	lease time.Duration
	log   *slog.Logger
	stop  chan struct{}
	once  sync.Once

	mu   sync.Mutex // guards held and every heldLock's touched
	held map[string]*heldLock
}

// heldLock is one held device-changes lock.
type heldLock struct {
	domid   uint32
	uuid    string
	lock    *xen.FileLock
	touched time.Time // the last step of the swap that asked for it
}

func newLockTable(lease time.Duration, log *slog.Logger) *lockTable {
	t := &lockTable{lease: lease, log: log, stop: make(chan struct{}), held: map[string]*heldLock{}}
	go t.expireEvery(min(lease/4, time.Minute))
	return t
}

// expireEvery lets expired leases go until releaseAll, so that xl gets the lock back even
// if no other swap of the domain comes.
func (t *lockTable) expireEvery(every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-tick.C:
			t.expire(time.Now())
		}
	}
}

// expire unlocks the locks whose lease ended before now.
func (t *lockTable) expire(now time.Time) {
	t.mu.Lock()
	var gone []string
	var locks []*heldLock
	for k, h := range t.held {
		if now.Sub(h.touched) > t.lease {
			gone, locks = append(gone, k), append(locks, h)
			delete(t.held, k)
		}
	}
	t.mu.Unlock()
	for i, h := range locks {
		err := h.lock.Unlock()
		t.log.Warn("Let go of a swap's device-changes lock no step touched for its lease: the swap was terminated, or is stuck",
			"key", gone[i], "domid", h.domid, "lease", t.lease, "error", err)
	}
}

// get returns the lock held under key, or nil, and renews its lease.
func (t *lockTable) get(key string) *heldLock {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.held[key]
	if h != nil {
		h.touched = time.Now()
	}
	return h
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
	h.touched = time.Now()
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
	t.once.Do(func() { close(t.stop) })
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
	a.locks.expire(time.Now()) // a terminated swap's lease must not block this one
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
		_ = l.Unlock() // the domain's error is the one to report; the fd closes either way
		return nil, false, err
	}
	if !a.locks.put(key, h) {
		_ = l.Unlock() // another attempt holds the lock for this key: ours was never needed
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
	if h != nil && h.domid != in.DomID {
		return UnlockResult{}, NewError(ctx, ErrBadInput, false, nil,
			"lock key %s holds the lock of domain %d, not of domain %d: nothing was released", key, h.domid, in.DomID)
	}
	if in.RunID != "" {
		a.dropNote(ctx, in, h, log)
	}
	if h == nil {
		return UnlockResult{Meta: NewMeta(ctx)}, nil
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

// dropNote deletes the Inspect note of in's run, if the guest still has it. The guest's uuid
// comes from the lock held for the run (h), else from xenstore (a worker that took over the
// run holds none). A failure is logged only: the next run of the drive ignores the note, and
// libxl deletes it with the domain.
func (a *Activities) dropNote(ctx context.Context, in UnlockInput, h *heldLock, logger log.Logger) {
	devid, err := xen.ParseVdev(in.Vdev)
	if err != nil {
		logger.Warn("No Inspect note to delete: not a drive", "vdev", in.Vdev, "error", err)
		return
	}
	var uuid string
	if h != nil {
		uuid = h.uuid
	} else {
		info, err := a.domainInfo(ctx, in.DomID)
		if err != nil {
			logger.Info("No Inspect note to delete: the domain is gone, and libxl deletes its notes with it", "error", err)
			return
		}
		uuid = info.UUID
	}
	path := a.inspectNotePath(in.DomID, uuid, devid)
	if dropped, err := dropInspectNote(path, in.RunID); err != nil {
		logger.Warn("Inspect's note was not deleted", "note", path, "error", err)
	} else if dropped {
		logger.Info("Deleted Inspect's note", "note", path)
	}
}

package activities

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xs"
)

// qmpPool keeps one QMP connection per domain, shared by the activities of a swap, for two
// reasons:
//
//   - Only one client may talk to a domain's QMP socket at a time (a stubdom's QMP vchan
//     takes one; libxl serialises its users with userdata-l.<domid>.<uuid>.qmp-socket-lock).
//     The pool holds that lock file for as long as its connection is open, as libxl's
//     ev_qmp does.
//   - Before QEMU 9.1, an fd that was add-fd'd and not yet dup'd by a medium is closed when
//     the last QMP connection closes (monitor_fdsets_cleanup, xen-cdrom-facts §5). The set
//     AddFD or the stubdom's agent adds must live until ChangeMedium, so a connection stays
//     open across the activities of a swap: it is pinned while this process holds the
//     domain's device-changes lock, and otherwise closed once idle for Config.QMPIdle.
//
// A connection that broke is dialled again at its next use (the lock file stays held).
type qmpPool struct {
	a        *Activities
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu    sync.Mutex // guards conns and every qmpConn's users and last
	conns map[qmpKey]*qmpConn
}

// qmpKey names a domain: a domid that is reused by a new domain is another key.
type qmpKey struct {
	domid uint32
	uuid  string
}

// qmpConn is one domain's connection.
type qmpConn struct {
	key qmpKey

	setup sync.Mutex    // guards lock and c: held while they are made or closed
	lock  *xen.FileLock // the qmp-socket-lock, held while c may be open
	c     *qmp.Client   // nil until dialled
	// dialed is when c was dialled: a WaitFdset that finds the stubdom's vbd already
	// connected on a connection dialled after it started knows no client may have held
	// QEMU's monitors in between.
	dialed time.Time
	users  int       // activities using c now (pool.mu)
	last   time.Time // end of the last use (pool.mu)
	gone   bool      // closed by the reaper; a get that raced with it starts over (setup)
}

func newQMPPool(a *Activities) *qmpPool {
	p := &qmpPool{a: a, stop: make(chan struct{}), conns: map[qmpKey]*qmpConn{}}
	every := min(a.cfg.QMPIdle/2, time.Second)
	p.wg.Add(1)
	go p.reaper(every)
	return p
}

// get returns the domain's connection, taking the qmp-socket-lock and dialling as needed;
// call release when done with it.
func (p *qmpPool) get(ctx context.Context, info xen.DomainInfo) (c *qmp.Client, release func(), err error) {
	k := qmpKey{info.DomID, info.UUID}
	for {
		select {
		case <-p.stop:
			return nil, nil, errors.New("the worker's QMP connections are closed: the worker is stopping")
		default:
		}
		p.mu.Lock()
		e := p.conns[k]
		if e == nil {
			e = &qmpConn{key: k}
			p.conns[k] = e
		}
		e.users++
		p.mu.Unlock()
		release = func() {
			p.mu.Lock()
			e.users--
			e.last = time.Now()
			p.mu.Unlock()
		}
		c, err = p.setup(ctx, e)
		if errors.Is(err, errRaced) {
			release()
			continue
		}
		if err != nil {
			release()
			p.dropIfUnused(e)
			return nil, nil, err
		}
		return c, release, nil
	}
}

// errRaced: the entry was closed by the reaper between lookup and setup.
var errRaced = errors.New("qmp connection closed meanwhile")

func (p *qmpPool) setup(ctx context.Context, e *qmpConn) (*qmp.Client, error) {
	e.setup.Lock()
	defer e.setup.Unlock()
	if e.gone {
		return nil, errRaced
	}
	a := p.a
	if e.lock == nil {
		lp := xen.QMPSocketLockPath(a.cfg.LibxlDir, e.key.domid, e.key.uuid)
		lctx, cancel := context.WithTimeout(ctx, dialTimeout)
		l, err := xen.Lock(lctx, lp)
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				return nil, fmt.Errorf("QMP socket of domain %d is in use: libxl's qmp-socket-lock %s is held (xl or libvirt talks to QEMU); retried: %w", e.key.domid, lp, err)
			}
			return nil, err
		}
		e.lock = l
	}
	if e.c != nil {
		cerr := e.c.Err()
		if cerr == nil {
			return e.c, nil
		}
		a.log.Info("QMP connection was lost; dialling again", "domid", e.key.domid, "error", cerr)
		e.c.Close()
		e.c = nil
	}
	c, err := a.dialQMP(ctx, e.key.domid)
	if err != nil {
		return nil, err
	}
	e.c, e.dialed = c, time.Now()
	return c, nil
}

// Telling a dead device model from a busy or restarting one.
const (
	// deviceModelGrace is how long a QMP socket that refuses connections (or is missing) is
	// dialled again before its QEMU is called gone, when nothing else tells: a QEMU that
	// restarts its monitor refuses for a moment, a dead one for ever. A monitor busy with
	// another client does not refuse: the connection waits in its backlog.
	deviceModelGrace = 2 * time.Second
	// redialEvery is the pause between those dials.
	redialEvery = 200 * time.Millisecond
)

// dialQMP connects to the QMP socket of domain domid. A socket that refuses connections or
// is missing is ErrDeviceModelGone (permanent) as soon as the domain's recorded device model
// process is seen dead or its stub domain gone, or after deviceModelGrace of refusals; a
// domain gone from xenstore is ErrNoSuchDomain. Other failures are plain (retryable) errors.
func (a *Activities) dialQMP(ctx context.Context, domid uint32) (*qmp.Client, error) {
	sock := xen.QMPSocketPath(a.cfg.QMPDir, domid)
	var refusedSince time.Time
	for {
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		c, err := qmp.Dialer{Logger: a.log.With("domid", domid)}.Dial(dctx, sock)
		cancel()
		if err == nil {
			return c, nil
		}
		if !isRefused(err) || ctx.Err() != nil {
			return nil, fmt.Errorf("QEMU of domain %d does not answer on %s (is its device model running?): %w", domid, sock, err)
		}
		if refusedSince.IsZero() {
			refusedSince = time.Now()
		}
		if gone := a.deviceModelGone(ctx, domid, sock, err); gone != nil {
			return nil, gone
		}
		if time.Since(refusedSince) >= deviceModelGrace {
			return nil, NewError(ctx, ErrDeviceModelGone, false, err,
				"QEMU of domain %d is gone: nothing has answered on its QMP socket %s for %s (%v); the domain's device model died: destroy and restart the domain (`xl destroy`, `xl create`), then submit the change again",
				domid, sock, deviceModelGrace, errno(err))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(redialEvery):
		}
	}
}

// isRefused reports whether a dial failed because nothing listens on the socket: refused
// (a socket file with no listener, as a dead QEMU leaves it) or missing.
func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

// errno names the system error of a failed dial, for messages.
func errno(err error) string {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en.Error()
	}
	return err.Error()
}

// deviceModelGone looks, after a refused dial, for what tells a dead device model at once:
// the domain gone from xenstore (ErrNoSuchDomain), its stub domain gone, or the process
// libxl recorded in /local/domain/<domid>/image/device-model-pid (a QEMU in dom0) no longer
// running (ErrDeviceModelGone). It returns nil when none of them says so.
func (a *Activities) deviceModelGone(ctx context.Context, domid uint32, sock string, dialErr error) error {
	info, err := a.domainInfo(ctx, domid)
	if err != nil {
		if isType(err, ErrNoSuchDomain) {
			return err
		}
		return nil // xenstore trouble: let the grace period decide
	}
	if info.StubDomID != 0 {
		if _, err := a.domainInfo(ctx, info.StubDomID); isType(err, ErrNoSuchDomain) {
			return NewError(ctx, ErrDeviceModelGone, false, err,
				"QEMU of domain %d is gone: its stub domain %d no longer exists and its QMP socket %s refuses connections (%s): destroy and restart the domain, then submit the change again",
				domid, info.StubDomID, sock, errno(dialErr))
		}
		return nil
	}
	pidPath := xen.DomainPath(domid) + "/image/device-model-pid"
	var v string
	err = a.withXS(ctx, func(c *xs.Client) error {
		var err error
		v, err = c.Read(ctx, pidPath)
		return err
	})
	if err != nil {
		return nil // not recorded (or unreadable): let the grace period decide
	}
	pid, perr := strconv.Atoi(strings.TrimSpace(v))
	if perr != nil || pid <= 0 {
		return nil
	}
	if kerr := syscall.Kill(pid, 0); !errors.Is(kerr, syscall.ESRCH) {
		return nil // alive (or not ours to signal): perhaps restarting its monitor
	}
	return NewError(ctx, ErrDeviceModelGone, false, dialErr,
		"QEMU of domain %d is gone: its process %d (%s) has exited and its QMP socket %s refuses connections (%s): destroy and restart the domain (`xl destroy`, `xl create`), then submit the change again",
		domid, pid, pidPath, sock, errno(dialErr))
}

// dialedAt is when the domain's current connection was dialled; zero if it has none.
func (p *qmpPool) dialedAt(info xen.DomainInfo) time.Time {
	p.mu.Lock()
	e := p.conns[qmpKey{info.DomID, info.UUID}]
	p.mu.Unlock()
	if e == nil {
		return time.Time{}
	}
	e.setup.Lock()
	defer e.setup.Unlock()
	if e.c == nil {
		return time.Time{}
	}
	return e.dialed
}

// dropIfUnused closes an entry nobody uses whose setup failed, so that the lock file is not
// held for a connection that does not exist.
func (p *qmpPool) dropIfUnused(e *qmpConn) {
	p.mu.Lock()
	if e.users > 0 || p.conns[e.key] != e {
		p.mu.Unlock()
		return
	}
	e.setup.Lock()
	noConn := e.c == nil
	e.setup.Unlock()
	if !noConn {
		p.mu.Unlock()
		return
	}
	delete(p.conns, e.key)
	p.mu.Unlock()
	p.shut(e)
}

// shut closes an entry removed from the pool.
func (p *qmpPool) shut(e *qmpConn) {
	e.setup.Lock()
	defer e.setup.Unlock()
	e.gone = true
	if e.c != nil {
		e.c.Close()
		e.c = nil
	}
	if e.lock != nil {
		if err := e.lock.Unlock(); err != nil {
			p.a.log.Warn("Release of the qmp-socket-lock reported an error", "domid", e.key.domid, "error", err)
		}
		e.lock = nil
	}
}

// unpinned closes the domain's connection now if no swap of this process holds the domain's
// lock any more and nobody uses it: the swap that needed it is over.
func (p *qmpPool) unpinned(domid uint32, uuid string) {
	k := qmpKey{domid, uuid}
	if p.a.locks.holds(domid, uuid) {
		return
	}
	p.mu.Lock()
	e := p.conns[k]
	if e == nil || e.users > 0 {
		p.mu.Unlock()
		return
	}
	delete(p.conns, k)
	p.mu.Unlock()
	p.shut(e)
}

// reaper closes idle, unpinned connections.
func (p *qmpPool) reaper(every time.Duration) {
	defer p.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		var idle []*qmpConn
		p.mu.Lock()
		for k, e := range p.conns {
			if e.users == 0 && time.Since(e.last) >= p.a.cfg.QMPIdle && !p.a.locks.holds(k.domid, k.uuid) {
				idle = append(idle, e)
				delete(p.conns, k)
			}
		}
		p.mu.Unlock()
		for _, e := range idle {
			p.shut(e)
		}
	}
}

// close stops the reaper and closes every connection.
func (p *qmpPool) close() {
	p.stopOnce.Do(func() { close(p.stop) })
	p.wg.Wait()
	p.mu.Lock()
	all := p.conns
	p.conns = map[qmpKey]*qmpConn{}
	p.mu.Unlock()
	for _, e := range all {
		p.shut(e)
	}
}

// withQMP runs fn with the domain's QMP connection. If the connection turns out to be gone,
// fn runs once more on a new one: every activity reads QEMU's state before it acts, so this
// is safe.
func (a *Activities) withQMP(ctx context.Context, info xen.DomainInfo, fn func(c *qmp.Client) error) error {
	for try := 0; ; try++ {
		c, release, err := a.qmp.get(ctx, info)
		if err != nil {
			return err
		}
		err = fn(c)
		release()
		if !errors.Is(err, qmp.ErrClosed) || try > 0 || ctx.Err() != nil {
			return err
		}
	}
}

// withDrive runs fn with the domain's QMP connection and the drive's current query-block
// entry: every QMP step reads the drive first, and a drive QEMU does not know is
// ErrNoSuchDrive.
func (a *Activities) withDrive(ctx context.Context, d Drive, fn func(c *qmp.Client, b *qmp.BlockInfo) error) error {
	info, err := a.domainInfo(ctx, d.DomID)
	if err != nil {
		return err
	}
	id := d.DevID.QEMUID()
	return a.withQMP(ctx, info, func(c *qmp.Client) error {
		blocks, err := c.QueryBlock(ctx)
		if err != nil {
			return fmt.Errorf("query-block: %w", err)
		}
		b := findBlock(blocks, id)
		if b == nil {
			return noDrive(ctx, d, c.Version(), nil)
		}
		return fn(c, b)
	})
}

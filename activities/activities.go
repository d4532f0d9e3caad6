package activities

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/log"

	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xs"
)

// Defaults of Config.
const (
	// DefaultLockWait bounds one attempt to take a libxl lock file held by someone else; the
	// step's retry policy waits longer, between attempts.
	DefaultLockWait = time.Second
	// DefaultQMPIdle is how long a QMP connection outlives its last use when no swap of the
	// domain holds the device-changes lock in this process (see qmpPool).
	DefaultQMPIdle = 5 * time.Second
	// DefaultLockLease is how long a swap's device-changes lock outlives the last step that
	// touched it (see Config.LockLease). A running swap's steps are seconds apart (the
	// longest gaps are a 25 s fdset wait and a 30 s pause between restore rounds).
	DefaultLockLease = 10 * time.Minute
	// DefaultVBDTimeout bounds each wait for a vbd backend state, as libxl's
	// LIBXL_INIT_TIMEOUT and LIBXL_DESTROY_TIMEOUT do (10 s).
	DefaultVBDTimeout = 10 * time.Second
	// dialTimeout bounds a connection to xenstored or a QMP socket.
	dialTimeout = 5 * time.Second
)

// Config is what one host's Activities need. Host and ISORoots are required; every other
// zero field gets the default of a real dom0.
type Config struct {
	// Host is the dom0 host's name: the task queue is TaskQueue(Host), and a task naming
	// another host is refused (ErrWrongHost).
	Host string
	// XenstorePath is xenstored's socket or the xenbus device (default xs.DefaultPath():
	// $XENSTORED_PATH, /var/run/xenstored/socket or /dev/xen/xenbus).
	XenstorePath string
	// QMPDir is libxl's run folder, XEN_RUN_DIR: the qmp-libxl-<domid> sockets and the
	// empty-cdrom.<domid> files (default /var/run/xen).
	QMPDir string
	// LibxlDir is libxl's userdata folder, XEN_LIB_DIR: the domains' JSON configurations and
	// lock files (default /var/lib/xen).
	LibxlDir string
	// ISORoots are the folders media may come from. Required: New refuses an empty list. Each
	// must exist and be a folder; a root may be a symlink (it is resolved once, by New, which
	// also opens it: media are opened beneath the folder it named then). A root that is, lies
	// in or holds a system folder (/, /etc, /proc, /var/lib/xen ...) or LibxlDir or QMPDir is
	// refused unless AllowBroadRoots.
	ISORoots []string
	// RawImageRoots are ISO roots (each one of ISORoots) whose raw media may be any raw image.
	// By default (none) a raw medium must look like a CD image (an ISO 9660 or UDF volume
	// descriptor), so that a hard link or a mistyped path cannot hand a guest any file.
	RawImageRoots []string
	// AllowBroadRoots accepts ISO roots that are, lie in or hold system folders (default
	// false: refused).
	AllowBroadRoots bool
	// Logger receives what happens outside an activity (connections, idle QMP clean-up);
	// activities log through activity.GetLogger. Default: discard.
	Logger *slog.Logger

	// LockWait bounds one attempt to take a libxl lock file (default DefaultLockWait).
	LockWait time.Duration
	// QMPIdle is how long an unused QMP connection stays open (default DefaultQMPIdle).
	QMPIdle time.Duration
	// LockLease lets a swap's device-changes lock go once none of its steps has touched it
	// for this long (default DefaultLockLease): a swap whose workflow was terminated or
	// timed out never runs Unlock, and would otherwise block xl and every later swap of the
	// domain until the worker restarts. A live swap whose lock expired takes it again at its
	// next step.
	LockLease time.Duration
	// VBDTimeout bounds each wait for a vbd backend state (default DefaultVBDTimeout).
	VBDTimeout time.Duration
}

// Activities holds one dom0 host's clients (xenstore, QMP, the ISO roots, libxl's
// directories). Register a *Activities with a worker polling TaskQueue(host); the workflows
// call its methods by method value on a nil *Activities, so the method names are the activity
// type names. The contract of each method is documented on its Input type in api.go.
//
// Every exported method is an activity (a worker registers them all), which is why closing
// is the package function Close rather than a method. It is safe for concurrent use.
type Activities struct {
	cfg       Config
	roots     []root
	rootsOnce sync.Once // closes the roots' folders, once
	log       *slog.Logger

	xsMu   sync.Mutex // guards xsc and closed
	xsc    *xs.Client // the worker's one xenstore connection; nil after it broke, until redialled
	closed bool       // Close was called: nothing is dialled any more

	locks *lockTable
	qmp   *qmpPool
}

// New checks cfg (the ISO roots exist and are folders), connects to xenstored and checks
// that it answers, and returns the activities of cfg.Host. ctx bounds the checks only.
func New(ctx context.Context, cfg Config) (*Activities, error) {
	if cfg.Host == "" {
		return nil, errors.New("no host name: give the dom0 host's name (--host), the one operators use with cdswap")
	}
	if len(cfg.ISORoots) == 0 {
		return nil, errors.New("no ISO roots: give at least one folder media may be served from (--iso-root /srv/isos)")
	}
	if cfg.XenstorePath == "" {
		cfg.XenstorePath = xs.DefaultPath()
	}
	if cfg.QMPDir == "" {
		cfg.QMPDir = xen.DefaultRunDir
	}
	if cfg.LibxlDir == "" {
		cfg.LibxlDir = xen.DefaultLibDir
	}
	roots, err := resolveRoots(cfg.ISORoots)
	if err != nil {
		return nil, err
	}
	if err := allowRawImages(roots, cfg.RawImageRoots); err != nil {
		closeRoots(roots)
		return nil, err
	}
	if !cfg.AllowBroadRoots {
		if err := checkBroadRoots(roots, cfg.LibxlDir, cfg.QMPDir); err != nil {
			closeRoots(roots)
			return nil, err
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LockWait <= 0 {
		cfg.LockWait = DefaultLockWait
	}
	if cfg.QMPIdle <= 0 {
		cfg.QMPIdle = DefaultQMPIdle
	}
	if cfg.LockLease <= 0 {
		cfg.LockLease = DefaultLockLease
	}
	if cfg.VBDTimeout <= 0 {
		cfg.VBDTimeout = DefaultVBDTimeout
	}
	a := &Activities{cfg: cfg, roots: roots, log: cfg.Logger.With("host", cfg.Host)}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := xs.Dial(dctx, cfg.XenstorePath)
	if err != nil {
		closeRoots(roots)
		return nil, fmt.Errorf("xenstore at %s: %w", cfg.XenstorePath, err)
	}
	if _, err := c.Directory(dctx, "/local/domain"); err != nil {
		c.Close()
		closeRoots(roots)
		return nil, fmt.Errorf("xenstore at %s does not answer (is xenstored running? --xenstore names its socket): %w", cfg.XenstorePath, err)
	}
	for _, d := range []struct{ flag, dir string }{{"--qmp-dir", cfg.QMPDir}, {"--libxl-dir", cfg.LibxlDir}} {
		if fi, err := os.Stat(d.dir); err != nil || !fi.IsDir() {
			c.Close()
			closeRoots(roots)
			return nil, fmt.Errorf("libxl folder %s is not a folder (%w): is this a Xen dom0? point %s at libxl's folder", d.dir, errOrNotDir(err), d.flag)
		}
	}
	a.xsc = c
	a.locks = newLockTable(cfg.LockLease, a.log)
	a.qmp = newQMPPool(a)
	return a, nil
}

func errOrNotDir(err error) error {
	if err != nil {
		return err
	}
	return errors.New("not a directory")
}

// Close releases everything a's activities hold: the libxl locks of running swaps (a new
// worker takes them again), the QMP connections and the xenstore connection; an activity
// that runs later fails. It is a function, not a method, so that a worker registering a does
// not expose it as an activity. Closing twice is fine.
func Close(a *Activities) error {
	var errs []error
	errs = append(errs, a.locks.releaseAll())
	a.qmp.close()
	a.xsMu.Lock()
	a.closed = true
	if a.xsc != nil {
		if err := a.xsc.Close(); err != nil && !errors.Is(err, xs.ErrClosed) {
			errs = append(errs, err)
		}
		a.xsc = nil
	}
	a.xsMu.Unlock()
	a.rootsOnce.Do(func() { closeRoots(a.roots) })
	return errors.Join(errs...)
}

// xs returns the worker's xenstore connection, dialling a new one if the last one broke.
func (a *Activities) xs(ctx context.Context) (*xs.Client, error) {
	a.xsMu.Lock()
	defer a.xsMu.Unlock()
	if a.xsc != nil {
		return a.xsc, nil
	}
	if a.closed {
		return nil, errors.New("the worker's activities are closed: the worker is stopping")
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := xs.Dial(dctx, a.cfg.XenstorePath)
	if err != nil {
		return nil, fmt.Errorf("reconnect to xenstore: %w", err)
	}
	a.log.Info("Reconnected to xenstore", "path", a.cfg.XenstorePath)
	a.xsc = c
	return c, nil
}

// withXS runs fn with the xenstore connection. If the connection turns out to be gone
// (xenstored restarted), it is dropped and fn runs once more on a new one: every activity is
// idempotent, so running its xenstore part again is safe.
func (a *Activities) withXS(ctx context.Context, fn func(c *xs.Client) error) error {
	for try := 0; ; try++ {
		c, err := a.xs(ctx)
		if err != nil {
			return err
		}
		err = fn(c)
		if !errors.Is(err, xs.ErrClosed) || try > 0 || ctx.Err() != nil {
			return err
		}
		a.xsMu.Lock()
		if a.xsc == c {
			a.xsc = nil
			c.Close()
		}
		a.xsMu.Unlock()
	}
}

// logger is the activity's logger with the keys every step logs.
func (a *Activities) logger(ctx context.Context, step string, kv ...any) log.Logger {
	l := log.With(activity.GetLogger(ctx), "host", a.cfg.Host, "step", step)
	if len(kv) > 0 {
		l = log.With(l, kv...)
	}
	return l
}

// driveLogger is logger with the drive's keys.
func (a *Activities) driveLogger(ctx context.Context, step string, d Drive) log.Logger {
	return a.logger(ctx, step, "domid", d.DomID, "vdev", d.Vdev, "devid", d.DevID)
}

// checkHost refuses a task meant for another host's worker.
func (a *Activities) checkHost(ctx context.Context, host string) error {
	if host != a.cfg.Host {
		return NewError(ctx, ErrWrongHost, false, nil,
			"this cdswap-worker serves host %q, but the request names host %q: start cdswap-worker with --host %s on that host, or fix the host name",
			a.cfg.Host, host, host)
	}
	return nil
}

// domainInfo reads a domain's info, mapping a missing domain to ErrNoSuchDomain.
func (a *Activities) domainInfo(ctx context.Context, domid uint32) (xen.DomainInfo, error) {
	var info xen.DomainInfo
	err := a.withXS(ctx, func(c *xs.Client) error {
		var err error
		info, err = xen.ReadDomainInfo(ctx, c, domid)
		return err
	})
	if errors.Is(err, xen.ErrNoSuchDomain) {
		return info, NewError(ctx, ErrNoSuchDomain, false, err,
			"domain %d does not exist on host %s (it was destroyed, or the domid is wrong): check `xl list` and submit the change again", domid, a.cfg.Host)
	}
	if err != nil {
		return info, fmt.Errorf("read domain %d: %w", domid, err)
	}
	if info.UUID == "" {
		return info, NewError(ctx, ErrNoSuchDomain, false, nil,
			"domain %d has no uuid in xenstore (/local/domain/%d/vm): it is being created or destroyed, or was not made by libxl", domid, domid)
	}
	return info, nil
}

// checkDrive refuses a Drive that cannot have come from Inspect: its devid must be the one
// libxl gives its vdev.
func checkDrive(ctx context.Context, d Drive, want ...Kind) error {
	if d.DomID == 0 {
		return NewError(ctx, ErrBadInput, false, nil, "drive %s has domid 0: pass the Drive Inspect returned", d.Vdev)
	}
	id, err := parseVdev(ctx, d.Vdev)
	switch {
	case err != nil:
		return err
	case id != d.DevID:
		return NewError(ctx, ErrBadInput, false, nil, "drive %s has devid %d, but %s is devid %d: pass the Drive Inspect returned", d.Vdev, d.DevID, d.Vdev, id)
	case d.Kind == KindStubdom && d.StubDomID == 0:
		return NewError(ctx, ErrBadInput, false, nil, "drive %s of domain %d is a stubdom drive without a stubdom id: pass the Drive Inspect returned", d.Vdev, d.DomID)
	}
	if len(want) > 0 {
		for _, k := range want {
			if d.Kind == k {
				return nil
			}
		}
		return NewError(ctx, ErrBadInput, false, nil, "this step is for %v guests, but drive %s of domain %d is of kind %q", want, d.Vdev, d.DomID, d.Kind)
	}
	return nil
}

// diskDom is the domain whose vbd carries the drive: the stubdom for a stubdom guest.
func (d Drive) diskDom() uint32 {
	if d.Kind == KindStubdom {
		return d.StubDomID
	}
	return d.DomID
}

// domainName names the drive's domain in messages.
func (d Drive) domainName() string {
	if d.Name != "" {
		return fmt.Sprintf("%s (%d)", d.Name, d.DomID)
	}
	return fmt.Sprint(d.DomID)
}

// lockKey returns the lock key of a step: the Key given, else the workflow id (which is what
// the workflows give).
func lockKey(ctx context.Context, key string) string {
	if key != "" || !activity.IsActivity(ctx) {
		return key
	}
	return activity.GetInfo(ctx).WorkflowExecution.ID
}

// logWith adds key-value pairs to a logger.
func logWith(l log.Logger, kv ...any) log.Logger { return log.With(l, kv...) }

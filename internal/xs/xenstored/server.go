package xenstored

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cdswap/cdswap/internal/xs"
)

// ErrServerClosed is returned by Serve when it is called after Close.
var ErrServerClosed = errors.New("xenstored: server closed")

// defaultMaxQueued is the default Config.MaxQueuedBytes.
const defaultMaxQueued = 16 << 20

// Config configures a Server. The zero value works.
type Config struct {
	// Logger receives connection-level events (a client dropped for an oversized frame, a
	// client dropped for not reading its replies). Nil discards them.
	Logger *slog.Logger
	// Faults is the initial fault injection; the zero value injects nothing. SetFaults
	// changes it at run time.
	Faults Faults
	// FaultSeed seeds the random source that picks which commits fail, so a test run is
	// repeatable. Zero means 1.
	FaultSeed uint64
	// MaxQueuedBytes caps what may wait in one connection's output queue (replies and
	// watch events the client has not read yet). A client over the cap is dropped, as
	// cxenstored drops a domain over its memory quota. Zero means 16 MiB.
	MaxQueuedBytes int
}

// Faults makes a server misbehave on purpose, to test clients' error handling.
type Faults struct {
	// AgainRatio is the share (0 to 1) of TRANSACTION_END "T" requests that would commit but
	// are answered EAGAIN instead, leaving the store unchanged, as if another writer had
	// won. Values outside 0..1 are clamped; NaN counts as 0.
	AgainRatio float64
}

// Stats are counters since New.
type Stats struct {
	Connections     uint64 // connections accepted
	OpenConnections int    // connections open now
	Requests        uint64 // requests handled, wire and in-process
	Commits         uint64 // TRANSACTION_END "T" that committed
	Aborts          uint64 // TRANSACTION_END "F"
	Conflicts       uint64 // TRANSACTION_END "T" answered EAGAIN, injected ones included
	InjectedAgain   uint64 // of Conflicts, those caused by Faults.AgainRatio
	WatchEvents     uint64 // WATCH_EVENT frames queued for delivery
	Dropped         uint64 // connections dropped for a protocol violation or a full queue
}

// Server is an in-memory xenstored. It is safe for concurrent use.
type Server struct {
	log       *slog.Logger
	maxQueued int

	// mu serialises every request and guards the store (st), every connection's
	// transactions and watches, introduced, and the sets of listeners and connections,
	// plus closed and nextConn.
	mu        sync.Mutex
	st        *store
	conns     map[*conn]struct{}
	listeners map[net.Listener]struct{}
	closed    bool
	nextConn  uint64
	// introduced holds the domains IS_DOMAIN_INTRODUCED answers "T" for (dom0 always).
	introduced map[uint32]bool

	// faultMu guards faults and rng.
	faultMu sync.Mutex
	faults  Faults
	rng     *rand.Rand

	wg sync.WaitGroup // connection goroutines

	connections, requests, commits, aborts, conflicts, injected, watchEvents, dropped atomic.Uint64
}

// New returns a server with a fresh store. Call Serve to accept clients.
func New(cfg Config) *Server {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	seed := cfg.FaultSeed
	if seed == 0 {
		seed = 1
	}
	maxQueued := cfg.MaxQueuedBytes
	if maxQueued <= 0 {
		maxQueued = defaultMaxQueued
	}
	s := &Server{
		log:        logger,
		maxQueued:  maxQueued,
		st:         newStore(),
		conns:      make(map[*conn]struct{}),
		listeners:  make(map[net.Listener]struct{}),
		introduced: map[uint32]bool{0: true},
		rng:        rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
	s.SetFaults(cfg.Faults)
	return s
}

// Listen opens a unix listener at path. A socket file left behind by a server that is gone
// is removed first; a socket some server still answers on, or a file that is not a
// socket, is an error.
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen %s: the file exists and is not a socket; remove it or pick another path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: a server is already answering on this socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return ln, nil
}

// Serve accepts clients on ln until ln is closed or Close is called, and then returns nil.
// It may be called for several listeners at once; all share the store.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 0
		s.serveConn(nc)
	}
}

// Close stops every listener given to Serve and closes every connection. It waits for the
// connections' goroutines to finish. The store stays readable through the in-process
// helpers.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	lns := make([]net.Listener, 0, len(s.listeners))
	for ln := range s.listeners {
		lns = append(lns, ln)
	}
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	var errs []error
	for _, ln := range lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for _, c := range cs {
		c.close()
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// SetFaults changes the fault injection; safe to call at any time.
func (s *Server) SetFaults(f Faults) {
	r := f.AgainRatio
	switch {
	case math.IsNaN(r) || r < 0:
		r = 0
	case r > 1:
		r = 1
	}
	s.faultMu.Lock()
	s.faults = Faults{AgainRatio: r}
	s.faultMu.Unlock()
}

// injectAgain decides whether a good commit fails anyway.
func (s *Server) injectAgain() bool {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	r := s.faults.AgainRatio
	return r > 0 && s.rng.Float64() < r
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	open := len(s.conns)
	s.mu.Unlock()
	return Stats{
		Connections:     s.connections.Load(),
		OpenConnections: open,
		Requests:        s.requests.Load(),
		Commits:         s.commits.Load(),
		Aborts:          s.aborts.Load(),
		Conflicts:       s.conflicts.Load(),
		InjectedAgain:   s.injected.Load(),
		WatchEvents:     s.watchEvents.Load(),
		Dropped:         s.dropped.Load(),
	}
}

// In-process helpers, for the simulator: the same semantics as the wire operations of a dom0
// connection outside a transaction (relative paths are below /local/domain/0), and they fire
// watches. Errors are *xs.Error with the sentinel a client would get.

// Read returns the value at path.
func (s *Server) Read(path string) (string, error) {
	var out []byte
	err := s.local(xs.OpRead, path, false, func(v view, p string) error {
		b, err := read(v, p)
		out = b
		return err
	})
	return string(out), err
}

// Write sets the value at path, creating missing parents.
func (s *Server) Write(path, value string) error {
	return s.local(xs.OpWrite, path, false, func(v view, p string) error {
		write(v, p, []byte(value))
		return nil
	})
}

// Mkdir makes sure path exists.
func (s *Server) Mkdir(path string) error {
	return s.local(xs.OpMkdir, path, false, func(v view, p string) error {
		mkdir(v, p)
		return nil
	})
}

// Rm removes path and everything below it; an absent path is fine if its parent exists.
func (s *Server) Rm(path string) error {
	return s.local(xs.OpRm, path, false, func(v view, p string) error { return rm(v, p) })
}

// Directory lists the children of path, in creation order.
func (s *Server) Directory(path string) ([]string, error) {
	var out []string
	err := s.local(xs.OpDirectory, path, false, func(v view, p string) error {
		d, err := directory(v, p)
		out = d
		return err
	})
	return out, err
}

// GetPerms returns the permissions of path (or of a special node such as "@releaseDomain").
func (s *Server) GetPerms(path string) ([]xs.Perm, error) {
	var out []xs.Perm
	err := s.local(xs.OpGetPerms, path, true, func(v view, p string) error {
		ps, err := getPerms(v, p)
		out = ps
		return err
	})
	return out, err
}

// SetPerms replaces the permissions of path; the first entry names the owner.
func (s *Server) SetPerms(path string, perms []xs.Perm) error {
	if err := checkPerms(perms); err != nil {
		return &xs.Error{Op: xs.OpSetPerms, Path: path, Err: err}
	}
	return s.local(xs.OpSetPerms, path, true, func(v view, p string) error { return setPerms(v, p, perms) })
}

// IntroduceDomain marks domid as introduced (IS_DOMAIN_INTRODUCED answers "T") and fires
// @introduceDomain, as xenstored does when the toolstack introduces a new domain.
func (s *Server) IntroduceDomain(domid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.introduced[domid] = true
	s.fireLocked([]event{{path: specialIntroduce}})
}

// ReleaseDomain marks domid as gone and fires @releaseDomain, as xenstored does when a
// domain dies.
func (s *Server) ReleaseDomain(domid uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if domid != 0 {
		delete(s.introduced, domid)
	}
	s.fireLocked([]event{{path: specialRelease}})
}

func checkPerms(perms []xs.Perm) error {
	if len(perms) == 0 {
		return fmt.Errorf("%w: empty permission list", xs.ErrInvalid)
	}
	for _, p := range perms {
		switch p.Access {
		case xs.AccessNone, xs.AccessRead, xs.AccessWrite, xs.AccessBoth:
		default:
			return fmt.Errorf("%w: permission %q has unknown access %q", xs.ErrInvalid, p.String(), p.Access)
		}
	}
	return nil
}

// local runs one in-process operation on the committed tree and fires its watches.
func (s *Server) local(op xs.Op, path string, special bool, fn func(v view, p string) error) error {
	s.requests.Add(1)
	p, err := canonical(path, special)
	if err != nil {
		return &xs.Error{Op: op, Path: path, Err: err}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := &direct{st: s.st}
	if err := fn(d, p); err != nil {
		return &xs.Error{Op: op, Path: path, Err: err}
	}
	s.fireLocked(d.events)
	return nil
}

// domainPath is GET_DOMAIN_PATH's answer.
func domainPath(domid uint64) string {
	return "/local/domain/" + strconv.FormatUint(domid, 10)
}

package qmptest

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/qmp"
)

// DefaultCDROM is the drive a zero Options gives the fake: libxl's id for hdc (devid 5632).
const DefaultCDROM = "ide-5632"

// ErrServerClosed is returned by Listen after Close.
var ErrServerClosed = errors.New("qmptest: server closed")

// Options configures a fake QEMU. The zero value is a running QEMU 7.2.0 with one empty,
// unlocked ide-cd drive "ide-5632".
type Options struct {
	// Version is what the greeting and query-version report, and selects version-dependent
	// behaviour (see the package doc). Zero means 7.2.0, what Debian 12 ships.
	Version qmp.Version
	// CDROMs are the ide-cd drives, by id; each is both the -drive id (query-block "device")
	// and the -device id ("qdev"), as libxl names them. Nil means one drive, DefaultCDROM.
	CDROMs []string
	// Paused starts the VM paused (query-status "paused", as after stop; a QEMU started with
	// -S would say "prelaunch"), which changes when remove-fd closes fds.
	Paused bool
	// StrictHostDevice refuses format host_device (and host_cdrom) on a file that is neither
	// a block nor a character device, with QEMU's error. Off by default, so that a test can
	// stand a regular file in for a stubdom's /dev/xvdc.
	StrictHostDevice bool
	// GuestUnlocksOnEject makes the simulated guest answer an eject request on a locked tray
	// (sent by a refused, unforced eject or change) by unlocking the tray and opening it after
	// this delay, the way a Linux guest's udev does; the medium stays inserted until the next
	// eject. Zero means the guest never answers.
	GuestUnlocksOnEject time.Duration
	// Logger receives debug logs of connections, commands and faults. Nil discards them.
	Logger *slog.Logger
	// OnCall, when set, sees every command the fake dispatched past capabilities
	// negotiation (a failed or unknown one too, with its error), after it ran and before its
	// reply is sent: a count kept from it is up to date before the client can act on the
	// reply. It is called from the connection's goroutine, without the fake's lock, and must
	// not block.
	OnCall func(Call)
}

// Call is a command the fake dispatched, as Options.OnCall sees it.
type Call struct {
	// Command is the command's name: "eject", "blockdev-change-medium", ...
	Command string
	// Drive is the drive the command named by its "id" or "device" argument ("" if none).
	Drive string
	// Err is the error replied, nil when the command succeeded.
	Err error
}

// Server is a fake QEMU: the QMP monitors, the ide-cd drives and the fd sets they share.
// All its methods are safe for concurrent use.
type Server struct {
	opts    Options
	version qmp.Version
	log     *slog.Logger
	cmds    map[string]command
	// newFdsetRules is QEMU ≥ 9.1's fd set lifetime (see the package doc).
	newFdsetRules bool

	done chan struct{} // closed by Close
	wg   sync.WaitGroup

	mu       sync.Mutex // guards every field below, the drives and fd sets, and conn.negotiated
	closed   bool
	monitors []*monitor
	conns    map[*conn]struct{}
	refcount int // open monitor connections: QEMU's mon_refcount
	running  bool
	drives   []*drive
	fdsets   []*fdset // ascending fdset-id, like QEMU's mon_fdsets
	nodeSeq  int
	timers   map[*time.Timer]struct{}
	cmdLog   []string
	faults   faults
}

// faults are the scripted misbehaviours, by command name.
type faults struct {
	failNext   map[string][]*qerror
	dropAfter  map[string]int
	dropBefore map[string]int
	delay      map[string]time.Duration
}

// monitor is one QMP socket (a -qmp unix:...,server=on,wait=off chardev).
type monitor struct {
	path string
	ln   *net.UnixListener
}

// New returns a fake QEMU with no monitor yet; add them with Listen.
func New(opts Options) *Server {
	v := opts.Version
	if v == (qmp.Version{}) {
		v = qmp.Version{Major: 7, Minor: 2, Micro: 0}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ids := opts.CDROMs
	if ids == nil {
		ids = []string{DefaultCDROM}
	}
	s := &Server{
		opts:          opts,
		version:       v,
		log:           log,
		newFdsetRules: v.AtLeast(9, 1, 0),
		done:          make(chan struct{}),
		conns:         map[*conn]struct{}{},
		running:       !opts.Paused,
		timers:        map[*time.Timer]struct{}{},
		faults: faults{
			failNext:   map[string][]*qerror{},
			dropAfter:  map[string]int{},
			dropBefore: map[string]int{},
			delay:      map[string]time.Duration{},
		},
	}
	s.cmds = s.commandTable()
	for _, id := range ids {
		if id == "" || s.drive(id) != nil {
			continue
		}
		s.drives = append(s.drives, &drive{id: id})
	}
	return s
}

// Listen adds a QMP monitor on a unix socket at path, removing a stale socket file first as
// QEMU does. Like a QEMU chardev socket server, each monitor serves one connection at a
// time: a second client's connect succeeds but it gets its greeting only when the first
// client has gone. All monitors share the drives, the run state and the fd sets.
func (s *Server) Listen(path string) error {
	if len(path) >= 108 {
		return fmt.Errorf("listen %s: unix socket path is %d bytes, the limit is 107", path, len(path))
	}
	s.mu.Lock()
	for _, m := range s.monitors {
		if m.path == path {
			s.mu.Unlock()
			return fmt.Errorf("listen %s: this server already has a monitor there", path)
		}
	}
	s.mu.Unlock()
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("listen %s: %w", path, err)
	}
	m := &monitor{path: path, ln: ln}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.monitors = append(s.monitors, m)
	s.wg.Add(1)
	s.mu.Unlock()
	go s.acceptLoop(m)
	return nil
}

// Close stops every monitor, drops every connection, stops the simulated guest and closes
// every descriptor the fake holds. It waits for all of the fake's goroutines to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for t := range s.timers {
		if t.Stop() {
			s.wg.Done()
		}
	}
	clear(s.timers)
	monitors := slices.Clone(s.monitors)
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	var errs []error
	for _, m := range monitors {
		if err := m.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close monitor %s: %w", m.path, err))
		}
	}
	for _, c := range conns {
		c.uc.Close()
	}
	s.wg.Wait()

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.drives {
		if d.med != nil {
			d.med.f.Close()
			d.med = nil
		}
	}
	for _, set := range s.fdsets {
		for _, f := range set.fds {
			f.f.Close()
		}
	}
	s.fdsets = nil
	return errors.Join(errs...)
}

// Start is New plus Listen on a socket in a fresh temporary directory, with Close and the
// directory's removal registered as t's cleanup. It returns the socket path.
func Start(t testing.TB, opts Options) (*Server, string) {
	t.Helper()
	// t.TempDir() paths can exceed the 107-byte limit of a unix socket path.
	dir, err := os.MkdirTemp("", "qmptest")
	if err != nil {
		t.Fatalf("qmptest.Start: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := New(opts)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("qmptest: close: %v", err)
		}
	})
	path := filepath.Join(dir, "qmp.sock")
	if err := s.Listen(path); err != nil {
		t.Fatalf("qmptest.Start: %v", err)
	}
	return s, path
}

func (s *Server) acceptLoop(m *monitor) {
	defer s.wg.Done()
	for {
		uc, err := m.ln.AcceptUnix()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure such as EMFILE: back off instead of spinning.
			s.log.Warn("qmptest accept", "monitor", m.path, "err", err)
			select {
			case <-s.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		s.serve(m, uc)
	}
}

// BlockState is a drive's state, for assertions.
type BlockState struct {
	TrayOpen bool
	Locked   bool
	// Inserted reports a medium in the drive (with the tray open or closed).
	Inserted bool
	// File is the filename the medium was opened with, as query-block's inserted.file shows
	// it: "/dev/fdset/3" or a path.
	File string
	// Format is the medium's format driver (inserted.drv): raw, qcow2, host_device, ...
	Format string
	// Path is what the descriptor the fake holds for the medium points at
	// (/proc/self/fd/N), so a test can tell which file went in through an fd set.
	Path string
	// RO reports a read-only medium.
	RO bool
	// FromFdset reports a medium opened through /dev/fdset/FdsetID.
	FromFdset bool
	FdsetID   int64
}

// Block returns the state of drive id, and false when there is no such drive.
func (s *Server) Block(id string) (BlockState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.drive(id)
	if d == nil {
		return BlockState{}, false
	}
	st := BlockState{TrayOpen: d.trayOpen, Locked: d.locked}
	if m := d.med; m != nil {
		st.Inserted = true
		st.File, st.Format, st.RO = m.filename, m.drv, m.ro
		st.Path = fdPath(m.fd)
		st.FromFdset, st.FdsetID = m.fromFdset, m.fdset
	}
	return st, true
}

// Fdsets returns the fd sets as query-fdsets lists them (highest fdset-id first, each set's
// descriptors oldest first).
func (s *Server) Fdsets() []qmp.FdsetInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []qmp.FdsetInfo{}
	for i := len(s.fdsets) - 1; i >= 0; i-- {
		set := s.fdsets[i]
		info := qmp.FdsetInfo{FdsetID: set.id, FDs: []qmp.FdsetFD{}}
		for j := len(set.fds) - 1; j >= 0; j-- {
			f := set.fds[j]
			info.FDs = append(info.FDs, qmp.FdsetFD{FD: f.num, Opaque: f.opaque})
		}
		out = append(out, info)
	}
	return out
}

// HeldFiles returns what every descriptor the fake holds points at (fd set members and
// inserted media, not a connection's received-but-unused descriptor), so a test can check
// that a file has been let go.
func (s *Server) HeldFiles() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, set := range s.fdsets {
		for _, f := range set.fds {
			out = append(out, fdPath(int(f.num)))
		}
	}
	for _, d := range s.drives {
		if d.med != nil {
			out = append(out, fdPath(d.med.fd))
		}
	}
	slices.Sort(out)
	return out
}

func fdPath(fd int) string {
	p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return ""
	}
	return p
}

// Insert puts a medium into drive id without QMP and without events, as -drive file=...
// does at boot. file may be a path or /dev/fdset/N; format "" probes (qcow2 or raw). Any
// medium already there is dropped.
func (s *Server) Insert(id, file, format string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.drive(id)
	if d == nil {
		return fmt.Errorf("insert %s: no drive %q", file, id)
	}
	m, qe := s.openMedium(file, format, d.rw)
	if qe != nil {
		return fmt.Errorf("insert %s into %s: %w", file, id, qe)
	}
	s.dropMedium(d)
	d.med, d.trayOpen = m, false
	return nil
}

// LockTray sets the guest's lock on drive id's tray (ATAPI PREVENT ALLOW MEDIUM REMOVAL). An
// unknown id is ignored.
func (s *Server) LockTray(id string, locked bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.drive(id); d != nil {
		d.locked = locked
		return
	}
	s.log.Warn("qmptest LockTray: no such drive", "id", id)
}

// SetRunning stops or resumes the VM as stop and cont do, with their STOP and RESUME events.
func (s *Server) SetRunning(running bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setRunning(running)
}

// FailNext makes the next call of command fail with this error class and description,
// without any effect. Calls queue: each FailNext fails one more call.
func (s *Server) FailNext(command, class, desc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.failNext[command] = append(s.faults.failNext[command], &qerror{class, desc})
}

// DropAfter makes the fake close the connection right after sending the reply to the next
// call of command (the command takes effect). Calls add up.
func (s *Server) DropAfter(command string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.dropAfter[command]++
}

// DropBeforeReply makes the fake run the next call of command and then close the
// connection without replying, so the client cannot know whether it took effect. Calls add
// up.
func (s *Server) DropBeforeReply(command string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.dropBefore[command]++
}

// Delay makes every call of command wait d before it runs and replies (0 removes the
// delay). The wait holds up that connection only, as a slow command holds up its QEMU
// monitor.
func (s *Server) Delay(command string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.faults.delay, command)
		return
	}
	s.faults.delay[command] = d
}

// Commands returns the names of the well-formed commands received so far on every monitor,
// in order, including refused ones.
func (s *Server) Commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.cmdLog)
}

// Connections returns the number of open monitor connections (QEMU's mon_refcount).
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refcount
}

// afterFunc runs f after d with s.mu held, unless Close comes first. Callers hold s.mu.
func (s *Server) afterFunc(d time.Duration, f func()) {
	if s.closed {
		return
	}
	s.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		defer s.wg.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.timers[t]; !ok {
			return // Close got here first
		}
		delete(s.timers, t)
		f()
	})
	s.timers[t] = struct{}{}
}

var _ io.Closer = (*Server)(nil)

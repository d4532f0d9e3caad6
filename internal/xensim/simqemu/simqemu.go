// Package simqemu runs a guest's QEMU for the simulated Xen host: a real qemu-system-x86_64
// with the cdrom drives and QMP monitors libxl gives a qemu-xen device model, or the
// scriptable fake from qmptest when QEMU is not installed or a test needs faults that only
// the fake can make (a guest that locks its tray).
//
// A real QEMU is started by qemuproc, with TCG, a few MiB of guest memory and no disk to
// boot (SeaBIOS finds nothing and halts), so an idle one costs little CPU. Its QMP monitors
// listen on private sockets; the public paths given in Config.Monitors are served by an
// in-process proxy that forwards bytes and SCM_RIGHTS file descriptors both ways, and that
// understands enough of QMP to drop a connection right after, or instead of, the reply to a
// chosen command (DropAfter, DropBeforeReply), as a crashing client or a flaky stubdom vchan
// would. Such a drop has QEMU's own consequences: with no other monitor client left, QEMU
// 7.2 closes the fds of its fdsets that nothing uses yet.
package simqemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"time"

	"github.com/cdswap/cdswap/internal/qmp/qmptest"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/simqemu/qemuproc"
)

// Mode chooses between a real QEMU and the fake.
type Mode string

// Modes.
const (
	ModeAuto Mode = "auto" // real when qemu-system-x86_64 is installed, else fake; "" means auto
	ModeReal Mode = "real" // qemu-system-x86_64; Start fails when it is missing
	ModeFake Mode = "fake" // qmptest's fake QEMU
)

// DefaultBinary is the QEMU a real QEMU runs, looked up in $PATH.
const DefaultBinary = qemuproc.DefaultBinary

// DefaultCDROM is the drive a Config without CDROMs gets: hdc, the usual HVM cdrom, whose
// QEMU id is ide-5632 (the same default as qmptest's).
const DefaultCDROM xen.DevID = 5632

// Medium is a drive's medium at boot, as libxl puts it on QEMU's command line
// (-drive ...,file=<Path>,format=<Format>).
type Medium = qemuproc.Medium

// Config says what QEMU to start. Its zero value starts an auto-mode QEMU for domain 0 with
// one empty cdrom (hdc) and no public monitor.
type Config struct {
	Mode   Mode   // default ModeAuto
	DomID  uint32 // the guest's domid, for names and logs
	Name   string // the guest's name (QEMU -name); default "dom<DomID>"
	Binary string // real QEMU only; default DefaultBinary from $PATH

	// CDROMs are the emulated cdrom drives; default [DefaultCDROM]. Each gets
	//	-drive if=none,readonly=on,id=ide-<devid>[,file=<path>,format=<fmt>]
	//	-device ide-cd,id=ide-<devid>,drive=ide-<devid>,bus=ide.<disk/2>,unit=<disk%2>
	// as libxl__build_device_model_args_new writes them, where disk is the IDE disk index
	// of the devid (hdc: 2, so bus ide.1 unit 0). Only disks 0-3 exist on a PC's two IDE buses.
	CDROMs []xen.DevID

	// Monitors are the QMP socket paths to serve, each one monitor that takes one client at a
	// time, as QEMU's are: [0] libxl's qmp-libxl-<domid>, [1] the stubdom agent's (stubdom
	// guests). All share one QEMU, so fdsets added on one are seen on the other.
	Monitors []string

	// InitialMedium is the medium in each drive at boot; drives not in it are empty.
	InitialMedium map[xen.DevID]Medium

	Paused bool // start with the VM paused (real QEMU: -S), as a domain being created is

	// StrictHostDevice makes the fake refuse format host_device on a file that is not a
	// block device, as real QEMU always does.
	StrictHostDevice bool

	Logger *slog.Logger // nil = discard

	// OnCall, when set, sees every command QEMU answered on the monitors, with its drive and
	// whether it succeeded, before the reply reaches the client: the fake reports its own
	// dispatch, a real QEMU's replies are read by the proxy in front of its monitors. A count
	// kept from it is thus up to date before the client can act on the reply. It must not
	// block.
	OnCall func(Call)

	// WorkDir holds a real QEMU's log (qemu-dm-<Name>.log, kept after Stop) and pidfile;
	// default a temporary directory that Stop removes.
	WorkDir string
}

// Call is a command QEMU answered, as Config.OnCall sees it.
type Call struct {
	// Command is the command's name: "eject", "blockdev-change-medium", ...
	Command string
	// Drive is the drive the command named by its "id" or "device" argument ("" if none).
	Drive string
	// OK reports a success ("return"); false is an error reply.
	OK bool
}

// ErrNeedsFake is returned for a fault that a real QEMU cannot make.
var ErrNeedsFake = errors.New("needs the fake QEMU")

// ErrNoQEMU reports that ModeReal was asked for and QEMU is not installed.
var ErrNoQEMU = errors.New("qemu not found: install qemu-system-x86 (Debian) or use the fake QEMU")

// ErrBadConfig reports a Config that cannot be started: qemuproc's, which a real QEMU's
// command line may report too.
var ErrBadConfig = qemuproc.ErrBadConfig

// QEMU is a running guest QEMU, real or fake. Its methods are safe for concurrent use.
type QEMU struct {
	cfg  Config
	log  *slog.Logger
	real *realQEMU
	fake *qmptest.Server
	done chan struct{} // the fake's Done, closed when Stop is called

	fakeStop sync.Once // the fake's Stop
	fakeErr  error     // the fake's Close result, set in fakeStop
}

// StartTimeout bounds a real QEMU's start when ctx has no deadline: libxl's
// LIBXL_DEVICE_MODEL_START_TIMEOUT.
const StartTimeout = 60 * time.Second

// Start starts a QEMU and returns when every monitor socket accepts connections. ctx bounds
// the start only, not the QEMU's life: Stop ends it.
func Start(ctx context.Context, cfg Config) (*QEMU, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, StartTimeout)
		defer cancel()
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if len(cfg.CDROMs) == 0 {
		cfg.CDROMs = []xen.DevID{DefaultCDROM}
	}
	if cfg.Name == "" {
		cfg.Name = fmt.Sprintf("dom%d", cfg.DomID)
	}
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("domid", cfg.DomID)
	q := &QEMU{cfg: cfg, log: log, done: make(chan struct{})}

	mode := cfg.Mode
	if mode == "" || mode == ModeAuto {
		mode = ModeFake
		if _, err := exec.LookPath(cfg.Binary); err == nil {
			mode = ModeReal
		}
	}
	switch mode {
	case ModeReal:
		if _, err := exec.LookPath(cfg.Binary); err != nil {
			return nil, fmt.Errorf("start qemu for domain %d: %s: %w", cfg.DomID, cfg.Binary, ErrNoQEMU)
		}
		r, err := startReal(ctx, cfg, log)
		if err != nil {
			return nil, fmt.Errorf("start qemu for domain %d: %w", cfg.DomID, err)
		}
		q.real = r
	case ModeFake:
		srv, err := startFake(cfg, log)
		if err != nil {
			return nil, fmt.Errorf("start fake qemu for domain %d: %w", cfg.DomID, err)
		}
		q.fake = srv
	default:
		return nil, fmt.Errorf("mode %q: want real, fake or auto: %w", cfg.Mode, ErrBadConfig)
	}
	return q, nil
}

// check refuses a config that QEMU (or libxl) would refuse, with the reason.
func (cfg Config) check() error {
	seen := map[xen.DevID]bool{}
	for _, d := range cfg.CDROMs {
		if _, err := qemuproc.IDEDisk(d); err != nil {
			return err
		}
		if seen[d] {
			return fmt.Errorf("cdrom %d listed twice: %w", d, ErrBadConfig)
		}
		seen[d] = true
	}
	for d := range cfg.InitialMedium {
		if !seen[d] && (len(cfg.CDROMs) != 0 || d != DefaultCDROM) {
			return fmt.Errorf("initial medium for %s, which is not one of the cdroms %v: %w", d.QEMUID(), cfg.CDROMs, ErrBadConfig)
		}
	}
	for i, p := range cfg.Monitors {
		if p == "" {
			return fmt.Errorf("monitor %d has an empty path: %w", i, ErrBadConfig)
		}
		if len(p) >= qemuproc.MaxSocketPath {
			return fmt.Errorf("monitor path %s is %d bytes, unix sockets allow %d: %w", p, len(p), qemuproc.MaxSocketPath-1, ErrBadConfig)
		}
	}
	return nil
}

// Real reports whether this is a real QEMU process.
func (q *QEMU) Real() bool { return q.real != nil }

// Fake returns the fake QEMU, for assertions and faults; nil for a real QEMU.
func (q *QEMU) Fake() *qmptest.Server { return q.fake }

// PID returns the real QEMU's process id; 0 for the fake.
func (q *QEMU) PID() int {
	if q.real == nil {
		return 0
	}
	return q.real.pid()
}

// Done is closed when the QEMU has stopped: after Stop, or when a real QEMU exits by itself.
func (q *QEMU) Done() <-chan struct{} {
	if q.real != nil {
		return q.real.proc.Done()
	}
	return q.done
}

// Stop stops the QEMU (a real one with SIGKILL to its process group, and waits for it) and
// closes its monitors. It may be called more than once.
func (q *QEMU) Stop() error {
	if q.real != nil {
		return q.real.stop()
	}
	q.fakeStop.Do(func() {
		if err := q.fake.Close(); err != nil {
			q.fakeErr = fmt.Errorf("stop fake qemu: %w", err)
		}
		close(q.done)
	})
	return q.fakeErr
}

// Kill ends the QEMU as a crash would: a real one gets SIGKILL and its public monitor
// sockets stay behind as files nobody listens on (a client's connect is refused, as after a
// real QEMU died); the fake stops, and its sockets vanish. Done is closed afterwards; Stop
// after Kill does nothing more.
func (q *QEMU) Kill() error {
	if q.real != nil {
		return q.real.kill()
	}
	return q.Stop()
}

// DropAfter makes the QEMU close the next connection that gets a reply to command, right
// after that reply, on any of its monitors. Each call arms one drop.
func (q *QEMU) DropAfter(command string) {
	if q.real != nil {
		q.real.drops.arm(dropAfterReply, command)
		return
	}
	q.fake.DropAfter(command)
}

// DropBeforeReply makes the QEMU close the next connection that is due a reply to command
// instead of sending it: the command takes effect, and the client cannot know. Each call
// arms one drop.
func (q *QEMU) DropBeforeReply(command string) {
	if q.real != nil {
		q.real.drops.arm(dropBeforeReply, command)
		return
	}
	q.fake.DropBeforeReply(command)
}

// LockTray locks or unlocks a drive's tray as a guest OS would. A real QEMU runs no guest
// OS, so it returns an error wrapping ErrNeedsFake there.
func (q *QEMU) LockTray(devid xen.DevID, locked bool) error {
	if q.real != nil {
		return fmt.Errorf("lock tray of %s: no guest OS runs in a real simulated QEMU: %w", devid.QEMUID(), ErrNeedsFake)
	}
	if !q.hasCDROM(devid) {
		return fmt.Errorf("lock tray of %s: not one of the cdroms %v: %w", devid.QEMUID(), q.cfg.CDROMs, ErrBadConfig)
	}
	q.fake.LockTray(devid.QEMUID(), locked)
	return nil
}

// SetPaused pauses or resumes the VM, as QMP stop and cont do.
func (q *QEMU) SetPaused(ctx context.Context, paused bool) error {
	if q.real != nil {
		return q.real.setPaused(ctx, paused)
	}
	q.fake.SetRunning(!paused)
	return nil
}

func (q *QEMU) hasCDROM(d xen.DevID) bool {
	for _, c := range q.cfg.CDROMs {
		if c == d {
			return true
		}
	}
	return false
}

// Package qemuproc starts qemu-system-x86_64 as libxl starts a qemu-xen device model for an
// HVM guest (libxl__build_device_model_args_new): a small TCG PC with libxl's emulated
// cdrom drives and one QMP monitor per socket, each
//
//	-chardev socket,id=<id>,path=<path>,server=on,wait=off -mon chardev=<id>,mode=control
//
// It is the one launcher of a real QEMU: simqemu's real mode runs it behind its proxies, and
// the QMP tests run it to compare the client and the fake with the real thing.
//
// Start returns once QEMU is ready, which a socket file appearing does not tell: the file
// appears at bind(), a moment before listen(), and a client that connects in between is
// refused. So QEMU also gets a monitor of its own, and Start waits until QEMU greets a QMP
// client there: QEMU creates every chardev, and so listens on every monitor socket, before
// its main loop sends a greeting.
//
// A QEMU with no disk to boot runs SeaBIOS, which finds nothing and halts, so an idle one
// costs little CPU; the VM still runs, which matters because QEMU closes removed fds only
// while it does.
//
// Start (and SetPaused, for a VM started paused) also waits until the firmware begins to
// boot, which it learns from SeaBIOS's log on the debug console (port 0x402, the one
// device libxl does not add). In its power-on self test SeaBIOS resets the IDE controllers,
// and QEMU's reset closes an open tray without a DEVICE_TRAY_MOVED event: a medium change
// that began in the first tens of milliseconds lost its eject. cdswap changes the media of
// guests that run, not of ones in their firmware's self test.
package qemuproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/xen"
)

// DefaultBinary is the QEMU Start runs, looked up in $PATH.
const DefaultBinary = "qemu-system-x86_64"

// guestMemoryMiB is the guest RAM. SeaBIOS needs a few MiB; the memory is allocated lazily,
// so more would cost nothing until touched, and less saves nothing.
const guestMemoryMiB = 32

// Monitor chardev ids: libxl's own monitor is "libxl-cmd" (libxl_dm.c); the stubdom's cdrom
// monitor is "m-cdrom" in the reference stubdom scripts; later ones are mon<i>.
var monitorIDs = []string{"libxl-cmd", "m-cdrom"}

// controlMonitorID is the chardev of the monitor that Start waits on and SetPaused uses,
// never shared with clients.
const controlMonitorID = "qemuproc-ctl"

// readyPoll is how often Start tries the control monitor, and reads the firmware's log,
// while QEMU starts.
const readyPoll = 5 * time.Millisecond

// firmwareBooting is the line SeaBIOS logs as it tries its first boot device, once its
// self test, the IDE controllers' reset included, is over.
const firmwareBooting = "Booting from "

// MaxSocketPath is the size of sun_path in struct sockaddr_un on Linux, NUL included: a
// monitor's path must be shorter.
const MaxSocketPath = 108

// ErrBadConfig reports a Config that cannot be started.
var ErrBadConfig = errors.New("bad QEMU config")

// Medium is a drive's medium at boot, as libxl puts it on QEMU's command line
// (-drive ...,file=<Path>,format=<Format>).
type Medium struct {
	Path   string // "" = an empty drive
	Format string // QEMU block driver: raw, qcow2, host_device...; "" = raw
}

// QEMUFormat is the format QEMU is given for m: raw when m does not say, since libxl always
// passes one (XSA-258).
func (m Medium) QEMUFormat() string {
	if m.Format == "" {
		return "raw"
	}
	return m.Format
}

// Config says what QEMU to start. Its zero value starts DefaultBinary with no drive and no
// monitor but Start's own.
type Config struct {
	// Binary is the QEMU to run; default DefaultBinary, from $PATH.
	Binary string
	// Name is the guest's name (QEMU -name), and names the log and the pidfile; default
	// "qemu".
	Name string
	// CDROMs are the emulated cdrom drives; default none. Each gets
	//	-drive if=none,readonly=on,id=ide-<devid>[,file=<path>,format=<fmt>]
	//	-device ide-cd,id=ide-<devid>,drive=ide-<devid>,bus=ide.<disk/2>,unit=<disk%2>
	// where disk is the IDE disk index of the devid (IDEDisk; hdc: 2, so bus ide.1 unit 0).
	CDROMs []xen.DevID
	// InitialMedium is the medium in each drive at boot; drives not in it are empty.
	InitialMedium map[xen.DevID]Medium
	// BootDisk is a raw disk image for the guest to boot from, as IDE disk 0 (hda); default
	// none, and SeaBIOS halts.
	BootDisk string
	// Monitors are the QMP socket paths, each one monitor that takes one client at a time:
	// [0] is libxl's (chardev libxl-cmd), [1] the stubdom's cdrom monitor (m-cdrom).
	Monitors []string
	// Paused starts the VM paused (-S), as a domain being created is.
	Paused bool
	// WorkDir holds QEMU's log (qemu-dm-<Name>.log, kept after Stop) and pidfile; default a
	// temporary directory that Stop removes.
	WorkDir string
	// Logger logs the start and the stop; nil = discard.
	Logger *slog.Logger
}

// Process is a running QEMU. Its methods are safe for concurrent use.
type Process struct {
	cmd     *exec.Cmd
	log     *slog.Logger
	privDir string // the control socket, and the default work dir; removed by Stop
	ctlPath string
	logPath string // QEMU's stdout and stderr
	fwPath  string // the firmware's debug console
	booted  bool   // the firmware was seen booting; guarded by ctlMu
	pidfile string // QEMU's -pidfile; removed by Stop, since a killed QEMU leaves it

	exited  chan struct{} // closed when cmd.Wait has returned
	waitErr error         // cmd.Wait's result; read only after exited is closed

	ctlMu sync.Mutex // serialises use of the control monitor, which takes one client at a time

	stopOnce sync.Once
	stopErr  error
}

// Start starts QEMU and returns when every monitor socket listens. ctx bounds the start
// only, not the QEMU's life: Stop ends it. QEMU dies with the process that started it.
func Start(ctx context.Context, cfg Config) (_ *Process, err error) {
	if cfg.Binary == "" {
		cfg.Binary = DefaultBinary
	}
	if cfg.Name == "" {
		cfg.Name = "qemu"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The control socket lives in a short private directory: nobody else may connect to it.
	privDir, err := os.MkdirTemp("", "qemuproc")
	if err != nil {
		return nil, fmt.Errorf("make socket directory: %w", err)
	}
	p := &Process{log: log, privDir: privDir, ctlPath: filepath.Join(privDir, "ctl"), exited: make(chan struct{})}
	defer func() {
		if err != nil {
			_ = p.cleanup() // the start's own error says what went wrong
		}
	}()
	if len(p.ctlPath) >= MaxSocketPath {
		return nil, fmt.Errorf("temporary directory %s is too long for unix sockets: set TMPDIR shorter", privDir)
	}

	workDir := cfg.WorkDir
	if workDir == "" {
		workDir = privDir
	} else if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, fmt.Errorf("make work dir: %w", err)
	}
	base := strings.NewReplacer("/", "_", " ", "_").Replace(cfg.Name)
	p.logPath = filepath.Join(workDir, "qemu-dm-"+base+".log")
	p.pidfile = filepath.Join(workDir, "qemu-dm-"+base+".pid")
	p.fwPath = filepath.Join(workDir, "qemu-dm-"+base+"-firmware.log")
	args, err := commandLine(cfg, p.ctlPath, p.pidfile, p.fwPath)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(p.logPath)
	if err != nil {
		return nil, fmt.Errorf("create qemu log: %w", err)
	}
	defer logf.Close() // QEMU has its own copy once started

	p.cmd = exec.Command(cfg.Binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true, // Stop kills the whole group
		// Kill QEMU when we die, so a crashed test or simulator leaves no orphan. The signal
		// is tied to the thread that forks; Go parks idle threads rather than ending them,
		// unless a goroutine locked to its thread exits, so do not call Start from one.
		Pdeathsig: syscall.SIGKILL,
	}
	log.Debug("starting qemu", "cmd", p.cmd.String())
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", cfg.Binary, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()

	if err := p.waitReady(ctx); err != nil {
		return nil, err
	}
	if !cfg.Paused {
		if err := p.waitBooting(ctx); err != nil {
			return nil, err
		}
	}
	log.Info("qemu started", "pid", p.PID(), "log", p.logPath)
	return p, nil
}

// commandLine is QEMU's arguments for cfg, with the control monitor at ctlPath, the pidfile
// at pidfile and the firmware's debug console written to fwLog.
func commandLine(cfg Config, ctlPath, pidfile, fwLog string) ([]string, error) {
	args := []string{
		"-machine", "pc",
		"-nodefaults",
		"-display", "none",
		"-accel", "tcg",
		"-m", strconv.Itoa(guestMemoryMiB),
		"-no-user-config",
		"-name", optEscape(cfg.Name),
		"-pidfile", pidfile,
		"-chardev", "file,id=firmware,path=" + optEscape(fwLog),
		"-device", "isa-debugcon,iobase=0x402,chardev=firmware",
	}
	if cfg.Paused {
		args = append(args, "-S")
	}
	mon := func(id, path string) {
		args = append(args,
			"-chardev", fmt.Sprintf("socket,id=%s,path=%s,server=on,wait=off", id, optEscape(path)),
			"-mon", fmt.Sprintf("chardev=%s,mode=control", id))
	}
	for i, p := range cfg.Monitors {
		id := "mon" + strconv.Itoa(i)
		if i < len(monitorIDs) {
			id = monitorIDs[i]
		}
		mon(id, p)
	}
	mon(controlMonitorID, ctlPath)
	if cfg.BootDisk != "" {
		args = append(args,
			"-drive", "if=none,file="+optEscape(cfg.BootDisk)+",format=raw,id=hd0",
			"-device", "ide-hd,drive=hd0,bus=ide.0,unit=0")
	}
	for _, d := range cfg.CDROMs {
		disk, err := IDEDisk(d)
		if err != nil {
			return nil, err
		}
		if disk == 0 && cfg.BootDisk != "" {
			return nil, fmt.Errorf("cdrom %s is IDE disk 0, which the boot disk is: %w", d.QEMUID(), ErrBadConfig)
		}
		id := d.QEMUID()
		drive := "if=none,readonly=on,id=" + id
		if m, ok := cfg.InitialMedium[d]; ok && m.Path != "" {
			// libxl does not escape commas; QEMU's option syntax needs it for such paths.
			drive += ",file=" + optEscape(m.Path) + ",format=" + m.QEMUFormat()
		}
		args = append(args,
			"-drive", drive,
			"-device", fmt.Sprintf("ide-cd,id=%s,drive=%s,bus=ide.%d,unit=%d", id, id, disk/2, disk%2))
	}
	return args, nil
}

// IDEDisk returns the IDE disk index libxl derives from the vdev of an emulated cdrom: hda 0,
// hdb 1, hdc 2, hdd 3, and the same for xvd and sd names of the first four disks. Any other
// devid is an ErrBadConfig.
func IDEDisk(d xen.DevID) (int, error) {
	var disk int
	switch major := int(d) >> 8; {
	case d < 0:
		return 0, fmt.Errorf("devid %d is negative: %w", d, ErrBadConfig)
	case int(d)&(1<<28) != 0: // extended xvd numbering
		disk = int(d) >> 8 & (1<<20 - 1)
	case major == 3: // hda, hdb
		disk = int(d) >> 6 & 1
	case major == 22: // hdc, hdd
		disk = 2 + int(d)>>6&1
	case major == 202, major == 8: // xvd, sd
		disk = int(d) >> 4 & 15
	default:
		return 0, fmt.Errorf("devid %d is not a disk libxl can emulate as a cdrom: %w", d, ErrBadConfig)
	}
	if disk > 3 {
		return 0, fmt.Errorf("devid %d is disk %d; an emulated cdrom must be one of the first 4 disks (hda-hdd): %w", d, disk, ErrBadConfig)
	}
	return disk, nil
}

// optEscape escapes a value for QEMU's key=value,... option syntax, where ",," is a comma.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// waitReady returns when QEMU greets on the control monitor.
func (p *Process) waitReady(ctx context.Context) error {
	for {
		c, err := qmp.Dial(ctx, p.ctlPath)
		if err == nil {
			return c.Close()
		}
		select {
		case <-p.exited:
			return fmt.Errorf("qemu exited before its monitors were ready (%w): %s", p.waitErr, p.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("wait for qemu monitors: %w (last: %w)", ctx.Err(), err)
		case <-time.After(readyPoll):
		}
	}
}

// waitBooting returns once the firmware logs that it boots (firmwareBooting), and marks
// the VM booted.
func (p *Process) waitBooting(ctx context.Context) error {
	for {
		b, err := os.ReadFile(p.fwPath)
		if err == nil && strings.Contains(string(b), firmwareBooting) {
			p.booted = true
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("qemu exited before its firmware booted (%w): %s", p.waitErr, p.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("wait for the firmware to boot (%q in %s): %w; its log ends: %s",
				firmwareBooting, p.fwPath, ctx.Err(), tail(p.fwPath))
		case <-time.After(readyPoll):
		}
	}
}

// LogTail is the end of QEMU's log, to say why it failed.
func (p *Process) LogTail() string { return tail(p.logPath) }

// tail is the end of the file at path.
func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "no log: " + err.Error()
	}
	defer f.Close()
	const size = 2048
	if fi, err := f.Stat(); err == nil && fi.Size() > size {
		_, _ = f.Seek(-size, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

// PID is QEMU's process id.
func (p *Process) PID() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Done is closed when QEMU has exited: after Stop, or by itself.
func (p *Process) Done() <-chan struct{} { return p.exited }

// SetPaused pauses or resumes the VM with QMP stop or cont on the control monitor.
func (p *Process) SetPaused(ctx context.Context, paused bool) error {
	cmd := "cont"
	if paused {
		cmd = "stop"
	}
	p.ctlMu.Lock()
	defer p.ctlMu.Unlock()
	c, err := qmp.Dial(ctx, p.ctlPath)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	defer c.Close()
	if err := c.Execute(ctx, cmd, nil, nil); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	if !paused && !p.booted {
		// A VM started paused runs its firmware now (the package doc says why to wait).
		return p.waitBooting(ctx)
	}
	return nil
}

// Stop kills QEMU's process group with SIGKILL, waits for QEMU, and removes its pidfile and
// its private files. It may be called more than once.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.cleanup() })
	return p.stopErr
}

// cleanup undoes whatever Start got done.
func (p *Process) cleanup() error {
	var errs []error
	if pid := p.PID(); pid > 0 {
		if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill qemu process group %d: %w", pid, err))
		}
		<-p.exited
		p.log.Info("qemu stopped", "pid", pid, "status", p.waitErr)
	}
	if p.pidfile != "" {
		_ = os.Remove(p.pidfile) // absent when QEMU never started
	}
	if err := os.RemoveAll(p.privDir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", p.privDir, err))
	}
	return errors.Join(errs...)
}

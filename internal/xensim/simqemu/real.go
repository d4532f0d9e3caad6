package simqemu

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
)

// guestMemoryMiB is the guest RAM of a real QEMU. SeaBIOS needs a few MiB; the memory is
// allocated lazily, so more would cost nothing until touched, and less saves nothing.
const guestMemoryMiB = 32

// Monitor chardev ids: libxl's own monitor is "libxl-cmd" (libxl_dm.c); the stubdom's cdrom
// monitor is "m-cdrom" in the reference stubdom scripts; ours is "simqemu-ctl".
var monitorIDs = []string{"libxl-cmd", "m-cdrom"}

const controlMonitorID = "simqemu-ctl"

// readyPoll is how often Start looks for QEMU's control socket while QEMU starts.
const readyPoll = 5 * time.Millisecond

// realQEMU is a qemu-system-x86_64 process and the proxies in front of its monitors.
type realQEMU struct {
	cmd     *exec.Cmd
	log     *slog.Logger
	drops   *dropSet
	proxies []*proxy
	privDir string // QEMU's private sockets; removed by stop
	ctlPath string // our own monitor, for stop/cont, never shared with clients
	logPath string // QEMU's stdout and stderr
	pidfile string // QEMU's -pidfile; removed by stop, since a killed QEMU leaves it

	exited  chan struct{} // closed when cmd.Wait has returned
	waitErr error         // cmd.Wait's result; read only after exited is closed

	ctlMu sync.Mutex // serialises use of the control monitor, which takes one client at a time

	stopOnce sync.Once
	stopErr  error
}

// startReal starts QEMU, waits until its monitors are up, then serves the public monitors.
func startReal(ctx context.Context, cfg Config, log *slog.Logger) (_ *realQEMU, err error) {
	// QEMU's sockets live in a short private directory: the caller's paths may be close to
	// the 108-byte limit already, and nobody but the proxy and us may connect to them.
	privDir, err := os.MkdirTemp("", "simqemu")
	if err != nil {
		return nil, fmt.Errorf("make socket directory: %w", err)
	}
	r := &realQEMU{
		log:     log,
		drops:   newDropSet(),
		privDir: privDir,
		ctlPath: filepath.Join(privDir, "ctl"),
		exited:  make(chan struct{}),
	}
	defer func() {
		if err != nil {
			r.cleanup()
		}
	}()
	if len(r.ctlPath)+4 >= maxSocketPath {
		return nil, fmt.Errorf("temporary directory %s is too long for unix sockets: set TMPDIR shorter", privDir)
	}

	// Listen on the public paths before QEMU starts, so that a path in use fails fast;
	// clients that connect early wait in the backlog until the proxies serve.
	privMons := make([]string, len(cfg.Monitors))
	for i, pub := range cfg.Monitors {
		privMons[i] = filepath.Join(privDir, "mon"+strconv.Itoa(i))
		p, err := listenProxy(pub, privMons[i], r.drops, log)
		if err != nil {
			return nil, err
		}
		r.proxies = append(r.proxies, p)
	}

	workDir := cfg.WorkDir
	if workDir == "" {
		workDir = privDir
	} else if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, fmt.Errorf("make work dir: %w", err)
	}
	base := strings.NewReplacer("/", "_", " ", "_").Replace(cfg.Name)
	r.logPath = filepath.Join(workDir, "qemu-dm-"+base+".log")
	r.pidfile = filepath.Join(workDir, "qemu-dm-"+base+".pid")
	args, err := qemuArgs(cfg, privMons, r.ctlPath, r.pidfile)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(r.logPath)
	if err != nil {
		return nil, fmt.Errorf("create qemu log: %w", err)
	}
	defer logf.Close() // QEMU has its own copy once started

	r.cmd = exec.Command(cfg.Binary, args...)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true, // Stop kills the whole group
		// Kill QEMU when we die, so a crashed test or simulator leaves no orphan. The signal
		// is tied to the thread that forks; Go parks idle threads rather than ending them,
		// unless a goroutine locked to its thread exits, so do not call Start from one.
		Pdeathsig: syscall.SIGKILL,
	}
	log.Debug("starting qemu", "cmd", r.cmd.String())
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", cfg.Binary, err)
	}
	go func() {
		r.waitErr = r.cmd.Wait()
		close(r.exited)
	}()

	if err := r.waitReady(ctx); err != nil {
		return nil, err
	}
	for _, p := range r.proxies {
		p.serve()
	}
	log.Info("qemu started", "pid", r.pid(), "log", r.logPath)
	return r, nil
}

// qemuArgs is QEMU's command line: a small TCG PC with libxl's cdrom drives and one QMP
// monitor per socket (libxl: -chardev socket,...,server=on,wait=off -mon ...,mode=control).
func qemuArgs(cfg Config, monitors []string, ctlPath, pidfile string) ([]string, error) {
	args := []string{
		"-machine", "pc",
		"-nodefaults",
		"-display", "none",
		"-accel", "tcg",
		"-m", strconv.Itoa(guestMemoryMiB),
		"-no-user-config",
		"-name", optEscape(cfg.Name),
		"-pidfile", pidfile,
	}
	if cfg.Paused {
		args = append(args, "-S")
	}
	mon := func(id, path string) {
		args = append(args,
			"-chardev", fmt.Sprintf("socket,id=%s,path=%s,server=on,wait=off", id, optEscape(path)),
			"-mon", fmt.Sprintf("chardev=%s,mode=control", id))
	}
	for i, p := range monitors {
		id := "mon" + strconv.Itoa(i)
		if i < len(monitorIDs) {
			id = monitorIDs[i]
		}
		mon(id, p)
	}
	mon(controlMonitorID, ctlPath)
	for _, d := range cfg.CDROMs {
		disk, err := ideDisk(d)
		if err != nil {
			return nil, err
		}
		id := d.QEMUID()
		drive := "if=none,readonly=on,id=" + id
		if m, ok := cfg.InitialMedium[d]; ok && m.Path != "" {
			// libxl does not escape commas; QEMU's option syntax needs it for such paths.
			drive += ",file=" + optEscape(m.Path) + ",format=" + mediumFormat(m)
		}
		args = append(args,
			"-drive", drive,
			"-device", fmt.Sprintf("ide-cd,id=%s,drive=%s,bus=ide.%d,unit=%d", id, id, disk/2, disk%2))
	}
	return args, nil
}

// optEscape escapes a value for QEMU's key=value,... option syntax, where ",," is a comma.
func optEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// waitReady returns when QEMU greets on the control monitor: QEMU creates every chardev,
// and so listens on every monitor socket, before its main loop sends greetings.
func (r *realQEMU) waitReady(ctx context.Context) error {
	for {
		c, err := qmp.Dial(ctx, r.ctlPath)
		if err == nil {
			return c.Close()
		}
		select {
		case <-r.exited:
			return fmt.Errorf("qemu exited before its monitors were ready (%v): %s", r.waitErr, r.logTail())
		case <-ctx.Done():
			return fmt.Errorf("wait for qemu monitors: %w (last: %v)", ctx.Err(), err)
		case <-time.After(readyPoll):
		}
	}
}

// logTail is the end of QEMU's log, to say why it failed.
func (r *realQEMU) logTail() string {
	f, err := os.Open(r.logPath)
	if err != nil {
		return "no log: " + err.Error()
	}
	defer f.Close()
	const max = 2048
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(-max, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

func (r *realQEMU) pid() int {
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// setPaused sends stop or cont on the control monitor.
func (r *realQEMU) setPaused(ctx context.Context, paused bool) error {
	cmd := "cont"
	if paused {
		cmd = "stop"
	}
	r.ctlMu.Lock()
	defer r.ctlMu.Unlock()
	c, err := qmp.Dial(ctx, r.ctlPath)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	defer c.Close()
	if err := c.Execute(ctx, cmd, nil, nil); err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return nil
}

// stop kills QEMU's process group, waits for QEMU, and closes the proxies.
func (r *realQEMU) stop() error {
	r.stopOnce.Do(func() { r.stopErr = r.cleanup() })
	return r.stopErr
}

// cleanup undoes whatever startReal got done.
func (r *realQEMU) cleanup() error {
	var errs []error
	if pid := r.pid(); pid > 0 {
		if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill qemu process group %d: %w", pid, err))
		}
		<-r.exited
		r.log.Info("qemu stopped", "pid", pid, "status", r.waitErr)
	}
	for _, p := range r.proxies {
		p.close()
	}
	if r.pidfile != "" {
		_ = os.Remove(r.pidfile) // absent when QEMU never started
	}
	if err := os.RemoveAll(r.privDir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", r.privDir, err))
	}
	return errors.Join(errs...)
}

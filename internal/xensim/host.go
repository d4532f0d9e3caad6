package xensim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/loopdev"
	"github.com/cdswap/cdswap/internal/xensim/simqemu"
	"github.com/cdswap/cdswap/internal/xs"
	"github.com/cdswap/cdswap/internal/xs/xenstored"
)

// DomainInfo describes one guest of the host.
type DomainInfo struct {
	DomID uint32 `json:"domid"`
	Name  string `json:"name"`
	Kind  Kind   `json:"kind"`
	UUID  string `json:"uuid"`
	// StubDomID, StubName and StubUUID describe the stub domain of a stubdom guest.
	StubDomID uint32 `json:"stubdomid,omitempty"`
	StubName  string `json:"stub_name,omitempty"`
	StubUUID  string `json:"stub_uuid,omitempty"`
	// Vdev and DevID name the cdrom: hdc, 5632.
	Vdev  string    `json:"vdev"`
	DevID xen.DevID `json:"devid"`
	// QEMU is "real", "fake" or "none" (qemu-xen-traditional has no QMP); QEMUPID is a real
	// QEMU's process id.
	QEMU    string `json:"qemu"`
	QEMUPID int    `json:"qemu_pid,omitempty"`
	// QMPSocket is libxl's QMP socket, <run>/qmp-libxl-<domid> ("" for traditional).
	QMPSocket string `json:"qmp_socket,omitempty"`
	// AgentSocket is the stub domain's private QMP monitor, which its agent add-fd's on.
	AgentSocket string `json:"agent_socket,omitempty"`
	// Medium is the image in the drive at start, "" for an empty drive.
	Medium string `json:"medium"`
	// BackendPath and LibxlPath are the cdrom vbd that cd-insert changes: the stub domain's
	// phy vbd for a stubdom guest, the guest's own vbd otherwise.
	BackendPath string `json:"backend_path"`
	LibxlPath   string `json:"libxl_path"`
	// ConfigPath is the guest's libxl JSON configuration (userdata-d.<domid>.<uuid>.libxl-json).
	ConfigPath string `json:"config_path"`
	// EmptyCDROM is <run>/empty-cdrom.<domid>, the file a stubdom guest's vbd points at while
	// the drive is empty.
	EmptyCDROM string `json:"empty_cdrom,omitempty"`
}

// loopAvailable says whether read-only loop devices can be made (a variable for tests).
var loopAvailable = loopdev.Available

// domain is a guest and what runs for it. info and the fields after it are set before the
// host's goroutines start and never change.
type domain struct {
	info       DomainInfo
	medium     string       // the image at start, "" = empty drive
	emptyCDROM string       // <run>/empty-cdrom.<domid>
	mode       simqemu.Mode // QEMUReal, QEMUFake, or "" for no QEMU
	useLoop    bool         // the stub domain's vbds get read-only loop devices
	qemu       *simqemu.QEMU
	agent      *agent
}

// Host is a running simulated dom0. Its methods are safe for concurrent use.
type Host struct {
	cfg *resolved
	log *slog.Logger
	dir string

	lock *os.File // DIR/xensim.lock, flocked while the host runs
	srv  *xenstored.Server
	xs   *xs.Client // the host's own xenstore connection (AddVBD, blkback's watch)

	doms   []*domain
	byID   map[uint32]*domain // by guest domid and by stub domain id
	byName map[string]*domain
	isos   []string

	blk     *blkback
	media   *mediaLog   // what the guests' QEMUs did to their media
	booted  atomic.Bool // the boot vbds are up: later vbds are hot-plugged
	ctl     *controlServer
	ctx     context.Context // ends at Close: the host's goroutines
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	startup time.Duration

	// setMu serialises SetFaults and SetFault, which talk to QEMUs.
	setMu sync.Mutex
	// faultsMu guards faults, read by blkback and the agents.
	faultsMu sync.RWMutex
	faults   Faults

	closeOnce sync.Once
	closeErr  error
}

// Start brings up a simulated dom0 as cfg says and returns when every guest's QEMU answers
// QMP and every vbd is up. ctx bounds the start only; the host runs until Close. On error
// everything started is stopped again. Errors wrap ErrBadConfig for a configuration that
// cannot work and ErrInUse when another xensim holds the folder.
func Start(ctx context.Context, cfg Config) (*Host, error) {
	t0 := time.Now()
	r, specs, err := resolve(cfg)
	if err != nil {
		return nil, err
	}
	if r.Dir == "" {
		d, err := os.MkdirTemp("", "xensim")
		if err != nil {
			return nil, fmt.Errorf("make a folder for the host: %w", err)
		}
		r.Dir, r.tempDir = d, true
		if err := checkSocketRoom(d); err != nil {
			os.RemoveAll(d)
			return nil, err
		}
	}
	hctx, cancel := context.WithCancel(context.Background())
	h := &Host{
		cfg: r, log: r.Logger.With("host", r.HostName), dir: r.Dir,
		byID: map[uint32]*domain{}, byName: map[string]*domain{},
		media: newMediaLog(), ctx: hctx, cancel: cancel,
	}
	if err := h.start(ctx, specs); err != nil {
		_ = h.teardown() // the start's error says what went wrong
		return nil, err
	}
	h.startup = time.Since(t0)
	if err := h.writeSummary(); err != nil {
		_ = h.teardown() // the start's error says what went wrong
		return nil, err
	}
	h.log.Info("host ready", "domains", len(h.doms), "took", h.startup.Round(time.Millisecond), "dir", h.dir)
	return h, nil
}

func (h *Host) runDir() string { return filepath.Join(h.dir, "run") }
func (h *Host) libDir() string { return filepath.Join(h.dir, "lib") }
func (h *Host) isoDir() string {
	if h.cfg.ISODir != "" {
		return h.cfg.ISODir
	}
	return filepath.Join(h.dir, "isos")
}

func (h *Host) start(ctx context.Context, specs []DomainSpec) error {
	// Plan first: a host that cannot work must not touch the folder.
	if err := h.plan(specs); err != nil {
		return err
	}
	if err := h.prepareDir(); err != nil {
		return err
	}
	isos, err := writeISOs(h.isoDir(), h.cfg.ISODir != "")
	if err != nil {
		return err
	}
	h.isos = isos

	h.srv = xenstored.New(xenstored.Config{Logger: h.log.With("part", "xenstored")})
	ln, err := xenstored.Listen(h.XenstoredPath())
	if err != nil {
		return fmt.Errorf("start xenstored: %w", err)
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if err := h.srv.Serve(ln); err != nil {
			h.log.Error("xenstored stopped", "err", err)
		}
	}()
	if h.xs, err = xs.Dial(ctx, h.XenstoredPath()); err != nil {
		return fmt.Errorf("connect to our xenstored: %w", err)
	}
	if err := h.layDom0(); err != nil {
		return err
	}
	h.blk = newBlkback(h)
	if err := h.blk.start(ctx); err != nil {
		return err
	}
	for _, d := range h.doms {
		if d.info.Kind == KindStubdom {
			if err := makeEmptyCDROM(d.emptyCDROM); err != nil {
				return err
			}
		}
		if err := h.layGuest(ctx, d); err != nil {
			return err
		}
	}
	if err := h.waitVBDs(ctx); err != nil {
		return err
	}
	// Every vbd so far was cold-plugged: QEMU opens it from its command line, without an
	// fdset. A vbd hot-plugged from now on gets the stub domain's add-fd.
	h.booted.Store(true)
	if err := h.startQEMUs(ctx); err != nil {
		return err
	}
	if err := h.SetFaults(ctx, h.cfg.Faults); err != nil {
		return err
	}
	h.ctl, err = startControl(h)
	return err
}

// prepareDir makes DIR and its folders, takes DIR/xensim.lock and clears what an earlier
// host left.
func (h *Host) prepareDir() error {
	for _, d := range []string{h.dir, h.runDir(), h.libDir(), h.isoDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("folder %s cannot be made: %w: pick a --dir you can write: %w", d, err, ErrBadConfig)
		}
	}
	lp := filepath.Join(h.dir, "xensim.lock")
	f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("folder %s cannot be written: %w: pick a --dir you can write: %w", h.dir, err, ErrBadConfig)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return fmt.Errorf("lock %s: %w", lp, err)
		}
		b, _ := os.ReadFile(lp)
		f.Close()
		owner := strings.TrimSpace(string(b))
		if owner == "" {
			owner = "unknown"
		}
		return fmt.Errorf("another xensim (pid %s) runs on %s: stop it or use another --dir: %w", owner, h.dir, ErrInUse)
	}
	h.lock = f
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	if loopAvailable() == nil {
		for _, dev := range staleLoops(h.dir) {
			h.log.Warn("detaching a loop device an earlier xensim left", "device", dev)
			if err := loopdev.Detach(context.Background(), dev); err != nil {
				h.log.Warn("cannot detach stale loop device", "device", dev, "err", err)
			}
		}
	}
	return clearStale(h.dir)
}

// plan gives each guest its domids, names, paths and QEMU kind.
func (h *Host) plan(specs []DomainSpec) error {
	_, qemuErr := exec.LookPath(simqemu.DefaultBinary)
	loopErr := loopAvailable()
	next := uint32(1)
	nReal := 0
	for _, sp := range specs {
		d := &domain{}
		in := &d.info
		in.DomID, in.Name, in.Kind = next, sp.Name, sp.Kind
		next++
		in.UUID = domainUUID(h.cfg.HostName, sp.Name)
		in.Vdev, in.DevID = CDROMVdev, CDROMDevID
		in.ConfigPath = xen.ConfigPath(h.libDir(), in.DomID, in.UUID)
		d.emptyCDROM = xen.EmptyCDROMPath(h.runDir(), in.DomID)
		medium, err := h.resolveMedium(sp)
		if err != nil {
			return err
		}
		d.medium, in.Medium = medium, medium

		mode := sp.QEMU
		if mode == "" {
			mode = h.cfg.QEMU
		}
		switch {
		case sp.Kind == KindTraditional:
			mode = ""
		case mode == QEMUAuto && qemuErr == nil:
			mode = QEMUReal
		case mode == QEMUAuto:
			mode = QEMUFake
		case mode == QEMUReal && qemuErr != nil:
			return fmt.Errorf("domain %s wants a real QEMU, but qemu-system-x86_64 is not installed (%w): install Debian's qemu-system-x86 or use --qemu=fake: %w",
				sp.Name, qemuErr, ErrBadConfig)
		}
		switch sp.Kind {
		case KindStubdom:
			in.StubDomID = next
			next++
			in.StubName = sp.Name + "-dm"
			in.StubUUID = domainUUID(h.cfg.HostName, in.StubName)
			in.BackendPath = xen.BackendPath(0, in.StubDomID, xen.KindVBD, in.DevID)
			in.LibxlPath = xen.LibxlPath(in.StubDomID, in.DevID)
			in.AgentSocket = filepath.Join(h.runDir(), fmt.Sprintf("stubdom-cdrom.%d.qmp", in.StubDomID))
			in.EmptyCDROM = d.emptyCDROM
			if mode == QEMUReal && loopErr != nil {
				h.log.Warn(fmt.Sprintf("no loop devices (%v): stubdom guest %s uses the fake QEMU", loopErr, sp.Name))
				mode = QEMUFake
			}
			d.useLoop = mode == QEMUReal
			d.agent = &agent{h: h, d: d}
		case KindDom0:
			in.BackendPath = xen.BackendPath(0, in.DomID, xen.KindQdisk, in.DevID)
			in.LibxlPath = xen.LibxlPath(in.DomID, in.DevID)
		default:
			in.BackendPath = xen.BackendPath(0, in.DomID, xen.KindVBD, in.DevID)
			in.LibxlPath = xen.LibxlPath(in.DomID, in.DevID)
		}
		d.mode = mode
		in.QEMU = string(mode)
		if mode == "" {
			in.QEMU = "none"
		} else {
			in.QMPSocket = xen.QMPSocketPath(h.runDir(), in.DomID)
		}
		if mode == QEMUReal {
			nReal++
		}
		h.doms = append(h.doms, d)
		h.byID[in.DomID] = d
		if in.StubDomID != 0 {
			h.byID[in.StubDomID] = d
		}
		h.byName[in.Name] = d
	}
	if _, err := h.planFaults(Faults{}, h.cfg.Faults, ""); err != nil {
		if errors.Is(err, ErrBadConfig) {
			return err
		}
		return fmt.Errorf("fault knobs at start: %w: %w", err, ErrBadConfig)
	}
	if avail := memAvailable(); nReal > 0 && avail > 0 && int64(nReal)*RealQEMUCost > avail*8/10 {
		return fmt.Errorf("%d real QEMUs need about %d MiB (%d MiB each), more than 80%% of the %d MiB available: use fewer domains or --qemu=fake: %w",
			nReal, int64(nReal)*RealQEMUCost>>20, RealQEMUCost>>20, avail>>20, ErrBadConfig)
	}
	return nil
}

// resolveMedium finds the file a DomainSpec's InitialMedium names.
func (h *Host) resolveMedium(sp DomainSpec) (string, error) {
	m := sp.InitialMedium
	switch {
	case m == "":
		return filepath.Join(h.isoDir(), DefaultMedium), nil
	case m == EmptyMedium:
		return "", nil
	case !strings.Contains(m, "/"):
		known := false
		for _, s := range isoSpecs {
			known = known || s.name == m
		}
		p := filepath.Join(h.isoDir(), m)
		if _, err := os.Stat(p); err != nil && !known && m != QCOW2Image {
			return "", fmt.Errorf("initial medium %q of domain %s: no such file in %s: %w", m, sp.Name, h.isoDir(), ErrBadConfig)
		}
		return p, nil
	default:
		p, err := filepath.Abs(m)
		if err == nil {
			_, err = os.Stat(p)
		}
		if err != nil {
			return "", fmt.Errorf("initial medium %q of domain %s: %w: %w", m, sp.Name, err, ErrBadConfig)
		}
		return p, nil
	}
}

// bootTimeout bounds each wait for a vbd at start.
const bootTimeout = 20 * time.Second

// waitVBDs waits until blkback has taken every phy vbd out of Initialising: a stub
// domain's vbd to Connected, a guest's own to InitWait (an HVM guest's frontend uses the
// emulated drive and never connects). A qdisk backend is QEMU's; it is put at InitWait,
// where QEMU's xen-block leaves a device whose HVM frontend never connects.
func (h *Host) waitVBDs(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	for _, d := range h.doms {
		for _, v := range d.vbds() {
			be := v.BackendPath()
			if v.Type == xen.TypeQdisk {
				if err := h.srv.Write(be+"/state", strconv.Itoa(int(xen.StateInitWait))); err != nil {
					return fmt.Errorf("start qdisk backend %s: %w", be, err)
				}
				continue
			}
			want := xen.StateInitWait
			if v.FrontendDom == d.info.StubDomID {
				want = xen.StateConnected
			}
			if err := xen.WaitBackendState(ctx, h.xs, be, want); err != nil {
				return fmt.Errorf("bring up the cdrom of %s: %w", d.info.Name, err)
			}
			if st, _ := h.srv.Read(be + "/hotplug-status"); st != "connected" {
				msg, _ := h.srv.Read(be + "/hotplug-error")
				return fmt.Errorf("bring up the cdrom of %s: hotplug script: %s", d.info.Name, msg)
			}
		}
	}
	return nil
}

// qemuStarts bounds how many QEMUs start at once: each start is CPU-bound.
const qemuStarts = 4

// startQEMUs starts every guest's QEMU, with the drive as libxl's command line has it: the
// image for a QEMU in dom0; the stub domain's block device (the loop device) as host_device
// for a stubdom guest, or the image itself for one on the fake QEMU.
func (h *Host) startQEMUs(ctx context.Context) error {
	sem := make(chan struct{}, qemuStarts)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, d := range h.doms {
		if d.mode == "" {
			continue
		}
		cfg := simqemu.Config{
			Mode:     d.mode,
			DomID:    d.info.DomID,
			Name:     d.info.Name,
			CDROMs:   []xen.DevID{d.info.DevID},
			Monitors: []string{d.info.QMPSocket},
			Logger:   h.log,
			WorkDir:  filepath.Join(h.runDir(), fmt.Sprintf("qemu.%d", d.info.DomID)),
			// A fake in dom0 refuses host_device on a file, as QEMU does; a stub domain's
			// fake reads the image file where real QEMU would get a block device.
			StrictHostDevice: d.info.Kind != KindStubdom,
			OnCall:           func(c simqemu.Call) { h.media.observe(d, c) },
		}
		h.media.add(d)
		if d.info.AgentSocket != "" {
			cfg.Monitors = append(cfg.Monitors, d.info.AgentSocket)
		}
		if m, err := h.bootMedium(d); err != nil {
			return err
		} else if m.Path != "" {
			cfg.InitialMedium = map[xen.DevID]simqemu.Medium{d.info.DevID: m}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			q, err := simqemu.Start(ctx, cfg)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("start QEMU of %s: %w", d.info.Name, err))
				return
			}
			d.qemu = q
			d.info.QEMUPID = q.PID()
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, d := range h.doms {
		if d.qemu != nil && d.qemu.PID() != 0 && d.info.Kind == KindDom0 {
			// libxl__spawn_local_dm records the device model's pid.
			p := xen.DomainPath(d.info.DomID) + "/image/device-model-pid"
			if err := h.srv.Write(p, strconv.Itoa(d.qemu.PID())); err != nil {
				return fmt.Errorf("write %s: %w", p, err)
			}
		}
	}
	return nil
}

// bootMedium is what the guest's QEMU has in its drive at start.
func (h *Host) bootMedium(d *domain) (simqemu.Medium, error) {
	if d.medium == "" {
		return simqemu.Medium{}, nil
	}
	if d.info.Kind != KindStubdom {
		return simqemu.Medium{Path: d.medium, Format: "raw"}, nil
	}
	dev, err := h.srv.Read(d.info.BackendPath + "/physical-device-path")
	if err != nil {
		return simqemu.Medium{}, fmt.Errorf("read the cdrom device of %s: %w", d.info.Name, err)
	}
	if d.useLoop {
		// The stub domain's QEMU opens /dev/xvdc: a block device, format host_device.
		return simqemu.Medium{Path: dev, Format: "host_device"}, nil
	}
	return simqemu.Medium{Path: dev, Format: "raw"}, nil
}

// Close stops everything the host started (control socket, agents, blkback, QEMUs, loop
// devices, xenstored), removes its sockets and summary, and releases DIR, which a new Start
// can use again. A folder Start made itself is removed. Close may be called more than once.
func (h *Host) Close() error {
	h.closeOnce.Do(func() { h.closeErr = h.teardown() })
	return h.closeErr
}

func (h *Host) teardown() error {
	var errs []error
	if h.ctl != nil {
		errs = append(errs, h.ctl.close())
	}
	h.cancel()
	if h.xs != nil {
		// Closing our connection ends blkback's watch.
		errs = append(errs, h.xs.Close())
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, d := range h.doms {
		if d.qemu == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.qemu.Stop(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("stop QEMU of %s: %w", d.info.Name, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if h.srv != nil {
		errs = append(errs, h.srv.Close())
	}
	h.wg.Wait()
	if h.blk != nil {
		errs = append(errs, h.blk.releaseAll())
	}
	// Only the host holding the folder's lock may clean it: a second host that failed to
	// get the lock must leave the first one's sockets alone.
	for _, g := range []string{"xenstored.sock", "control.sock", "xensim.json", "run/qmp-libxl-*", "run/stubdom-cdrom.*"} {
		if h.lock == nil {
			break
		}
		ms, _ := filepath.Glob(filepath.Join(h.dir, g))
		for _, m := range ms {
			if err := os.Remove(m); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if h.cfg.tempDir {
		errs = append(errs, os.RemoveAll(h.dir))
	}
	if h.lock != nil {
		errs = append(errs, h.lock.Close())
	}
	var out []error
	for _, e := range errs {
		if e != nil && !errors.Is(e, net.ErrClosed) && !errors.Is(e, xs.ErrClosed) {
			out = append(out, e)
		}
	}
	return errors.Join(out...)
}

// Dir is the host's folder.
func (h *Host) Dir() string { return h.dir }

// Name is the host's name.
func (h *Host) Name() string { return h.cfg.HostName }

// XenstoredPath is the xenstored socket, DIR/xenstored.sock.
func (h *Host) XenstoredPath() string { return filepath.Join(h.dir, "xenstored.sock") }

// ControlPath is the fault-knob control socket, DIR/control.sock.
func (h *Host) ControlPath() string { return filepath.Join(h.dir, "control.sock") }

// RunDir is libxl's run folder of the host (QMP sockets, empty-cdrom files), DIR/run.
func (h *Host) RunDir() string { return h.runDir() }

// LibDir is libxl's userdata folder of the host (JSON configurations, lock files), DIR/lib.
func (h *Host) LibDir() string { return h.libDir() }

// ISODir is the folder of the host's ISO images: Config.ISODir, else DIR/isos.
func (h *Host) ISODir() string { return h.isoDir() }

// ISOs lists the images Start made in DIR/isos.
func (h *Host) ISOs() []string { return append([]string(nil), h.isos...) }

// StartupTime is how long Start took.
func (h *Host) StartupTime() time.Duration { return h.startup }

// Env is the environment that points xenstore clients at the host: XENSTORED_PATH.
func (h *Host) Env() []string { return []string{"XENSTORED_PATH=" + h.XenstoredPath()} }

// WorkerFlags are the cdswap-worker flags that point a worker at this host.
func (h *Host) WorkerFlags() []string {
	return []string{
		"--host", h.cfg.HostName,
		"--xenstore", h.XenstoredPath(),
		"--qmp-dir", h.runDir(),
		"--libxl-dir", h.libDir(),
		"--iso-root", h.isoDir(),
	}
}

// Domains describes the guests, in domid order.
func (h *Host) Domains() []DomainInfo {
	out := make([]DomainInfo, len(h.doms))
	for i, d := range h.doms {
		out[i] = d.info
	}
	return out
}

// Domain finds a guest by name or domid (a stub domain's id or name finds its guest).
func (h *Host) Domain(nameOrID string) (DomainInfo, error) {
	d, err := h.find(nameOrID)
	if err != nil {
		return DomainInfo{}, err
	}
	return d.info, nil
}

func (h *Host) find(nameOrID string) (*domain, error) {
	if d, ok := h.byName[nameOrID]; ok {
		return d, nil
	}
	if n, err := strconv.ParseUint(nameOrID, 10, 32); err == nil {
		if d, ok := h.byID[uint32(n)]; ok {
			return d, nil
		}
	}
	if g, ok := strings.CutSuffix(nameOrID, "-dm"); ok {
		if d, ok := h.byName[g]; ok && d.info.Kind == KindStubdom {
			return d, nil
		}
	}
	names := make([]string, 0, len(h.doms))
	for i, d := range h.doms {
		if i == 8 {
			names = append(names, "...")
			break
		}
		names = append(names, fmt.Sprintf("%s (%d)", d.info.Name, d.info.DomID))
	}
	return nil, fmt.Errorf("domain %q: the host has %s: %w", nameOrID, strings.Join(names, ", "), ErrNoSuchDomain)
}

// QEMU returns the QEMU of the guest with this domid, or nil for a traditional guest or an
// unknown domid.
func (h *Host) QEMU(domid uint32) *simqemu.QEMU {
	if d, ok := h.byID[domid]; ok {
		return d.qemu
	}
	return nil
}

// XS is the host's in-process xenstored, for tests.
func (h *Host) XS() *xenstored.Server { return h.srv }

// Summary is what DIR/xensim.json and `xensim --json` hold.
type Summary struct {
	Host          string       `json:"host"`
	PID           int          `json:"pid"`
	Dir           string       `json:"dir"`
	XenstoredPath string       `json:"xenstored_path"`
	ControlSocket string       `json:"control_socket"`
	Env           []string     `json:"env"`
	WorkerFlags   []string     `json:"worker_flags"`
	RunDir        string       `json:"run_dir"`
	LibDir        string       `json:"lib_dir"`
	ISODir        string       `json:"iso_dir"`
	ISOs          []string     `json:"isos"`
	StartupMS     int64        `json:"startup_ms"`
	Domains       []DomainInfo `json:"domains"`
}

// Summary describes the running host.
func (h *Host) Summary() Summary {
	return Summary{
		Host: h.cfg.HostName, PID: os.Getpid(), Dir: h.dir,
		XenstoredPath: h.XenstoredPath(), ControlSocket: h.ControlPath(),
		Env: h.Env(), WorkerFlags: h.WorkerFlags(),
		RunDir: h.runDir(), LibDir: h.libDir(), ISODir: h.isoDir(), ISOs: h.ISOs(),
		StartupMS: h.startup.Milliseconds(), Domains: h.Domains(),
	}
}

func (h *Host) writeSummary() error {
	b, err := json.MarshalIndent(h.Summary(), "", "  ")
	if err != nil {
		return fmt.Errorf("encode summary: %w", err)
	}
	p := filepath.Join(h.dir, "xensim.json")
	if err := os.WriteFile(p+".tmp", append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

// guestOf returns the guest a frontend domid belongs to, and whether that frontend is the
// guest's stub domain.
func (h *Host) guestOf(fe uint32) (*domain, bool) {
	d, ok := h.byID[fe]
	if !ok {
		return nil, false
	}
	return d, d.info.StubDomID == fe
}

// faultsFor returns the knobs in force for a guest (none for nil).
func (h *Host) faultsFor(d *domain) DomainFaults {
	if d == nil {
		return DomainFaults{}
	}
	h.faultsMu.RLock()
	defer h.faultsMu.RUnlock()
	return h.faults.For(d.info.Name)
}

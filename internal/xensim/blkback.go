package xensim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/loopdev"
	"github.com/cdswap/cdswap/internal/xs"
)

// vbdRoot is where dom0's blkback finds its devices.
const vbdRoot = "/local/domain/0/backend/vbd"

// Timings of blkback.
const (
	// recheckEvery is how often a vbd held at Closing is looked at again (the stub domain
	// may let go of the medium, or a knob may change).
	recheckEvery = 100 * time.Millisecond
	// rescanEvery is how often blkback lists every backend, in case watch events were lost.
	rescanEvery = 2 * time.Second
	// connectAfter is how long a stub domain's blkfront waits at the backend's InitWait
	// before it connects. On a real host the toolstack runs the hotplug script only after
	// it saw InitWait, so InitWait always lasts until then; here the "script" runs by
	// itself, and a toolstack that waits for exactly InitWait (as libxl does) must get the
	// time to see it.
	connectAfter = 100 * time.Millisecond
)

// blkback plays Linux's blkback driver and the block hotplug script for every vbd backend
// in dom0, and blkfront in the stub domains. One goroutine per device serialises what
// happens to it; a watch on vbdRoot kicks them.
type blkback struct {
	h   *Host
	log *slog.Logger

	mu   sync.Mutex // guards devs
	devs map[string]*vbdDev
}

// vbdDev is one backend directory /local/domain/0/backend/vbd/<fe>/<devid>.
type vbdDev struct {
	path  string
	fe    uint32
	devid xen.DevID
	kick  chan struct{} // capacity 1: kicks coalesce

	// Owned by the device's goroutine until the host's goroutines have stopped.
	up        bool      // the hotplug script ran for the current incarnation
	loop      string    // the loop device made for it, "" for none
	dev       string    // what the stub domain sees as its device (loop device or image)
	cold      bool      // plugged while the host booted: no add-fd, QEMU opened it itself
	connectAt time.Time // when the stub domain's blkfront connects; zero when not pending
	refusal   string    // why the last close was refused, to log each reason once
}

func newBlkback(h *Host) *blkback {
	return &blkback{h: h, log: h.log.With("part", "blkback"), devs: map[string]*vbdDev{}}
}

// start sets the watch and runs the event loop until the host closes.
func (b *blkback) start(ctx context.Context) error {
	w, err := b.h.xs.Watch(ctx, vbdRoot, "xensim-blkback")
	if err != nil {
		return fmt.Errorf("start blkback: %w", err)
	}
	b.h.wg.Add(1)
	go func() {
		defer b.h.wg.Done()
		b.loop(w)
	}()
	return nil
}

func (b *blkback) loop(w *xs.Watch) {
	ctx := b.h.ctx
	tick := time.NewTicker(rescanEvery)
	defer tick.Stop()
	var dropped uint64
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events():
			if !ok {
				if ctx.Err() == nil {
					b.log.Error("blkback's xenstore watch ended", "err", w.Err())
				}
				return
			}
			b.route(ev.Path)
			if n := w.Dropped(); n != dropped {
				dropped = n
				b.rescan()
			}
		case <-tick.C:
			b.rescan()
		}
	}
}

// route kicks the device an event is about.
func (b *blkback) route(p string) {
	rest, ok := strings.CutPrefix(p, vbdRoot+"/")
	if !ok {
		b.rescan()
		return
	}
	parts := strings.Split(rest, "/")
	fe, err := strconv.ParseUint(parts[0], 10, 32)
	if err != nil {
		return
	}
	if len(parts) == 1 {
		// The frontend's whole folder changed: look at each of its devices.
		b.mu.Lock()
		for _, d := range b.devs {
			if d.fe == uint32(fe) {
				poke(d.kick)
			}
		}
		b.mu.Unlock()
		b.rescan()
		return
	}
	devid, err := strconv.Atoi(parts[1])
	if err != nil {
		return
	}
	b.kick(uint32(fe), xen.DevID(devid))
}

// rescan kicks every device there is and every device blkback knows.
func (b *blkback) rescan() {
	srv := b.h.srv
	fes, err := srv.Directory(vbdRoot)
	if err == nil {
		for _, f := range fes {
			fe, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				continue
			}
			ids, _ := srv.Directory(vbdRoot + "/" + f)
			for _, id := range ids {
				if n, err := strconv.Atoi(id); err == nil {
					b.kick(uint32(fe), xen.DevID(n))
				}
			}
		}
	}
	b.mu.Lock()
	for _, d := range b.devs {
		poke(d.kick)
	}
	b.mu.Unlock()
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// kick wakes a device's goroutine, starting it for a device not seen before.
func (b *blkback) kick(fe uint32, devid xen.DevID) {
	p := xen.BackendPath(0, fe, xen.KindVBD, devid)
	b.mu.Lock()
	defer b.mu.Unlock()
	d, ok := b.devs[p]
	if !ok {
		if b.h.ctx.Err() != nil {
			return
		}
		d = &vbdDev{path: p, fe: fe, devid: devid, kick: make(chan struct{}, 1)}
		b.devs[p] = d
		b.h.wg.Add(1)
		go func() {
			defer b.h.wg.Done()
			b.run(d)
		}()
	}
	poke(d.kick)
}

func (b *blkback) run(d *vbdDev) {
	ctx := b.h.ctx
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-retry:
		}
		retry = nil
		if after := b.reconcile(ctx, d); after > 0 {
			retry = time.After(after)
		}
	}
}

// read reads a node in-process, "" and false when absent.
func (b *blkback) read(p string) (string, bool) {
	v, err := b.h.srv.Read(p)
	if err != nil {
		return "", false
	}
	return v, true
}

func (b *blkback) write(p, v string) {
	if err := b.h.srv.Write(p, v); err != nil && b.h.ctx.Err() == nil {
		b.log.Error("write", "path", p, "err", err)
	}
}

// reconcile acts on the device's current state. It returns when to look again without an
// event (0: not needed): a pending connect, or a close it refused for now.
func (b *blkback) reconcile(ctx context.Context, d *vbdDev) time.Duration {
	sv, ok := b.read(d.path + "/state")
	if !ok {
		// No state: either the backend was removed, or it is being written.
		if _, err := b.h.srv.Directory(d.path); errors.Is(err, xs.ErrNotFound) {
			b.gone(ctx, d)
		}
		return 0
	}
	st, err := xen.ParseXenbusState(sv)
	if err != nil {
		return 0
	}
	online, ok := b.read(d.path + "/online")
	if !ok {
		online = "1"
	}
	switch {
	case st == xen.StateInitialising:
		if d.up {
			// Destroyed and created again between two looks: a new device.
			b.release(ctx, d)
		}
		b.hotplug(ctx, d)
		if !d.connectAt.IsZero() {
			return connectAfter
		}
	case st == xen.StateInitWait && !d.connectAt.IsZero():
		if wait := time.Until(d.connectAt); wait > 0 {
			return wait
		}
		b.connect(d)
	case st == xen.StateClosing && online == "0":
		d.connectAt = time.Time{}
		if b.tryClose(ctx, d) {
			return recheckEvery
		}
	}
	return 0
}

// gone forgets a device whose backend was removed.
func (b *blkback) gone(ctx context.Context, d *vbdDev) {
	if d.up || d.loop != "" {
		b.log.Debug("vbd removed", "backend", d.path)
	}
	b.release(ctx, d)
}

// release detaches the device's loop device and marks it down.
func (b *blkback) release(ctx context.Context, d *vbdDev) {
	if d.loop != "" {
		if err := loopdev.Detach(context.WithoutCancel(ctx), d.loop); err != nil {
			b.log.Error("detach loop device", "device", d.loop, "backend", d.path, "err", err)
		} else {
			b.log.Debug("loop device detached", "device", d.loop, "backend", d.path)
		}
		d.loop = ""
	}
	d.up = false
	d.dev = ""
	d.connectAt = time.Time{}
	d.refusal = ""
}

// releaseAll detaches every loop device still held; the device goroutines have stopped.
func (b *blkback) releaseAll() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	for _, d := range b.devs {
		if d.loop != "" {
			if err := loopdev.Detach(context.Background(), d.loop); err != nil {
				errs = append(errs, err)
			}
			d.loop = ""
		}
	}
	return errors.Join(errs...)
}

// hotplug is the block script's "add" plus blkback's probe: params is resolved (readlink -f)
// and must exist; a stub domain of a real QEMU gets a read-only loop device over it
// (losetup by name); then physical-device,
// hotplug-status and InitWait, and a stub domain's blkfront connects.
func (b *blkback) hotplug(ctx context.Context, d *vbdDev) {
	params, ok := b.read(d.path + "/params")
	if !ok {
		return // not all written yet
	}
	g, stub := b.h.guestOf(d.fe)
	df := b.h.faultsFor(g)
	d.up = true
	log := b.log.With("backend", d.path)
	fail := func(msg string) {
		log.Warn("hotplug script failed", "error", msg)
		b.write(d.path+"/hotplug-error", msg)
		b.write(d.path+"/hotplug-status", "error")
		b.write(d.path+"/state", strconv.Itoa(int(xen.StateInitWait)))
	}
	if df.HotplugFails {
		fail(fmt.Sprintf("xensim fault %s: %s add failed for %s", KnobHotplugFails, xen.BlockScript, params))
		return
	}
	if params == "" {
		fail("params is empty: no file or device to attach")
		return
	}
	// As Xen's block script: `file=$(readlink -f "$p")`, then losetup opens that name. Both
	// follow whatever the path leads to when they run, long after the toolstack checked it:
	// a toolstack must compare what the loop device holds with what it checked.
	file, err := filepath.EvalSymlinks(params)
	if err != nil {
		fail(params + " does not exist.") // block-common.sh's message
		return
	}
	fi, err := os.Stat(file)
	if err != nil {
		fail(params + " does not exist.")
		return
	}
	dev := ""
	switch {
	case fi.Mode()&os.ModeDevice != 0:
		dev = file
	case stub && g.useLoop:
		dev, err = loopdev.AttachReadOnly(ctx, file)
		if err != nil {
			fail(fmt.Sprintf("cannot make a loop device for %s: %v", params, err))
			return
		}
		d.loop = dev
		log.Debug("loop device attached", "device", dev, "file", file)
	}
	if dev != "" {
		var st unix.Stat_t
		if err := unix.Stat(dev, &st); err == nil {
			b.write(d.path+"/physical-device", fmt.Sprintf("%x:%x", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
		}
		b.write(d.path+"/physical-device-path", dev)
	} else {
		// No block device: the stub domain of a fake QEMU reads the file itself.
		b.write(d.path+"/physical-device-path", file)
	}
	b.write(d.path+"/hotplug-status", "connected")
	b.write(d.path+"/state", strconv.Itoa(int(xen.StateInitWait)))
	if !stub {
		return // an HVM guest uses the emulated drive: its blkfront never connects
	}
	d.dev = firstNonEmpty(dev, file)
	d.cold = !b.h.booted.Load()
	d.connectAt = time.Now().Add(connectAfter)
}

// connect is the stub domain's blkfront connecting to the backend, after which the stub
// domain sees the device and its agent add-fd's it.
func (b *blkback) connect(d *vbdDev) {
	d.connectAt = time.Time{}
	g, _ := b.h.guestOf(d.fe)
	fe := xen.FrontendPath(d.fe, d.devid)
	b.write(fe+"/state", strconv.Itoa(int(xen.StateInitialised)))
	b.write(d.path+"/state", strconv.Itoa(int(xen.StateConnected)))
	b.write(fe+"/state", strconv.Itoa(int(xen.StateConnected)))
	b.log.Debug("stub domain vbd connected", "backend", d.path, "device", d.dev, "coldplug", d.cold)
	if !d.cold {
		g.agent.vbdConnected(d.path, d.dev)
	}
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// tryClose is blkback's answer to online=0 and Closing: Closed, unless the knob says never
// or the stub domain still has the device open (blkfront refuses to close an open device).
// It reports whether it refused.
func (b *blkback) tryClose(ctx context.Context, d *vbdDev) bool {
	g, stub := b.h.guestOf(d.fe)
	refuse := func(why string) bool {
		if why != d.refusal {
			b.log.Info("vbd stays Closing", "backend", d.path, "why", why)
			d.refusal = why
		}
		return true
	}
	if b.h.faultsFor(g).NeverClose {
		return refuse("fault knob " + KnobNeverClose)
	}
	if stub {
		if why := b.h.mediumOpen(g, d.dev); why != "" {
			return refuse(why)
		}
	}
	fe := xen.FrontendPath(d.fe, d.devid)
	if _, ok := b.read(fe + "/state"); ok {
		b.write(fe+"/state", strconv.Itoa(int(xen.StateClosed)))
	}
	b.write(d.path+"/state", strconv.Itoa(int(xen.StateClosed)))
	b.log.Debug("vbd closed", "backend", d.path)
	b.release(ctx, d)
	return false
}

// mediumOpen says why the stub domain of g still has its cdrom device dev open ("" when it
// does not), as blkfront would see it: a real QEMU holds a descriptor of the device (in an
// fdset, even a removed one while the VM is paused, or for the medium in the drive); a fake
// QEMU holds a set with opaque stub-devid:<devid> or has a medium in the drive.
func (h *Host) mediumOpen(g *domain, dev string) string {
	if g.qemu == nil {
		return ""
	}
	opaque := g.info.DevID.StubOpaque()
	id := g.info.DevID.QEMUID()
	if f := g.qemu.Fake(); f != nil {
		for _, s := range f.Fdsets() {
			for _, fd := range s.FDs {
				if fd.Opaque == opaque {
					return fmt.Sprintf("QEMU still holds fd %d in fdset %d (opaque %s)", fd.FD, s.FdsetID, opaque)
				}
			}
		}
		if bs, ok := f.Block(id); ok && bs.Inserted {
			return fmt.Sprintf("drive %s still has %s inserted", id, bs.File)
		}
		return ""
	}
	// A real QEMU: look at its descriptors rather than ask it over QMP, which would
	// disturb the monitors (a drop-after knob, the one-client-at-a-time monitors).
	if n := openCount(g.qemu.PID(), dev); n > 0 {
		return fmt.Sprintf("QEMU (pid %d) still has %s open (%d descriptors)", g.qemu.PID(), dev, n)
	}
	return ""
}

// openCount counts the descriptors of process pid that point at path.
func openCount(pid int, path string) int {
	if pid <= 0 || path == "" {
		return 0
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(dir + "/" + e.Name()); err == nil && target == path {
			n++
		}
	}
	return n
}

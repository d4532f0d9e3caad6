package xensim

import (
	"context"
	"errors"
	"fmt"

	"github.com/cdswap/cdswap/internal/xensim/simqemu"
	"github.com/cdswap/cdswap/internal/xs/xenstored"
)

// ErrNeedsFake is wrapped when a knob needs the fake QEMU (a guest OS that locks the tray)
// but the guest runs a real one.
var ErrNeedsFake = errors.New("needs the fake QEMU")

// ErrNoQMP is wrapped when a QMP knob is set for a guest without QMP (qemu-xen-traditional).
var ErrNoQMP = errors.New("the guest has no QMP")

// Faults returns the knobs in force.
func (h *Host) Faults() Faults {
	h.faultsMu.RLock()
	defer h.faultsMu.RUnlock()
	return h.faults.clone()
}

// SetFaults puts f in force. Knobs of blkback, the agents and xenstored act from the next
// event on; QEMU knobs act at once: the tray is locked or unlocked, the guest paused or
// resumed (QMP stop/cont), and a DropAfter that differs from the one in force is armed. It
// fails, changing nothing, when f names an unknown guest, sets LockTray for a guest with a
// real QEMU (ErrNeedsFake), or sets a QMP knob for a traditional guest by name (ErrNoQMP);
// an All that does so skips those guests.
func (h *Host) SetFaults(ctx context.Context, f Faults) error {
	h.setMu.Lock()
	defer h.setMu.Unlock()
	return h.setFaultsLocked(ctx, f.clone(), "")
}

// SetFault sets one knob, named as in Knobs, from its string value: for the guest named by
// domain (a name or domid; the guest gets its own entry, starting from All), or in All, for
// every guest without its own entry, when domain is "". again-ratio is host-wide and takes no
// domain. Setting drop-after arms it again even when the value is unchanged.
func (h *Host) SetFault(ctx context.Context, domain, knob, value string) error {
	h.setMu.Lock()
	defer h.setMu.Unlock()
	f := h.Faults()
	name, rearm := "", ""
	if domain != "" {
		if knob == KnobAgainRatio {
			return fmt.Errorf("knob %s is host-wide: give no domain: %w", knob, ErrBadConfig)
		}
		d, err := h.find(domain)
		if err != nil {
			return err
		}
		name = d.info.Name
	}
	if err := f.Set(name, knob, value); err != nil {
		return err
	}
	if knob == KnobDropAfter {
		rearm = name
		if name == "" {
			rearm = "*"
		}
	}
	return h.setFaultsLocked(ctx, f, rearm)
}

// change is what a new set of knobs changes for one guest.
type change struct {
	d        *domain
	old, new DomainFaults
	arm      bool // arm the guest's DropAfter
}

// planFaults checks f against the guests and lists what changes from old. rearm names a guest
// whose DropAfter is armed even if unchanged ("*" for every guest following All). It uses
// only what the host planned, so Start checks its knobs before any QEMU runs.
func (h *Host) planFaults(old, f Faults, rearm string) ([]change, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	for name := range f.Domains {
		if _, ok := h.byName[name]; !ok {
			_, err := h.find(name)
			return nil, fmt.Errorf("fault knobs for %w", err)
		}
	}
	var changes []change
	for _, d := range h.doms {
		name := d.info.Name
		o, n := old.For(name), f.For(name)
		_, own := f.Domains[name]
		wantsQMP := n.LockTray || n.Paused || n.DropAfter != "" || n.KillQEMU
		if o.KillQEMU && !n.KillQEMU {
			return nil, fmt.Errorf("guest %s: its QEMU was killed and cannot be brought back (%s stays on until the host stops): %w", name, KnobKillQEMU, ErrBadConfig)
		}
		if d.mode == "" && wantsQMP {
			if own {
				return nil, fmt.Errorf("guest %s runs qemu-xen-traditional, which has no QMP: lock-tray, paused and drop-after do not apply: %w", name, ErrNoQMP)
			}
			continue // All does not reach guests without QMP
		}
		if n.LockTray && !o.LockTray && d.mode == QEMUReal {
			if own {
				return nil, fmt.Errorf("guest %s runs a real QEMU, and no guest OS runs in it to lock the tray: start it with --qemu=fake for this knob: %w", name, ErrNeedsFake)
			}
			n.LockTray = false // All locks only the trays a guest OS could lock
		}
		arm := n.DropAfter != "" && (n.DropAfter != o.DropAfter || rearm == name || rearm == "*" && !own)
		if o != n || arm {
			changes = append(changes, change{d, o, n, arm})
		}
	}
	return changes, nil
}

// setFaultsLocked checks f against the guests, then applies it (see planFaults for rearm).
func (h *Host) setFaultsLocked(ctx context.Context, f Faults, rearm string) error {
	h.faultsMu.RLock()
	old := h.faults
	h.faultsMu.RUnlock()
	changes, err := h.planFaults(old, f, rearm)
	if err != nil {
		return err
	}
	for _, c := range changes {
		if err := h.applyQEMU(ctx, c.d, c.old, c.new, c.arm); err != nil {
			return err
		}
	}
	h.srv.SetFaults(xenstored.Faults{AgainRatio: f.AgainRatio})
	h.faultsMu.Lock()
	h.faults = f
	h.faultsMu.Unlock()
	if f.AgainRatio != old.AgainRatio {
		h.log.Info("fault knob set", "knob", KnobAgainRatio, "value", f.AgainRatio)
	}
	for _, c := range changes {
		h.log.Info("fault knobs set", "domid", c.d.info.DomID, "guest", c.d.info.Name, "knobs", c.new.String())
	}
	return nil
}

// applyQEMU makes a guest's QEMU follow its QEMU knobs.
func (h *Host) applyQEMU(ctx context.Context, d *domain, was, now DomainFaults, arm bool) error {
	q := d.qemu
	if q == nil {
		return nil
	}
	if now.KillQEMU {
		if was.KillQEMU {
			return nil // dead: no other knob reaches it
		}
		if err := q.Kill(); err != nil {
			return fmt.Errorf("kill the QEMU of %s: %w", d.info.Name, err)
		}
		h.log.Info("QEMU killed, as asked", "domid", d.info.DomID, "guest", d.info.Name, "pid", d.info.QEMUPID)
		return nil
	}
	if was.LockTray != now.LockTray {
		if err := q.LockTray(d.info.DevID, now.LockTray); err != nil {
			if errors.Is(err, simqemu.ErrNeedsFake) {
				return fmt.Errorf("lock the tray of %s: %w: %w", d.info.Name, err, ErrNeedsFake)
			}
			return fmt.Errorf("lock the tray of %s: %w", d.info.Name, err)
		}
	}
	if was.Paused != now.Paused {
		if err := q.SetPaused(ctx, now.Paused); err != nil {
			return fmt.Errorf("pause %s (paused=%v): %w", d.info.Name, now.Paused, err)
		}
	}
	if arm {
		q.DropAfter(now.DropAfter)
	}
	return nil
}

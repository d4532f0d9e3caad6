package xensim

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/xen"
)

// Timings of the stub domain agent.
const (
	// agentDialTimeout bounds one attempt to reach the QEMU's private monitor.
	agentDialTimeout = 5 * time.Second
	// agentRetries and agentRetryEvery: a monitor that just dropped a connection (the
	// drop-after knob) is tried again, as mdev would run the script again on a new event.
	agentRetries    = 5
	agentRetryEvery = 200 * time.Millisecond
)

// agent plays what runs inside a Linux stub domain for cd-insert (facts §4.1): on a new
// xvd device it opens the device read-only and add-fd's it to QEMU over QEMU's second QMP
// monitor, with the opaque "stub-devid:<devid>" that libxl polls query-fdsets for.
type agent struct {
	h *Host
	d *domain
}

// vbdConnected is called by blkback when the stub domain's vbd at backend connects; dev is
// what the stub domain sees as /dev/xvdc (the loop device, or the image for a fake QEMU).
func (a *agent) vbdConnected(backend, dev string) {
	log := a.h.log.With("domid", a.d.info.DomID, "guest", a.d.info.Name, "part", "stubdom-agent")
	df := a.h.faultsFor(a.d)
	if df.NeverAddFD {
		log.Info("stub domain will not add the fd", "why", "fault knob "+KnobNeverAddFD, "device", dev)
		return
	}
	delay := a.h.cfg.AgentDelay + time.Duration(df.AddFDDelay)
	times := 1
	if df.AddFDTwice {
		times = 2
	}
	ctx := a.h.ctx
	a.h.wg.Add(1)
	go func() {
		defer a.h.wg.Done()
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The device must still be the one that connected: a vbd detached meanwhile may
		// have given its loop device to another.
		st, _ := a.h.srv.Read(backend + "/state")
		pdp, _ := a.h.srv.Read(backend + "/physical-device-path")
		if st != fmt.Sprint(int(xen.StateConnected)) || pdp != dev {
			log.Info("stub domain skips add-fd: the vbd changed meanwhile", "backend", backend, "state", st, "device", pdp)
			return
		}
		var err error
		for try := 0; try < agentRetries; try++ {
			if err = a.addFD(ctx, dev, times); err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(agentRetryEvery)
		}
		if err != nil && ctx.Err() == nil {
			log.Error("stub domain could not add the fd", "device", dev, "err", err)
		}
	}()
}

// addFD opens dev read-only (QEMU dups an fdset fd only for a matching access mode, and the
// drive is read-only) and add-fd's it times times; the agent's own copy is closed after, as
// QEMU holds its own.
func (a *agent) addFD(ctx context.Context, dev string, times int) error {
	f, err := os.OpenFile(dev, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dev, err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(ctx, agentDialTimeout)
	defer cancel()
	c, err := qmp.Dial(ctx, a.d.info.AgentSocket)
	if err != nil {
		return fmt.Errorf("connect to QEMU's cdrom monitor: %w", err)
	}
	defer c.Close()
	opaque := a.d.info.DevID.StubOpaque()
	for i := 0; i < times; i++ {
		info, err := c.AddFD(ctx, f, nil, opaque)
		if err != nil {
			return fmt.Errorf("add-fd %s: %w", dev, err)
		}
		a.h.log.Info("stub domain added the fd", "domid", a.d.info.DomID, "guest", a.d.info.Name,
			"fdset", info.FdsetID, "fd", info.FD, "opaque", opaque, "device", dev)
	}
	return nil
}

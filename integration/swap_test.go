package integration

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/internal/xensim/loopdev"
	"github.com/cdswap/cdswap/workflows"
)

// step is one change of a drive in a sequence, and what the drive must hold after it.
type step struct {
	medium  string // an image of the host's ISO folder, "" = eject
	outcome workflows.Outcome
}

// insertInsertEject is the sequence every swap test runs: an insert over the boot medium, a
// second insert over the first one (the first change with a stubdom fdset to release), and an
// eject.
var insertInsertEject = []step{
	{xensim.ISOTools, workflows.OutcomeChanged},
	{xensim.ISORescue, workflows.OutcomeChanged},
	{"", workflows.OutcomeEjected},
}

// TestSwapFakeQEMU runs insert, insert, eject on a stubdom guest and a dom0 guest with the
// fake QEMU, checking QEMU, xenstore, libxl's config and the history after each change.
func TestSwapFakeQEMU(t *testing.T) {
	need(t)
	t.Parallel()
	for _, kind := range []xensim.Kind{xensim.KindStubdom, xensim.KindDom0} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			h := startHost(t, xensim.Config{
				HostName: hostName("swap-" + string(kind)),
				Domains:  []xensim.DomainSpec{{Kind: kind}},
				QEMU:     xensim.QEMUFake,
			})
			dom := domainOf(t, h, kind)
			startWorker(t, h, workerOpts{})
			old := dom.Medium
			for _, s := range insertInsertEject {
				medium := ""
				if s.medium != "" {
					medium = iso(h, s.medium)
				}
				res := swapOK(t, h, dom, medium, s.outcome)
				assert.Equal(t, activities.Kind(kind), res.Kind, "result kind")
				assert.Equal(t, old, res.Old, "result: old medium")
				assert.Equal(t, medium, res.New, "result: new medium")
				checkDrive(t, h, dom, medium, old)
				old = medium
			}
		})
	}
}

// TestSwapRealQEMU runs insert, insert, eject on a stubdom guest and a dom0 guest whose QEMU
// is a real qemu-system-x86_64 (the stubdom's medium on a read-only loop device, as blkback
// gives it). A real QEMU's monitor serves one client at a time, so the worker is stopped
// (gracefully) before each look at QEMU, and a new one started after.
func TestSwapRealQEMU(t *testing.T) {
	need(t)
	testenv.RequireQEMU(t)
	testenv.Require(t, "read-only loop devices", loopdev.Available())
	t.Parallel()
	h := startHost(t, xensim.Config{
		HostName: hostName("swap-real"),
		Domains:  []xensim.DomainSpec{{Kind: xensim.KindStubdom}, {Kind: xensim.KindDom0}},
		QEMU:     xensim.QEMUReal,
	})
	doms := []xensim.DomainInfo{domainOf(t, h, xensim.KindStubdom), domainOf(t, h, xensim.KindDom0)}
	for _, d := range doms {
		if d.QEMU != "real" {
			t.Fatalf("guest %s runs a %s QEMU, want real", d.Name, d.QEMU)
		}
	}
	old := map[string]string{}
	for _, d := range doms {
		old[d.Name] = d.Medium
	}
	for _, s := range insertInsertEject {
		w := startWorker(t, h, workerOpts{})
		medium := ""
		if s.medium != "" {
			medium = iso(h, s.medium)
		}
		for _, d := range doms {
			swapOK(t, h, d, medium, s.outcome)
		}
		if err := w.stop(20 * time.Second); err != nil {
			t.Errorf("graceful stop of the worker: %v", err)
		}
		for _, d := range doms {
			checkDrive(t, h, d, medium, old[d.Name])
			old[d.Name] = medium
		}
	}
}

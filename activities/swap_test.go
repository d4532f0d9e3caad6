package activities

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/xensim"
)

// TestSwapSequences runs the steps of the workflow's insert and eject sequences, as
// ChangeMedium calls them, against a simulated host (our xenstored, blkback, the stub
// domain's agent) with the fake QEMU and with a real qemu-system-x86_64.
func TestSwapSequences(t *testing.T) {
	for _, mode := range []string{"fake", "real"} {
		t.Run(mode, func(t *testing.T) {
			cfg := xensim.Config{StubdomGuests: 1, Dom0Guests: 1}
			if mode == "real" {
				needRealQEMU(t)
				cfg.QEMU = xensim.QEMUReal
			}
			s := startSim(t, cfg)
			tools, rescue := s.iso(xensim.ISOTools), s.iso(xensim.ISORescue)
			for _, kind := range []xensim.Kind{xensim.KindStubdom, xensim.KindDom0} {
				t.Run(string(kind), func(t *testing.T) {
					dom := s.domain(kind)
					require.Equal(t, mode, dom.QEMU)
					key := "cdswap-test-" + dom.Name
					for i, medium := range []string{tools, rescue, "", tools} {
						r := s.swap(s.a, s.env, dom, medium, key)
						require.False(t, r.skipped, "change %d (%q) was skipped", i, medium)
						s.checkState(s.a, dom, medium, r)
						if i == 0 {
							assert.Equal(t, s.iso(xensim.ISODebian), r.insp.OldMedium, "the guest booted with debian-netinst")
							assert.Equal(t, "raw", r.insp.OldFormat)
						}
					}
					// The same medium again has nothing to do.
					again := s.inspect(dom, tools)
					assert.True(t, again.InPlace, "Inspect of the medium already in: %+v", again)
				})
			}
		})
	}
}

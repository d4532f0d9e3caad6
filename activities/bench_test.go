package activities

import (
	"context"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim"
)

// BenchmarkQMPConnection compares a query-block on the pooled connection the activities use
// with what a dial per activity would cost: the qmp-socket-lock, the greeting and
// capabilities negotiation, the command, and closing both again.
func BenchmarkQMPConnection(b *testing.B) {
	for _, mode := range []string{"fake", "real"} {
		b.Run(mode, func(b *testing.B) {
			cfg := xensim.Config{Dom0Guests: 1}
			if mode == "real" {
				needRealQEMU(b)
				cfg.QEMU = xensim.QEMUReal
			}
			s := startSim(b, cfg)
			dom := s.domain(xensim.KindDom0)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			info, err := xen.ReadDomainInfo(ctx, s.x, dom.DomID)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("pooled", func(b *testing.B) {
				for b.Loop() {
					if err := s.a.withQMP(ctx, info, func(c *qmp.Client) error {
						_, err := c.QueryBlock(ctx)
						return err
					}); err != nil {
						b.Fatal(err)
					}
				}
			})
			s.a.qmp.close() // the dials below need the monitor and the lock
			b.Run("dial", func(b *testing.B) {
				for b.Loop() {
					l, err := xen.Lock(ctx, xen.QMPSocketLockPath(s.h.LibDir(), dom.DomID, dom.UUID))
					if err != nil {
						b.Fatal(err)
					}
					c, err := qmp.Dial(ctx, dom.QMPSocket)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := c.QueryBlock(ctx); err != nil {
						b.Fatal(err)
					}
					c.Close()
					l.Unlock()
				}
			})
		})
	}
}

package xensim

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim/loopdev"
	"github.com/cdswap/cdswap/internal/xensim/simqemu"
)

// BenchmarkStart measures Start and Close of a host with 1 and 10 guests (half stubdom,
// half dom0). `xensim bench` measures 1, 10 and 50 guests as separate processes, with
// their memory.
func BenchmarkStart(b *testing.B) {
	for _, mode := range []simqemu.Mode{QEMUFake, QEMUReal} {
		for _, n := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/%d", mode, n), func(b *testing.B) {
				if mode == QEMUReal {
					testenv.RequireQEMU(b)
					testenv.Require(b, "read-only loop devices", loopdev.Available())
				}
				dir := testenv.SocketDir(b)
				var up time.Duration
				for i := 0; i < b.N; i++ {
					h, err := Start(testCtx(b), Config{Dir: dir, QEMU: mode, StubdomGuests: (n + 1) / 2, Dom0Guests: n / 2,
						Logger: slog.New(slog.DiscardHandler)})
					if err != nil {
						b.Fatal(err)
					}
					up += h.StartupTime()
					if err := h.Close(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(up.Milliseconds())/float64(b.N), "ms-to-ready/op")
			})
		}
	}
}

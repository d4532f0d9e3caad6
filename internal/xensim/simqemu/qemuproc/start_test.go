package qemuproc

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
)

// TestEjectRightAfterStartStays ejects hdc's empty tray as soon as Start (or the resume of
// a VM started paused) returns, and checks that the tray is still open a moment later.
// SeaBIOS's self test resets the IDE controllers, which closes an open tray without an
// event; had Start returned before it, the reset would come after the eject. Run 5 times,
// each case fails nearly every time with the wait for the firmware taken out.
func TestEjectRightAfterStartStays(t *testing.T) {
	bin := testenv.RequireQEMU(t)
	const hdc, id = xen.DevID(5632), "ide-5632"
	for _, paused := range []bool{false, true} {
		name := map[bool]string{false: "running", true: "started paused, then resumed"}[paused]
		t.Run(name, func(t *testing.T) {
			for range 5 {
				ctx := testenv.Context(t, 20*time.Second)
				sock := filepath.Join(testenv.SocketDir(t), "qmp.sock")
				p, err := Start(ctx, Config{Binary: bin, CDROMs: []xen.DevID{hdc}, Monitors: []string{sock}, Paused: paused})
				require.NoError(t, err)
				if paused {
					require.NoError(t, p.SetPaused(ctx, false))
				}
				c, err := qmp.Dial(ctx, sock)
				require.NoError(t, err)
				require.NoError(t, c.Eject(ctx, id, false))
				time.Sleep(150 * time.Millisecond) // the reset, had it been to come, comes in ~30 ms
				assert.True(t, trayOpen(t, ctx, c, id), "hdc's tray closed after the eject")
				c.Close()
				require.NoError(t, p.Stop())
			}
		})
	}
}

func trayOpen(t *testing.T, ctx context.Context, c *qmp.Client, id string) bool {
	t.Helper()
	blocks, err := c.QueryBlock(ctx)
	require.NoError(t, err)
	for _, b := range blocks {
		if b.QDev == id {
			return b.TrayOpen != nil && *b.TrayOpen
		}
	}
	t.Fatalf("no %s in query-block: %+v", id, blocks)
	return false
}

package xensim

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/xensim/simqemu"
)

// TestMedia: the counters follow what each guest's QEMU carried out, real or fake: a change
// and an eject per drive, the drives out now and at most, over the control socket too; a
// refused command counts nothing.
func TestMedia(t *testing.T) {
	forEachQEMU(t, false, func(t *testing.T, mode simqemu.Mode) {
		h := startHost(t, Config{QEMU: mode, Dom0Guests: 2, TradGuests: 1})
		a, b := h.Domains()[0], h.Domains()[1]
		ctx := testCtx(t)
		qa, qb := dialQMP(t, a.QMPSocket), dialQMP(t, b.QMPSocket)
		id := a.DevID.QEMUID()
		change := func(q *qmp.Client) {
			t.Helper()
			require.NoError(t, q.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: id, Filename: a.Medium, Format: "raw"}))
		}

		require.NoError(t, qa.Eject(ctx, id, false))
		require.NoError(t, qb.Eject(ctx, id, false))
		m := h.Media()
		assert.Equal(t, 2, m.Out, "Media().Out after two ejects")
		change(qa)
		require.NoError(t, qa.Eject(ctx, id, false))
		require.NoError(t, qa.Eject(ctx, id, false), "an eject of an empty drive succeeds")
		err := qa.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: id, Filename: h.Dir() + "/none.iso", Format: "raw"})
		require.Error(t, err, "a change QEMU refuses")
		require.ErrorIs(t, qa.Eject(ctx, "ide-9999", false), qmp.ErrDeviceNotFound)
		change(qa)
		change(qb)

		m = h.Media()
		assert.Equal(t, []DriveMedia{
			{Domain: a.Name, DomID: a.DomID, Vdev: "hdc", Changes: 2, Ejects: 3},
			{Domain: b.Name, DomID: b.DomID, Vdev: "hdc", Changes: 1, Ejects: 1},
		}, m.Drives, "the traditional guest has no QMP and no entry")
		assert.Equal(t, 3, m.Changes)
		assert.Equal(t, 4, m.Ejects)
		assert.Equal(t, 0, m.Out)
		assert.Equal(t, 2, m.MaxOut)
		assert.False(t, m.MaxOutAt.IsZero())

		c := NewControl(h.Dir())
		got, err := c.Media(ctx)
		require.NoError(t, err)
		assert.Equal(t, m.Drives, got.Drives)
		assert.Equal(t, m.MaxOut, got.MaxOut)
		assert.True(t, m.MaxOutAt.Equal(got.MaxOutAt))

		require.NoError(t, qb.Eject(ctx, id, false))
		before, err := c.ResetMedia(ctx)
		require.NoError(t, err)
		assert.Equal(t, [3]int{3, 5, 1}, [3]int{before.Changes, before.Ejects, before.Out}, "changes, ejects, out before the reset")
		m = h.Media()
		assert.Equal(t, 0, m.Changes+m.Ejects, "counts after a reset")
		assert.Equal(t, 1, m.Out, "the drive still out stays out")
		assert.Equal(t, 1, m.MaxOut, "the maximum starts again from the drives out")
		change(qb)
		assert.Equal(t, 0, h.Media().Out)
	})
}

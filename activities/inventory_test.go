package activities

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/xensim"
)

// Inventory lists every guest's drive as libxl's records have it, refuses the traditional
// guest's, and checks new media as Inspect would, per guest kind.
func TestInventory(t *testing.T) {
	s := startSim(t, xensim.Config{Domains: []xensim.DomainSpec{
		{Name: "stub-a", Kind: xensim.KindStubdom},
		{Name: "dom0-b", Kind: xensim.KindDom0, InitialMedium: xensim.EmptyMedium},
		{Name: "trad-c", Kind: xensim.KindTraditional},
	}})
	outside := filepath.Join(t.TempDir(), "outside.iso")
	require.NoError(t, os.WriteFile(outside, make([]byte, 64<<10), 0o644))
	iso := s.h.ISOs()[0]
	v, err := s.env.ExecuteActivity(NameInventory, InventoryInput{Host: s.h.Name(), Media: []MediumSpec{
		{Medium: iso}, {Medium: outside}, {Medium: iso, Format: "qcow2"},
	}})
	require.NoError(t, err)
	var res InventoryResult
	require.NoError(t, v.Get(&res))
	assert.Equal(t, s.h.Name(), res.Host)

	doms := s.h.Domains()
	require.Len(t, res.Drives, 3, "%+v", res.Drives)
	for i, d := range res.Drives {
		want := doms[i]
		assert.Equal(t, want.DomID, d.DomID)
		assert.Equal(t, want.Name, d.Name)
		assert.Equal(t, want.Vdev, d.Vdev)
		assert.Equal(t, want.DevID, d.DevID)
		assert.Equal(t, want.Medium, d.Medium, "drive of %s", d.Name)
		assert.Equal(t, want.Medium, d.ConfigMedium, "libxl JSON of %s", d.Name)
		assert.Empty(t, d.ConfigError)
	}
	assert.Equal(t, KindStubdom, res.Drives[0].Kind)
	assert.Equal(t, FormatRaw, res.Drives[0].Format)
	assert.Equal(t, KindDom0, res.Drives[1].Kind)
	assert.Empty(t, res.Drives[1].Medium)
	assert.Equal(t, KindTraditional, res.Drives[2].Kind)
	assert.Equal(t, ErrUnsupportedDeviceModel, res.Drives[2].RefusalType)
	assert.Empty(t, res.Drives[0].RefusalType)

	require.Len(t, res.Media, 6)
	byKey := map[string]MediumCheck{}
	for _, m := range res.Media {
		byKey[m.Medium+" "+m.Format+" "+string(m.Kind)] = m
	}
	assert.Empty(t, byKey[iso+" raw stubdom"].ErrorType)
	assert.NotEmpty(t, byKey[iso+" raw stubdom"].Resolved)
	assert.Empty(t, byKey[iso+" raw dom0"].ErrorType)
	assert.Equal(t, ErrMediumOutsideRoots, byKey[outside+" raw dom0"].ErrorType)
	assert.Equal(t, ErrMediumOutsideRoots, byKey[outside+" raw stubdom"].ErrorType)
	assert.Equal(t, ErrFormatMismatch, byKey[iso+" qcow2 stubdom"].ErrorType, "a stubdom takes raw only")
	assert.Equal(t, ErrFormatMismatch, byKey[iso+" qcow2 dom0"].ErrorType, "the ISO is raw, not qcow2")

	_, err = s.env.ExecuteActivity(NameInventory, InventoryInput{Host: "elsewhere"})
	assert.ErrorContains(t, err, "serves host")
}

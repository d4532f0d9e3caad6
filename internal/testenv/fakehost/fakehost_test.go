package fakehost_test

import (
	"context"
	"reflect"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"go.temporal.io/sdk/activity"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/testenv/fakehost"
)

// registry records what Register registers.
type registry map[string]any

func (r registry) RegisterActivityWithOptions(a any, o activity.RegisterOptions) { r[o.Name] = a }

// TestRegisterCoversActivities checks that the fake registers every activity a worker has,
// each with the real one's signature, so that a new or changed activity cannot be missed.
func TestRegisterCoversActivities(t *testing.T) {
	r := registry{}
	(&fakehost.Host{}).Register(r)
	ctxType := reflect.TypeOf((*context.Context)(nil)).Elem()
	product := reflect.TypeOf(&activities.Activities{})
	var names []string
	for i := 0; i < product.NumMethod(); i++ {
		m := product.Method(i)
		// An activity takes (receiver, ctx, input) and returns (result, error).
		if m.Type.NumIn() != 3 || m.Type.In(1) != ctxType || m.Type.NumOut() != 2 {
			continue
		}
		names = append(names, m.Name)
		fake, ok := r[m.Name]
		if !assert.True(t, ok, "Register does not register %s", m.Name) {
			continue
		}
		got, want := reflect.TypeOf(fake), reflect.FuncOf(
			[]reflect.Type{m.Type.In(1), m.Type.In(2)}, []reflect.Type{m.Type.Out(0), m.Type.Out(1)}, false)
		assert.Equal(t, want, got, "signature of the fake's %s", m.Name)
	}
	for name := range r {
		assert.True(t, slices.Contains(names, name), "Register registers %s, which package activities does not have", name)
	}
}

func TestHooksAndCalls(t *testing.T) {
	h := &fakehost.Host{}
	h.On(activities.NameEject, fakehost.FailCalls(1, activities.ErrTrayLocked, true, "locked"))
	ctx := context.Background()
	_, err := h.Eject(ctx, activities.EjectInput{})
	assert.ErrorContains(t, err, "locked", "first Eject")
	_, err = h.Eject(ctx, activities.EjectInput{Force: true})
	assert.NoError(t, err, "second Eject")
	assert.Equal(t, []string{"Eject", "Eject"}, h.Names())
	assert.Equal(t, []activities.EjectInput{{}, {Force: true}}, fakehost.Inputs[activities.EjectInput](h, activities.NameEject))

	w1, _ := h.WaitFdset(ctx, activities.WaitFdsetInput{})
	w2, _ := h.WaitFdset(ctx, activities.WaitFdsetInput{})
	a1, _ := h.AddFD(ctx, activities.AddFDInput{})
	assert.Equal(t, []int64{fakehost.FirstWaitFdset, fakehost.FirstWaitFdset + 1, fakehost.FirstAddFD},
		[]int64{w1.FdsetID, w2.FdsetID, a1.FdsetID}, "new fdsets")
}

func TestRefusals(t *testing.T) {
	h := &fakehost.Host{Name: "h9"}
	ctx := context.Background()
	_, err := h.ResolveDrive(ctx, activities.ResolveDriveInput{Domain: "nosuch"})
	assert.ErrorContains(t, err, `no guest named or numbered "nosuch" on host h9`)
	for _, d := range []string{fakehost.Domain, "7"} {
		_, err := h.ResolveDrive(ctx, activities.ResolveDriveInput{Domain: d})
		assert.NoError(t, err, "ResolveDrive(%s)", d)
	}
	_, err = h.Inspect(ctx, activities.InspectInput{Medium: "/isosx/a.iso"})
	assert.ErrorContains(t, err, "medium /isosx/a.iso is outside the ISO roots of host h9 (/isos)")
	res, err := h.Inspect(ctx, activities.InspectInput{})
	assert.NoError(t, err, "Inspect of an eject")
	assert.Equal(t, fakehost.EmptyCDROM, res.NewParams, "a stubdom's params for an empty drive")
}

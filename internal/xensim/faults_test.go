package xensim

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/simqemu"
	"github.com/cdswap/cdswap/internal/xs"
)

// One test per fault knob, each showing that the knob takes effect (and, where it matters,
// that turning it off undoes it).

// agentDelay keeps the stub domains quick in these tests.
const agentDelay = 10 * time.Millisecond

// stubHost is a host with one stubdom guest and one dom0 guest on the fake QEMU.
func stubHost(t *testing.T) (*Host, *xs.Client, DomainInfo) {
	t.Helper()
	h := startHost(t, Config{QEMU: QEMUFake, StubdomGuests: 1, Dom0Guests: 1, AgentDelay: agentDelay})
	return h, dialXS(t, h), domainByKind(t, h, KindStubdom)
}

// detach ejects the stubdom guest's drive, removes its stub fdsets and detaches the stub
// domain's vbd, as steps 2-4 of cd-insert do.
func detach(t *testing.T, x *xs.Client, q *qmp.Client, in DomainInfo) {
	t.Helper()
	ctx := testCtx(t)
	require.NoError(t, q.Eject(ctx, in.DevID.QEMUID(), false))
	sets, err := stubSets(ctx, q, in.DevID)
	require.NoError(t, err)
	for k := range sets {
		require.NoError(t, q.RemoveFD(ctx, k[0], nil))
	}
	v, err := xen.ReadVBD(ctx, x, in.StubDomID, in.DevID)
	require.NoError(t, err)
	require.NoError(t, xen.RemoveVBD(ctx, x, v.BackendPath()))
	require.NoError(t, xen.WaitBackendState(ctx, x, v.BackendPath(), xen.StateClosed))
	require.NoError(t, xen.DestroyVBD(ctx, x, v))
}

// attach adds the stub domain's vbd for params and waits for InitWait, as step 5 does; it
// returns the hotplug result.
func attach(t *testing.T, x *xs.Client, in DomainInfo, params string) error {
	t.Helper()
	ctx := testCtx(t)
	v := xen.VBD{FrontendDom: in.StubDomID, DevID: in.DevID, Vdev: in.Vdev, Type: xen.TypePhy, Params: params}
	require.NoError(t, xen.AddVBD(ctx, x, v))
	// InitWait or later: these tests are about the knobs, not about catching InitWait
	// before the stub domain connects (the sequence tests wait for exactly InitWait).
	require.NoError(t, waitState(ctx, x, v.BackendPath(), xen.StateInitWait, xen.StateConnected))
	return xen.WaitHotplug(ctx, x, v.BackendPath())
}

func setFault(t *testing.T, h *Host, domain, knob, value string) {
	t.Helper()
	require.NoError(t, h.SetFault(testCtx(t), domain, knob, value), "SetFault(%s, %s=%s)", domain, knob, value)
}

func TestFaultNeverAddFD(t *testing.T) {
	h, x, in := stubHost(t)
	q := dialQMP(t, in.QMPSocket)
	setFault(t, h, in.Name, KnobNeverAddFD, "true")
	detach(t, x, q, in)
	require.NoError(t, attach(t, x, in, in.Medium))
	require.NoError(t, xen.WaitBackendState(testCtx(t), x, in.BackendPath, xen.StateConnected))
	// Give the agent ten times what it needs; no set may come.
	time.Sleep(10 * (agentDelay + connectAfter))
	sets, err := stubSets(testCtx(t), q, in.DevID)
	require.NoError(t, err)
	assert.Empty(t, sets, "the stub domain added an fd with %s on", KnobNeverAddFD)

	setFault(t, h, in.Name, KnobNeverAddFD, "false")
	detach(t, x, q, in)
	require.NoError(t, attach(t, x, in, in.Medium))
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	_, err = waitNewStubSet(ctx, q, in.DevID, nil)
	require.NoError(t, err, "with the knob off the stub domain adds the fd again")
}

func TestFaultAddFDDelay(t *testing.T) {
	h, x, in := stubHost(t)
	q := dialQMP(t, in.QMPSocket)
	const late = 400 * time.Millisecond
	setFault(t, h, in.Name, KnobAddFDDelay, late.String())
	detach(t, x, q, in)
	require.NoError(t, attach(t, x, in, in.Medium))
	require.NoError(t, xen.WaitBackendState(testCtx(t), x, in.BackendPath, xen.StateConnected))
	connected := time.Now()
	_, err := waitNewStubSet(testCtx(t), q, in.DevID, nil)
	require.NoError(t, err)
	// A lower bound only: the set cannot come before the agent's delay plus the knob's.
	assert.GreaterOrEqual(t, time.Since(connected), late+agentDelay, "the fd came before %s", late)
}

func TestFaultAddFDTwice(t *testing.T) {
	h, x, in := stubHost(t)
	q := dialQMP(t, in.QMPSocket)
	setFault(t, h, in.Name, KnobAddFDTwice, "true")
	detach(t, x, q, in)
	require.NoError(t, attach(t, x, in, in.Medium))
	ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
	defer cancel()
	var sets map[[2]int64]bool
	for len(sets) < 2 && ctx.Err() == nil {
		var err error
		sets, err = stubSets(ctx, q, in.DevID)
		require.NoError(t, err)
		time.Sleep(20 * time.Millisecond)
	}
	require.Len(t, sets, 2, "two fdsets with opaque %s", in.DevID.StubOpaque())
	ids := map[int64]bool{}
	for k := range sets {
		ids[k[0]] = true
	}
	assert.Len(t, ids, 2, "the two fds are in two sets")
}

func TestFaultNeverClose(t *testing.T) {
	h, x, in := stubHost(t)
	q := dialQMP(t, in.QMPSocket)
	ctx := testCtx(t)
	setFault(t, h, in.Name, KnobNeverClose, "true")
	require.NoError(t, q.Eject(ctx, in.DevID.QEMUID(), false)) // nothing holds the device any more
	require.NoError(t, xen.RemoveVBD(ctx, x, in.BackendPath))
	short, cancel := context.WithTimeout(ctx, 5*recheckEvery)
	err := xen.WaitBackendState(short, x, in.BackendPath, xen.StateClosed)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "blkback closed with %s on", KnobNeverClose)
	assert.Equal(t, "5", read(t, x, in.BackendPath+"/state"))

	setFault(t, h, in.Name, KnobNeverClose, "false")
	require.NoError(t, xen.WaitBackendState(ctx, x, in.BackendPath, xen.StateClosed), "closes once the knob is off")
}

func TestFaultHotplugFails(t *testing.T) {
	h, x, in := stubHost(t)
	q := dialQMP(t, in.QMPSocket)
	detach(t, x, q, in)
	setFault(t, h, "", KnobHotplugFails, "true")
	err := attach(t, x, in, in.Medium)
	require.ErrorIs(t, err, xen.ErrHotplug)
	assert.Contains(t, err.Error(), KnobHotplugFails)
	assert.Equal(t, "error", read(t, x, in.BackendPath+"/hotplug-status"))
	assert.Equal(t, "1", read(t, x, xen.FrontendPath(in.StubDomID, in.DevID)+"/state"), "the frontend never connects")

	// Without the knob, a missing file fails the way block-common.sh does.
	setFault(t, h, "", KnobHotplugFails, "false")
	v, err := xen.ReadVBD(testCtx(t), x, in.StubDomID, in.DevID)
	require.NoError(t, err)
	require.NoError(t, xen.RemoveVBD(testCtx(t), x, v.BackendPath()))
	require.NoError(t, xen.WaitBackendState(testCtx(t), x, v.BackendPath(), xen.StateClosed))
	require.NoError(t, xen.DestroyVBD(testCtx(t), x, v))
	err = attach(t, x, in, "/nonexistent/x.iso")
	require.ErrorIs(t, err, xen.ErrHotplug)
	assert.Contains(t, err.Error(), "/nonexistent/x.iso does not exist.")
}

func TestFaultAgainRatio(t *testing.T) {
	h, x, _ := stubHost(t)
	ctx := testCtx(t)
	commit := func() error {
		tx, err := x.Begin(ctx)
		require.NoError(t, err)
		require.NoError(t, tx.Write(ctx, "/local/domain/0/data/x", "1"))
		return tx.Commit(ctx)
	}
	setFault(t, h, "", KnobAgainRatio, "1")
	for i := 0; i < 3; i++ {
		assert.ErrorIs(t, commit(), xs.ErrAgain, "commit %d with again-ratio 1", i)
	}
	assert.GreaterOrEqual(t, h.XS().Stats().InjectedAgain, uint64(3))
	setFault(t, h, "", KnobAgainRatio, "0")
	require.NoError(t, commit())
	assert.Error(t, h.SetFault(ctx, "stubdom-1", KnobAgainRatio, "1"), "again-ratio is host-wide")
}

func TestFaultDropAfter(t *testing.T) {
	forEachQEMU(t, false, func(t *testing.T, mode simqemu.Mode) {
		h := startHost(t, Config{QEMU: mode, Dom0Guests: 1})
		in := domainByKind(t, h, KindDom0)
		setFault(t, h, in.Name, KnobDropAfter, "query-status")
		q := dialQMP(t, in.QMPSocket)
		ctx := testCtx(t)
		_, err := q.QueryStatus(ctx)
		require.NoError(t, err, "the reply comes before the drop")
		select {
		case <-q.Done():
		case <-ctx.Done():
			t.Fatal("the connection did not drop after query-status")
		}
		_, err = q.QueryVersion(ctx)
		require.ErrorIs(t, err, qmp.ErrClosed)

		// One shot: a new connection keeps working.
		q2 := dialQMP(t, in.QMPSocket)
		_, err = q2.QueryStatus(ctx)
		require.NoError(t, err)
		_, err = q2.QueryVersion(ctx)
		require.NoError(t, err)
	})
}

func TestFaultLockTray(t *testing.T) {
	h, _, in := stubHost(t)
	q := dialQMP(t, in.QMPSocket)
	ctx := testCtx(t)
	setFault(t, h, in.Name, KnobLockTray, "true")
	err := q.Eject(ctx, in.DevID.QEMUID(), false)
	require.ErrorIs(t, err, qmp.ErrGenericError)
	assert.Contains(t, err.Error(), "is locked")
	assert.NotNil(t, cdrom(t, q, in.DevID).Inserted, "a locked tray keeps its medium")
	setFault(t, h, in.Name, KnobLockTray, "false")
	require.NoError(t, q.Eject(ctx, in.DevID.QEMUID(), false))
}

func TestFaultLockTrayRealQEMU(t *testing.T) {
	testenv.RequireQEMU(t)
	h := startHost(t, Config{QEMU: QEMUReal, Dom0Guests: 1, TradGuests: 1})
	in := domainByKind(t, h, KindDom0)
	err := h.SetFault(testCtx(t), in.Name, KnobLockTray, "true")
	require.ErrorIs(t, err, ErrNeedsFake)
	assert.Contains(t, err.Error(), "--qemu=fake")
	assert.False(t, h.Faults().For(in.Name).LockTray, "a refused knob changes nothing")
	// For every guest, the knob reaches only the trays a guest OS could lock: none here.
	require.NoError(t, h.SetFault(testCtx(t), "", KnobLockTray, "true"))
	assert.False(t, cdrom(t, dialQMP(t, in.QMPSocket), in.DevID).Locked)
}

func TestFaultPaused(t *testing.T) {
	forEachQEMU(t, false, func(t *testing.T, mode simqemu.Mode) {
		h := startHost(t, Config{QEMU: mode, Dom0Guests: 1})
		in := domainByKind(t, h, KindDom0)
		q := dialQMP(t, in.QMPSocket)
		ctx := testCtx(t)
		st, err := q.QueryStatus(ctx)
		require.NoError(t, err)
		require.True(t, st.Running, "the guest runs at start")
		setFault(t, h, in.Name, KnobPaused, "true")
		st, err = q.QueryStatus(ctx)
		require.NoError(t, err)
		assert.False(t, st.Running)
		assert.Equal(t, "paused", st.Status)
		setFault(t, h, in.Name, KnobPaused, "false")
		st, err = q.QueryStatus(ctx)
		require.NoError(t, err)
		assert.True(t, st.Running)
	})
}

// TestFaultsTraditional: QMP knobs do not apply to a guest without QMP.
func TestFaultsTraditional(t *testing.T) {
	h := startHost(t, Config{QEMU: QEMUFake, TradGuests: 1, Dom0Guests: 1})
	trad := domainByKind(t, h, KindTraditional)
	for _, knob := range []string{KnobPaused, KnobLockTray, KnobDropAfter} {
		err := h.SetFault(testCtx(t), trad.Name, knob, map[string]string{KnobDropAfter: "eject"}[knob])
		assert.ErrorIs(t, err, ErrNoQMP, "SetFault(%s, %s)", trad.Name, knob)
	}
	require.NoError(t, h.SetFault(testCtx(t), "", KnobPaused, "true"), "all guests: the traditional one is skipped")
	st, err := dialQMP(t, domainByKind(t, h, KindDom0).QMPSocket).QueryStatus(testCtx(t))
	require.NoError(t, err)
	assert.False(t, st.Running)
}

func TestSetFaultErrors(t *testing.T) {
	h, _, _ := stubHost(t)
	tests := []struct {
		name, domain, knob, value string
		want                      error
	}{
		{"unknown knob", "", "explode", "true", ErrBadConfig},
		{"bad bool", "", KnobNeverAddFD, "maybe", ErrBadConfig},
		{"bad duration", "", KnobAddFDDelay, "soon", ErrBadConfig},
		{"bad ratio", "", KnobAgainRatio, "1.5", ErrBadConfig},
		{"unknown domain", "nosuch", KnobNeverClose, "true", ErrNoSuchDomain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := h.SetFault(testCtx(t), tt.domain, tt.knob, tt.value)
			assert.ErrorIs(t, err, tt.want)
		})
	}
	assert.Equal(t, Faults{}, h.Faults(), "refused knobs change nothing")
	err := h.SetFaults(testCtx(t), Faults{Domains: map[string]DomainFaults{"nosuch": {}}})
	assert.ErrorIs(t, err, ErrNoSuchDomain)
}

// TestFaultsAtStart: knobs given in Config are in force from the start.
func TestFaultsAtStart(t *testing.T) {
	var f Faults
	require.NoError(t, f.Set("", KnobPaused, "true"))
	require.NoError(t, f.Set("stubdom-1", KnobNeverClose, "true"))
	h := startHost(t, Config{QEMU: QEMUFake, StubdomGuests: 1, Faults: f})
	assert.True(t, h.Faults().For("stubdom-1").NeverClose)
	assert.True(t, h.Faults().For("stubdom-1").Paused, "a guest's entry starts from All")
	in := domainByKind(t, h, KindStubdom)
	st, err := dialQMP(t, in.QMPSocket).QueryStatus(testCtx(t))
	require.NoError(t, err)
	assert.False(t, st.Running)
}

func TestControlSocket(t *testing.T) {
	h, _, in := stubHost(t)
	c := NewControl(h.Dir())
	ctx := testCtx(t)
	f, err := c.SetFault(ctx, in.Name, KnobAddFDDelay, "2s")
	require.NoError(t, err)
	assert.Equal(t, Duration(2*time.Second), f.For(in.Name).AddFDDelay)
	assert.Equal(t, Duration(2*time.Second), h.Faults().For(in.Name).AddFDDelay)

	f, err = c.Faults(ctx)
	require.NoError(t, err)
	assert.Equal(t, h.Faults(), f)

	_, err = c.SetFault(ctx, "", "explode", "1")
	require.ErrorIs(t, err, ErrRefused)
	assert.Contains(t, err.Error(), `unknown fault knob "explode"`)

	_, err = c.SetFaults(ctx, Faults{AgainRatio: 0.5})
	require.NoError(t, err)
	assert.Equal(t, Faults{AgainRatio: 0.5}, h.Faults())

	doms, err := c.Domains(ctx)
	require.NoError(t, err)
	assert.Equal(t, h.Domains(), doms)

	sum, err := c.Summary(ctx)
	require.NoError(t, err)
	assert.Equal(t, h.Summary(), sum)

	_, err = NewControl(testenv.SocketDir(t)).Faults(ctx)
	require.ErrorIs(t, err, ErrNoHost)
	assert.False(t, errors.Is(err, ErrRefused))
}

func TestParseKnob(t *testing.T) {
	tests := []struct {
		in                  string
		domain, knob, value string
	}{
		{"never-add-fd=true", "", "never-add-fd", "true"},
		{"web:paused=1", "web", "paused", "1"},
		{"paused", "", "paused", ""},
		{"drop-after=blockdev-change-medium", "", "drop-after", "blockdev-change-medium"},
	}
	for _, tt := range tests {
		d, k, v, err := ParseKnob(tt.in)
		require.NoError(t, err, "ParseKnob(%q)", tt.in)
		assert.Equal(t, [3]string{tt.domain, tt.knob, tt.value}, [3]string{d, k, v}, "ParseKnob(%q)", tt.in)
	}
	_, _, _, err := ParseKnob("=1")
	assert.ErrorIs(t, err, ErrBadConfig)
}

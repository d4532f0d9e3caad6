package activities

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim"
)

// TestDeviceModelGone kills a guest's QEMU after Inspect and checks that every QMP step
// then fails with the permanent ErrDeviceModelGone, in a message that says so, and that
// WaitFdset does not poll the dead QEMU until its timeout.
func TestDeviceModelGone(t *testing.T) {
	for _, k := range []xensim.Kind{xensim.KindStubdom, xensim.KindDom0} {
		t.Run(string(k), func(t *testing.T) {
			t.Parallel()
			s := startSim(t, xensim.Config{Domains: []xensim.DomainSpec{{Kind: k}}})
			dom := s.domain(k)
			insp := s.inspect(dom, s.iso(xensim.ISORescue))
			d := insp.Drive
			must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: "k"})
			require.NoError(t, s.h.SetFault(testenv.Context(t, 10*time.Second), dom.Name, xensim.KnobKillQEMU, "true"))

			_, err := run(t, s.env, s.a.Eject, EjectInput{Drive: d, Key: "k"})
			msg := requireType(t, err, ErrDeviceModelGone, false, "is gone", "QMP socket")
			assert.NotContains(t, msg, "wrapError")
			_, err = run(t, s.env, s.a.Verify, VerifyInput{Drive: d})
			requireType(t, err, ErrDeviceModelGone, false)
			_, err = run(t, s.env, s.a.Inspect, InspectInput{Host: s.h.Name(), DomID: dom.DomID, Vdev: dom.Vdev})
			requireType(t, err, ErrDeviceModelGone, false)
			if k == xensim.KindStubdom {
				_, err = run(t, s.env, s.a.WaitFdset, WaitFdsetInput{Drive: d, Timeout: time.Minute})
				requireType(t, err, ErrDeviceModelGone, false)
				_, err = run(t, s.env, s.a.ReleaseFdset, ReleaseFdsetInput{Drive: d, Key: "k"})
				requireType(t, err, ErrDeviceModelGone, false)
			}
		})
	}
}

// TestDeviceModelGoneRealQEMU kills a real dom0 QEMU: its socket file stays and refuses
// connections, its recorded pid is dead, and the step says which process died.
func TestDeviceModelGoneRealQEMU(t *testing.T) {
	testenv.RequireQEMU(t)
	s := startSim(t, xensim.Config{QEMU: xensim.QEMUReal, Domains: []xensim.DomainSpec{{Kind: xensim.KindDom0}}})
	dom := s.domain(xensim.KindDom0)
	d := s.inspect(dom, "").Drive
	require.NoError(t, s.h.SetFault(testenv.Context(t, 10*time.Second), dom.Name, xensim.KnobKillQEMU, "true"))
	fi, err := os.Lstat(dom.QMPSocket)
	require.NoError(t, err, "a dead QEMU leaves its socket file")
	require.NotZero(t, fi.Mode()&os.ModeSocket)
	_, err = run(t, s.env, s.a.Verify, VerifyInput{Drive: d})
	requireType(t, err, ErrDeviceModelGone, false, "has exited", "device-model-pid", "connection refused")
}

// TestDeviceModelRefusesBriefly takes a QEMU's socket away for less than the grace period,
// as a QEMU restarting its monitor would: the step waits and succeeds.
func TestDeviceModelRefusesBriefly(t *testing.T) {
	s := startSim(t, xensim.Config{Domains: []xensim.DomainSpec{{Kind: xensim.KindDom0}}})
	dom := s.domain(xensim.KindDom0)
	d := s.inspect(dom, "").Drive
	require.NoError(t, Close(s.a)) // its connection holds the qmp-socket-lock
	a := s.newActivities(nil)      // no connection open yet
	env := newEnv(t, a)
	away := dom.QMPSocket + ".away"
	require.NoError(t, os.Rename(dom.QMPSocket, away))
	back := make(chan error, 1)
	go func() {
		time.Sleep(deviceModelGrace / 3)
		back <- os.Rename(away, dom.QMPSocket)
	}()
	res, err := run(t, env, a.Verify, VerifyInput{Drive: d, Filename: dom.Medium})
	require.NoError(t, <-back)
	require.NoError(t, err, "a socket missing for %s is not a dead QEMU", deviceModelGrace/3)
	assert.Equal(t, dom.Medium, res.File)
}

// TestGuestPaused pauses each kind of guest: Inspect refuses before anything is touched, and
// a stubdom's DetachVBD answers ErrGuestPaused with the vbd still in place.
func TestGuestPaused(t *testing.T) {
	s := startSim(t, xensim.Config{Domains: []xensim.DomainSpec{{Kind: xensim.KindStubdom}, {Kind: xensim.KindDom0}}})
	ctx := testenv.Context(t, 10*time.Second)
	stub := s.domain(xensim.KindStubdom)
	d := s.inspect(stub, s.iso(xensim.ISORescue)).Drive
	for _, dom := range []xensim.DomainInfo{stub, s.domain(xensim.KindDom0)} {
		require.NoError(t, s.h.SetFault(ctx, dom.Name, xensim.KnobPaused, "true"))
		_, err := run(t, s.env, s.a.Inspect, InspectInput{Host: s.h.Name(), DomID: dom.DomID, Vdev: dom.Vdev, Medium: s.iso(xensim.ISORescue)})
		requireType(t, err, ErrGuestPaused, false, "is paused", `"paused"`, "unpause")
		for _, c := range s.h.QEMU(dom.DomID).Fake().Commands() {
			assert.NotContains(t, []string{"eject", "remove-fd", "add-fd", "blockdev-change-medium"}, c, "Inspect of a paused guest sent %s", c)
		}
	}
	must(t, s.env, s.a.Lock, LockInput{DomID: stub.DomID, Key: "k"})
	_, err := run(t, s.env, s.a.DetachVBD, DetachVBDInput{Drive: d, Key: "k"})
	requireType(t, err, ErrGuestPaused, false, "waiting for the guest to be unpaused")
	assert.NotEmpty(t, s.read(xen.LibxlPath(stub.StubDomID, stub.DevID)+"/params"), "DetachVBD of a paused guest removed the vbd")

	require.NoError(t, s.h.SetFault(ctx, stub.Name, xensim.KnobPaused, "false"))
	s.inspect(stub, s.iso(xensim.ISORescue))
}

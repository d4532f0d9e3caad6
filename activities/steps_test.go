package activities

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/qmp/qmptest"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim"
)

// count counts the commands named name in a fake QEMU's log.
func count(f *qmptest.Server, name string) int {
	n := 0
	for _, c := range f.Commands() {
		if c == name {
			n++
		}
	}
	return n
}

// TestStepsTwice runs every step of a stubdom insert and of a dom0 insert twice in a row, as
// a retry after a lost reply would: the second run finds its effect in place, says so, and
// sends nothing that changes QEMU or xenstore.
func TestStepsTwice(t *testing.T) {
	s := startSim(t, xensim.Config{StubdomGuests: 1, Dom0Guests: 1})
	tools := s.iso(xensim.ISOTools)

	t.Run("stubdom", func(t *testing.T) {
		dom := s.domain(xensim.KindStubdom)
		fake := s.h.QEMU(dom.DomID).Fake()
		key := "twice-stubdom"
		insp := s.inspect(dom, tools)
		d := insp.Drive
		assert.Equal(t, Drive{DomID: dom.DomID, Name: dom.Name, Vdev: "hdc", DevID: 5632, Kind: KindStubdom, StubDomID: dom.StubDomID, BackendType: "phy"}, d)
		assert.Equal(t, tools, insp.NewParams)

		l1 := must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: key})
		l2 := must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: key})
		assert.False(t, l1.AlreadyHeld)
		assert.True(t, l2.AlreadyHeld)
		assert.Equal(t, l1.Path, l2.Path)

		e1 := must(t, s.env, s.a.Eject, EjectInput{Drive: d, Key: key})
		e2 := must(t, s.env, s.a.Eject, EjectInput{Drive: d, Key: key})
		assert.False(t, e1.WasEmpty)
		assert.True(t, e2.WasEmpty)
		assert.Equal(t, 1, count(fake, "eject"))

		r1 := must(t, s.env, s.a.ReleaseFdset, ReleaseFdsetInput{Drive: d, Key: key})
		r2 := must(t, s.env, s.a.ReleaseFdset, ReleaseFdsetInput{Drive: d, Key: key})
		assert.Empty(t, r1.FdsetIDs, "no fdset at the first change after boot")
		assert.Empty(t, r2.FdsetIDs)
		assert.Zero(t, count(fake, "remove-fd"))

		d1 := must(t, s.env, s.a.DetachVBD, DetachVBDInput{Drive: d, Key: key})
		d2 := must(t, s.env, s.a.DetachVBD, DetachVBDInput{Drive: d, Key: key})
		assert.Equal(t, s.iso(xensim.ISODebian), d1.Params)
		assert.False(t, d1.WasAbsent)
		assert.True(t, d2.WasAbsent)
		assert.Empty(t, s.vbdDevids(dom.StubDomID))

		a1 := must(t, s.env, s.a.AttachVBD, AttachVBDInput{Drive: d, Key: key, Params: insp.NewParams})
		a2 := must(t, s.env, s.a.AttachVBD, AttachVBDInput{Drive: d, Key: key, Params: insp.NewParams})
		assert.False(t, a1.WasPresent)
		assert.True(t, a2.WasPresent)
		assert.Equal(t, []string{"5632"}, s.vbdDevids(dom.StubDomID))

		w1 := must(t, s.env, s.a.WaitFdset, WaitFdsetInput{Drive: d, Timeout: 5 * time.Second})
		w2 := must(t, s.env, s.a.WaitFdset, WaitFdsetInput{Drive: d, Timeout: 5 * time.Second})
		assert.Equal(t, w1.FdsetID, w2.FdsetID, "a retried wait finds the same set")

		c1 := must(t, s.env, s.a.ChangeMedium, ChangeMediumInput{Drive: d, Key: key, FdsetID: w1.FdsetID, Format: FormatHostDevice})
		c2 := must(t, s.env, s.a.ChangeMedium, ChangeMediumInput{Drive: d, Key: key, FdsetID: w1.FdsetID, Format: FormatHostDevice})
		assert.False(t, c1.WasInserted)
		assert.True(t, c2.WasInserted)
		assert.Equal(t, FdsetFilename(w1.FdsetID), c2.Filename)
		assert.Equal(t, 1, count(fake, "blockdev-change-medium"))

		rec := RecordInput{Drive: d, Key: key, Medium: insp.Medium, Format: insp.Format, Params: insp.NewParams}
		rc1 := must(t, s.env, s.a.Record, rec)
		cfg1, err := os.ReadFile(dom.ConfigPath)
		require.NoError(t, err)
		rc2 := must(t, s.env, s.a.Record, rec)
		cfg2, err := os.ReadFile(dom.ConfigPath)
		require.NoError(t, err)
		assert.True(t, rc1.Changed)
		assert.False(t, rc2.Changed)
		assert.Equal(t, cfg1, cfg2, "the second Record leaves the config as it was")

		v1 := must(t, s.env, s.a.Verify, VerifyInput{Drive: d, Filename: c1.Filename})
		v2 := must(t, s.env, s.a.Verify, VerifyInput{Drive: d, Filename: c1.Filename})
		assert.Equal(t, v1, v2)

		u1 := must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: key})
		u2 := must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: key})
		assert.True(t, u1.WasHeld)
		assert.False(t, u2.WasHeld)
		s.checkState(s.a, dom, tools, swapResult{fdset: w1.FdsetID})
	})

	t.Run("dom0", func(t *testing.T) {
		dom := s.domain(xensim.KindDom0)
		fake := s.h.QEMU(dom.DomID).Fake()
		key := "twice-dom0"
		insp := s.inspect(dom, tools)
		d := insp.Drive
		assert.Equal(t, KindDom0, d.Kind)
		assert.Equal(t, "qdisk", d.BackendType)
		assert.Equal(t, "aio:"+tools, insp.NewParams)
		assert.Equal(t, "aio:"+s.iso(xensim.ISODebian), insp.OldParams)

		must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: key})
		must(t, s.env, s.a.Eject, EjectInput{Drive: d, Key: key})
		add := AddFDInput{Drive: d, Key: key, Medium: insp.Medium, Format: insp.Format}
		f1 := must(t, s.env, s.a.AddFD, add)
		f2 := must(t, s.env, s.a.AddFD, add)
		assert.False(t, f1.Reused)
		assert.True(t, f2.Reused)
		assert.Equal(t, f1.FdsetID, f2.FdsetID)
		assert.Equal(t, 1, count(fake, "add-fd"))

		cm := ChangeMediumInput{Drive: d, Key: key, FdsetID: f1.FdsetID, Format: insp.Format}
		c1 := must(t, s.env, s.a.ChangeMedium, cm)
		c2 := must(t, s.env, s.a.ChangeMedium, cm)
		assert.False(t, c1.WasInserted)
		assert.True(t, c2.WasInserted)
		assert.Equal(t, 1, count(fake, "blockdev-change-medium"))
		b, _ := fake.Block(dom.DevID.QEMUID())
		assert.Equal(t, tools, b.Path, "the fd QEMU holds is the medium's")

		// A third AddFD (a workflow that lost ChangeMedium's reply and redid both) finds no
		// set to reuse (it was removed once the medium was in) and adds a new one; it is
		// left for the next AddFD to clean up.
		rec := RecordInput{Drive: d, Key: key, Medium: insp.Medium, Format: insp.Format, Params: insp.NewParams}
		assert.True(t, must(t, s.env, s.a.Record, rec).Changed)
		assert.False(t, must(t, s.env, s.a.Record, rec).Changed)
		must(t, s.env, s.a.Verify, VerifyInput{Drive: d, Filename: c1.Filename})
		must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: key})
		s.checkState(s.a, dom, tools, swapResult{fdset: f1.FdsetID})
	})
}

func TestResolveDrive(t *testing.T) {
	s := startSim(t, xensim.Config{StubdomGuests: 1, Dom0Guests: 1, TradGuests: 1})
	stub, dom0, trad := s.domain(xensim.KindStubdom), s.domain(xensim.KindDom0), s.domain(xensim.KindTraditional)
	// A disk next to the dom0 guest's cdrom.
	require.NoError(t, xen.AddVBD(testenv.Context(t, 5*time.Second), s.x, xen.VBD{FrontendDom: dom0.DomID, Vdev: "xvda", Type: xen.TypePhy, Params: "/dev/vg/disk", Mode: "w", DeviceType: "disk"}))
	host := s.h.Name()
	tests := []struct {
		name    string
		in      ResolveDriveInput
		want    ResolveDriveResult
		errType string
		msgs    []string
	}{
		{name: "stubdom by name", in: ResolveDriveInput{Host: host, Domain: stub.Name, Vdev: "hdc"},
			want: ResolveDriveResult{DomID: stub.DomID, Name: stub.Name, DevID: 5632, Kind: KindStubdom}},
		{name: "dom0 by domid", in: ResolveDriveInput{Host: host, Domain: fmt.Sprint(dom0.DomID), Vdev: "hdc"},
			want: ResolveDriveResult{DomID: dom0.DomID, Name: dom0.Name, DevID: 5632, Kind: KindDom0}},
		{name: "traditional is resolved, Inspect refuses it", in: ResolveDriveInput{Host: host, Domain: trad.Name, Vdev: "hdc"},
			want: ResolveDriveResult{DomID: trad.DomID, Name: trad.Name, DevID: 5632, Kind: KindTraditional}},
		{name: "wrong host", in: ResolveDriveInput{Host: "other", Domain: stub.Name, Vdev: "hdc"}, errType: ErrWrongHost,
			msgs: []string{`serves host "sim0"`, `names host "other"`, "--host other"}},
		{name: "unknown domain", in: ResolveDriveInput{Host: host, Domain: "nope", Vdev: "hdc"}, errType: ErrNoSuchDomain,
			msgs: []string{`"nope"`, stub.Name, "xl list"}},
		{name: "unknown domid", in: ResolveDriveInput{Host: host, Domain: "999", Vdev: "hdc"}, errType: ErrNoSuchDomain},
		{name: "the stub domain", in: ResolveDriveInput{Host: host, Domain: stub.StubName, Vdev: "hdc"}, errType: ErrNoSuchDomain,
			msgs: []string{"is the stub domain of domain", "name the guest"}},
		{name: "dom0", in: ResolveDriveInput{Host: host, Domain: "0", Vdev: "hdc"}, errType: ErrBadInput},
		{name: "no such drive", in: ResolveDriveInput{Host: host, Domain: dom0.Name, Vdev: "hdd"}, errType: ErrNoSuchDrive,
			msgs: []string{"has no drive hdd", "CD-ROM drives are hdc"}},
		{name: "a disk", in: ResolveDriveInput{Host: host, Domain: dom0.Name, Vdev: "xvda"}, errType: ErrNotCDROM,
			msgs: []string{"xvda", "is a disk, not a CD-ROM drive"}},
		{name: "bad vdev", in: ResolveDriveInput{Host: host, Domain: dom0.Name, Vdev: "floppy"}, errType: ErrBadInput},
		{name: "no domain", in: ResolveDriveInput{Host: host, Vdev: "hdc"}, errType: ErrBadInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := run(t, s.env, s.a.ResolveDrive, tt.in)
			if tt.errType != "" {
				requireType(t, err, tt.errType, false, tt.msgs...)
				return
			}
			require.NoError(t, err)
			got.Meta = Meta{}
			assert.Equal(t, tt.want, got, "ResolveDrive(%+v)", tt.in)
		})
	}
}

func TestInspectRefusals(t *testing.T) {
	s := startSim(t, xensim.Config{StubdomGuests: 1, Dom0Guests: 1, TradGuests: 1})
	stub, dom0, trad := s.domain(xensim.KindStubdom), s.domain(xensim.KindDom0), s.domain(xensim.KindTraditional)
	host := s.h.Name()
	outside := filepath.Join(s.h.Dir(), "outside.iso")
	require.NoError(t, os.WriteFile(outside, make([]byte, 4096), 0o644))
	require.NoError(t, os.Symlink(outside, s.iso("sneaky.iso")))
	require.NoError(t, os.Mkdir(s.iso("folder"), 0o755))
	qcow := s.iso(xensim.QCOW2Image)
	tests := []struct {
		name    string
		in      InspectInput
		errType string
		msgs    []string
	}{
		{"wrong host", InspectInput{Host: "elsewhere", DomID: stub.DomID, Vdev: "hdc"}, ErrWrongHost, nil},
		{"traditional", InspectInput{Host: host, DomID: trad.DomID, Vdev: "hdc"}, ErrUnsupportedDeviceModel,
			[]string{"qemu-xen-traditional", "xl cd-insert"}},
		{"unknown domid", InspectInput{Host: host, DomID: 4242, Vdev: "hdc"}, ErrNoSuchDomain, []string{"domain 4242 does not exist"}},
		{"stub domain's own domid", InspectInput{Host: host, DomID: stub.StubDomID, Vdev: "hdc"}, ErrBadInput, []string{"stub domain"}},
		{"domid 0", InspectInput{Host: host, DomID: 0, Vdev: "hdc"}, ErrBadInput, nil},
		{"no such drive", InspectInput{Host: host, DomID: stub.DomID, Vdev: "hdd"}, ErrNoSuchDrive, []string{"no drive hdd"}},
		{"outside the roots", InspectInput{Host: host, DomID: dom0.DomID, Vdev: "hdc", Medium: "/etc/passwd"}, ErrMediumOutsideRoots,
			[]string{"/etc/passwd is outside the ISO roots"}},
		{"symlink out", InspectInput{Host: host, DomID: dom0.DomID, Vdev: "hdc", Medium: s.iso("sneaky.iso")}, ErrMediumOutsideRoots,
			[]string{"medium " + s.iso("sneaky.iso") + " is outside the ISO roots"}},
		{"missing", InspectInput{Host: host, DomID: dom0.DomID, Vdev: "hdc", Medium: s.iso("nope.iso")}, ErrMediumNotFound, nil},
		{"folder", InspectInput{Host: host, DomID: dom0.DomID, Vdev: "hdc", Medium: s.iso("folder")}, ErrMediumNotRegular, nil},
		{"qcow2 as raw", InspectInput{Host: host, DomID: dom0.DomID, Vdev: "hdc", Medium: qcow}, ErrFormatMismatch,
			[]string{"holds a qcow2 image, but format raw was asked"}},
		{"qcow2 for a stubdom", InspectInput{Host: host, DomID: stub.DomID, Vdev: "hdc", Medium: qcow, Format: "qcow2"}, ErrFormatMismatch,
			[]string{"raw images only"}},
		{"relative medium", InspectInput{Host: host, DomID: dom0.DomID, Vdev: "hdc", Medium: "tools.iso"}, ErrBadInput, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := run(t, s.env, s.a.Inspect, tt.in)
			requireType(t, err, tt.errType, false, tt.msgs...)
		})
	}

	t.Run("qcow2 as qcow2 for dom0", func(t *testing.T) {
		r := must(t, s.env, s.a.Inspect, InspectInput{Host: host, DomID: dom0.DomID, Vdev: "hdc", Medium: qcow, Format: "qcow2"})
		assert.Equal(t, "qcow2", r.Format)
		assert.Equal(t, "qcow2:"+qcow, r.NewParams)
	})
	t.Run("eject of a stubdom guest", func(t *testing.T) {
		r := s.inspect(stub, "")
		assert.Equal(t, stub.EmptyCDROM, r.NewParams)
		assert.Equal(t, s.iso(xensim.ISODebian), r.OldMedium)
		assert.Equal(t, "7.2.0", r.QEMUVersion)
		assert.False(t, r.InPlace)
	})
}

// TestLock shows the device-changes lock excluding xl, another swap and another worker, and
// a new worker taking it again for a swap that an old one started.
func TestLock(t *testing.T) {
	s := startSim(t, xensim.Config{StubdomGuests: 1})
	dom := s.domain(xensim.KindStubdom)
	ctx := testenv.Context(t, 30*time.Second)
	path := xen.DeviceChangesLockPath(s.h.LibDir(), dom.DomID, dom.UUID)

	t.Run("held by xl", func(t *testing.T) {
		xl, err := xen.Lock(ctx, path)
		require.NoError(t, err)
		_, err = run(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: "k1"})
		requireType(t, err, ErrLockBusy, true, "held by another process")
		require.NoError(t, xl.Unlock())
		r := must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: "k1"})
		assert.Equal(t, path, r.Path)
	})
	t.Run("another swap of the domain", func(t *testing.T) {
		_, err := run(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: "k2"})
		requireType(t, err, ErrLockBusy, true, "the swap k1 on this worker")
		insp := s.inspect(dom, "")
		_, err = run(t, s.env, s.a.Eject, EjectInput{Drive: insp.Drive, Key: "k2"})
		requireType(t, err, ErrLockBusy, true)
	})
	t.Run("unlock never releases another key", func(t *testing.T) {
		r := must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: "k2"})
		assert.False(t, r.WasHeld)
		assert.NotNil(t, s.a.locks.get("k1"))
	})
	t.Run("a new worker takes it again", func(t *testing.T) {
		insp := s.inspect(dom, "")
		b := s.newActivities(nil)
		envB := newEnv(t, b)
		// While the old worker lives, the new one cannot take it.
		_, err := run(t, envB, b.Eject, EjectInput{Drive: insp.Drive, Key: "k1"})
		requireType(t, err, ErrLockBusy, true)
		// The old worker dies: its flock goes with its files.
		require.NoError(t, Close(s.a))
		r := must(t, envB, b.Eject, EjectInput{Drive: insp.Drive, Key: "k1"})
		assert.False(t, r.WasEmpty)
		assert.NotNil(t, b.locks.get("k1"), "the new worker holds the lock under the swap's key")
		l := must(t, envB, b.Lock, LockInput{DomID: dom.DomID, Key: "k1"})
		assert.True(t, l.AlreadyHeld)
		must(t, envB, b.Unlock, UnlockInput{DomID: dom.DomID, Key: "k1"})
		xl, err := xen.Lock(ctx, path)
		require.NoError(t, err, "the lock is free after Unlock")
		require.NoError(t, xl.Unlock())
	})
}

// TestQMPSocketLock shows the worker holding libxl's qmp-socket-lock while its QMP
// connection is open (pinned for a swap), and letting it go after Unlock.
func TestQMPSocketLock(t *testing.T) {
	s := startSim(t, xensim.Config{Dom0Guests: 1})
	dom := s.domain(xensim.KindDom0)
	path := xen.QMPSocketLockPath(s.h.LibDir(), dom.DomID, dom.UUID)
	insp := s.inspect(dom, "")
	must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: "q"})
	must(t, s.env, s.a.Eject, EjectInput{Drive: insp.Drive, Key: "q"})
	short := testenv.Context(t, 200*time.Millisecond)
	_, err := xen.Lock(short, path)
	require.Error(t, err, "xl cannot talk QMP while the swap runs")
	must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: "q"})
	l, err := xen.Lock(testenv.Context(t, 5*time.Second), path)
	require.NoError(t, err, "the qmp-socket-lock is free once the swap is over")
	require.NoError(t, l.Unlock())
}

func TestEject(t *testing.T) {
	s := startSim(t, xensim.Config{Dom0Guests: 1})
	dom := s.domain(xensim.KindDom0)
	fake := s.h.QEMU(dom.DomID).Fake()
	insp := s.inspect(dom, "")
	d := insp.Drive
	must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: "e"})

	fake.LockTray(dom.DevID.QEMUID(), true)
	_, err := run(t, s.env, s.a.Eject, EjectInput{Drive: d, Key: "e"})
	requireType(t, err, ErrTrayLocked, true, "keeps the tray of hdc", "locked")
	b, _ := fake.Block(dom.DevID.QEMUID())
	assert.True(t, b.Inserted, "a refused eject leaves the medium in")

	r := must(t, s.env, s.a.Eject, EjectInput{Drive: d, Key: "e", Force: true})
	assert.False(t, r.WasEmpty)
	b, _ = fake.Block(dom.DevID.QEMUID())
	assert.False(t, b.Inserted, "a forced eject takes the medium out of a locked tray")

	hdd := d
	hdd.Vdev, hdd.DevID = "hdd", 5696
	_, err = run(t, s.env, s.a.Eject, EjectInput{Drive: hdd, Key: "e"})
	requireType(t, err, ErrNoSuchDrive, false, "no drive ide-5696", "Xen 4.16")

	bad := d
	bad.DevID = 1
	_, err = run(t, s.env, s.a.Eject, EjectInput{Drive: bad, Key: "e"})
	requireType(t, err, ErrBadInput, false, "pass the Drive Inspect returned")
	must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: "e"})
}

// TestWaitFdset shows the wait taking only a new set: a stale set with the drive's opaque
// that was there before the vbd connected is ignored, a released set whose id QEMU gives
// to the new one is taken, a resumed attempt keeps its count, and an agent that never
// add-fds ends in ErrFdsetTimeout.
func TestWaitFdset(t *testing.T) {
	s := startSim(t, xensim.Config{StubdomGuests: 1, AgentDelay: 100 * time.Millisecond})
	dom := s.domain(xensim.KindStubdom)
	fake := s.h.QEMU(dom.DomID).Fake()
	tools := s.iso(xensim.ISOTools)
	key := "w"
	insp := s.inspect(dom, tools)
	d := insp.Drive
	must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: key})
	must(t, s.env, s.a.Eject, EjectInput{Drive: d, Key: key})
	must(t, s.env, s.a.DetachVBD, DetachVBDInput{Drive: d, Key: key})

	// A stale set with the drive's opaque (one a remove-fd left, as while paused).
	staleFile, err := os.Open(tools)
	require.NoError(t, err)
	defer staleFile.Close()
	info, err := xen.ReadDomainInfo(testenv.Context(t, 5*time.Second), s.x, dom.DomID)
	require.NoError(t, err)
	var staleID int64
	ctx := testenv.Context(t, 10*time.Second)
	require.NoError(t, s.a.withQMP(ctx, info, func(c *qmp.Client) error {
		r, err := c.AddFD(ctx, staleFile, nil, dom.DevID.StubOpaque())
		staleID = r.FdsetID
		return err
	}))

	t.Run("timeout", func(t *testing.T) {
		// No vbd yet: nothing the stubdom could have added, so the known set is stale.
		var beats []WaitFdsetProgress
		s.env.SetOnActivityHeartbeatListener(func(_ *activity.Info, details converter.EncodedValues) {
			var p WaitFdsetProgress
			if details.Get(&p) == nil {
				beats = append(beats, p)
			}
		})
		defer s.env.SetOnActivityHeartbeatListener(nil)
		_, err := run(t, s.env, s.a.WaitFdset, WaitFdsetInput{Drive: d, KnownFdsets: []int64{staleID}, Interval: 20 * time.Millisecond, Timeout: 150 * time.Millisecond})
		requireType(t, err, ErrFdsetTimeout, false, "did not add-fd its new PV disk", "mdev -d", fmt.Sprintf("[%d]", staleID))
		require.NotEmpty(t, beats, "the wait heartbeats")
		// The SDK throttles heartbeats: the listener sees some of them, in order.
		for i, b := range beats {
			if i > 0 {
				assert.Greater(t, b.Polls, beats[i-1].Polls, "heartbeat %d counts on", i)
			}
			assert.Equal(t, []int64{staleID}, b.Ignored, "heartbeat %d reports the stale set", i)
		}
	})

	must(t, s.env, s.a.AttachVBD, AttachVBDInput{Drive: d, Key: key, Params: tools})
	t.Run("new set only", func(t *testing.T) {
		w := must(t, s.env, s.a.WaitFdset, WaitFdsetInput{Drive: d, KnownFdsets: []int64{staleID}, Interval: 10 * time.Millisecond})
		assert.NotEqual(t, staleID, w.FdsetID, "the stale set is not taken")
		assert.Greater(t, w.Polls, 1, "the agent add-fds 100 ms after the vbd connects")
		b, _ := fake.Block(dom.DevID.QEMUID())
		assert.False(t, b.Inserted)
		sets := setsWithOpaque(fake.Fdsets(), dom.DevID.StubOpaque())
		assert.ElementsMatch(t, []int64{staleID, w.FdsetID}, sets)
	})
	t.Run("resumed", func(t *testing.T) {
		s.env.SetHeartbeatDetails(WaitFdsetProgress{Polls: 7, Ignored: []int64{staleID}})
		defer s.env.SetHeartbeatDetails(nil)
		w := must(t, s.env, s.a.WaitFdset, WaitFdsetInput{Drive: d, KnownFdsets: []int64{staleID}})
		assert.Equal(t, 8, w.Polls, "the count goes on from the last heartbeat")
		assert.NotEqual(t, staleID, w.FdsetID)
	})

	// Release everything, as the next change does: QEMU frees the ids, and the stubdom's
	// next set takes the lowest one again.
	rel := must(t, s.env, s.a.ReleaseFdset, ReleaseFdsetInput{Drive: d, Key: key})
	assert.Len(t, rel.FdsetIDs, 2)
	assert.Empty(t, setsWithOpaque(fake.Fdsets(), dom.DevID.StubOpaque()), "a running VM drops removed sets")
	must(t, s.env, s.a.DetachVBD, DetachVBDInput{Drive: d, Key: key})
	must(t, s.env, s.a.AttachVBD, AttachVBDInput{Drive: d, Key: key, Params: tools})
	t.Run("reused id", func(t *testing.T) {
		w := must(t, s.env, s.a.WaitFdset, WaitFdsetInput{Drive: d, KnownFdsets: rel.FdsetIDs, Interval: 10 * time.Millisecond})
		assert.Equal(t, slices.Min(rel.FdsetIDs), w.FdsetID, "QEMU gave the new set the lowest free id, a released one")
	})
	must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: key})
}

// TestMissingStubdomVBD repairs libxl's dead end: a stubdom guest whose stubdom lost the
// drive's vbd (a change that failed between detach and attach) is still found through the
// guest's own vbd, and a change attaches the stubdom's vbd again.
func TestMissingStubdomVBD(t *testing.T) {
	s := startSim(t, xensim.Config{StubdomGuests: 1})
	dom := s.domain(xensim.KindStubdom)
	key := "broken"
	insp := s.inspect(dom, "")
	d := insp.Drive
	must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: key})
	must(t, s.env, s.a.Eject, EjectInput{Drive: d, Key: key})
	must(t, s.env, s.a.ReleaseFdset, ReleaseFdsetInput{Drive: d, Key: key})
	must(t, s.env, s.a.DetachVBD, DetachVBDInput{Drive: d, Key: key})
	must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: key})
	require.Empty(t, s.vbdDevids(dom.StubDomID), "the stubdom has no vbd for the drive")

	r := must(t, s.env, s.a.ResolveDrive, ResolveDriveInput{Host: s.h.Name(), Domain: dom.Name, Vdev: "hdc"})
	assert.Equal(t, KindStubdom, r.Kind)
	tools := s.iso(xensim.ISOTools)
	got := s.inspect(dom, tools)
	assert.False(t, got.InPlace)
	assert.Equal(t, "", got.OldMedium)
	assert.Equal(t, dom.EmptyCDROM, got.OldParams, "a restore would attach an empty drive, not nothing")
	assert.Equal(t, "phy", got.Drive.BackendType)

	res := s.swap(s.a, s.env, dom, tools, key)
	s.checkState(s.a, dom, tools, res)
}

// TestActivityNames checks that the exported methods of *Activities, which a worker
// registers as activities, are exactly the activity names of api.go.
func TestActivityNames(t *testing.T) {
	want := []string{NameResolveDrive, NameInspect, NameLock, NameUnlock, NameEject, NameReleaseFdset, NameDetachVBD,
		NameAttachVBD, NameWaitFdset, NameAddFD, NameChangeMedium, NameRecord, NameVerify, NameInventory}
	typ := reflect.TypeOf(&Activities{})
	var got []string
	for i := range typ.NumMethod() {
		got = append(got, typ.Method(i).Name)
	}
	assert.ElementsMatch(t, want, got)
}

func TestLockLeaseExpires(t *testing.T) {
	// A swap whose workflow was terminated never runs Unlock: its lease ends and the next
	// swap of the domain (or xl) gets the lock.
	s := startSim(t, xensim.Config{StubdomGuests: 1})
	dom := s.domain(xensim.KindStubdom)
	a := s.newActivities(func(c *Config) { c.LockLease = 300 * time.Millisecond })
	env := newEnv(t, a)
	must(t, env, a.Lock, LockInput{DomID: dom.DomID, Key: "terminated"})
	_, err := run(t, env, a.Lock, LockInput{DomID: dom.DomID, Key: "next"})
	requireType(t, err, ErrLockBusy, true, "the swap terminated on this worker")

	time.Sleep(400 * time.Millisecond)
	r := must(t, env, a.Lock, LockInput{DomID: dom.DomID, Key: "next"})
	assert.False(t, r.AlreadyHeld)
	assert.Nil(t, a.locks.get("terminated"), "the expired lease is gone from the table")
}

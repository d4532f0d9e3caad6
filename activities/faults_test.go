package activities

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/qmp/qmptest"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/internal/xensim/isofs"
	"github.com/cdswap/cdswap/internal/xs"
	"github.com/cdswap/cdswap/internal/xs/xenstored"
)

// dom0Rig is a minimal dom0 for one qemu-xen guest (domid 1) whose QEMU is a qmptest fake
// of a chosen version: our xenstored with the guest laid out as libxl lays it out, a JSON
// config and an ISO root.
type dom0Rig struct {
	dir, run, lib, isos string
	fake                *qmptest.Server
	srv                 *xenstored.Server
	a                   *Activities
	dom                 xensim.DomainInfo
}

const rigUUID = "0d9c3c35-1c8e-4d8a-9d4e-2f0c6c4b1a11"

func newDom0Rig(t *testing.T, v qmp.Version) *dom0Rig {
	t.Helper()
	r := &dom0Rig{dir: testenv.SocketDir(t)}
	r.run, r.lib, r.isos = filepath.Join(r.dir, "run"), filepath.Join(r.dir, "lib"), filepath.Join(r.dir, "isos")
	for _, d := range []string{r.run, r.lib, r.isos} {
		require.NoError(t, os.Mkdir(d, 0o755))
	}
	for _, n := range []string{"a.iso", "b.iso"} {
		require.NoError(t, isofs.Write(filepath.Join(r.isos, n), strings.ToUpper(n[:1]), map[string][]byte{"X.TXT": []byte(n)}))
	}
	srv := xenstored.New(xenstored.Config{})
	r.srv = srv
	sock := filepath.Join(r.dir, "xs.sock")
	ln, err := xenstored.Listen(sock)
	require.NoError(t, err)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	for p, v := range map[string]string{
		"/local/domain/0/name":     "Domain-0",
		"/local/domain/1/name":     "guest",
		"/local/domain/1/vm":       "/vm/" + rigUUID,
		"/vm/" + rigUUID + "/uuid": rigUUID,
		"/libxl/1/dm-version":      xen.DMQemuXen,
	} {
		require.NoError(t, srv.Write(p, v))
	}
	x, err := xs.Dial(testenv.Context(t, 5*time.Second), sock)
	require.NoError(t, err)
	defer x.Close()
	a := filepath.Join(r.isos, "a.iso")
	v0 := xen.VBD{FrontendDom: 1, DevID: 5632, Vdev: "hdc", Type: xen.TypeQdisk, Params: "aio:" + a}
	require.NoError(t, xen.AddVBD(testenv.Context(t, 5*time.Second), x, v0))
	cfg := fmt.Sprintf(`{"c_info": {"type": "hvm", "name": "guest", "uuid": %q}, "disks": [{"pdev_path": %q, "vdev": "hdc", "backend": "qdisk", "format": "raw", "removable": 1, "is_cdrom": 1}], "on_reboot": "restart"}`, rigUUID, a)
	r.dom = xensim.DomainInfo{DomID: 1, Name: "guest", Kind: xensim.KindDom0, UUID: rigUUID, Vdev: "hdc", DevID: 5632,
		ConfigPath: xen.ConfigPath(r.lib, 1, rigUUID), BackendPath: v0.BackendPath(), LibxlPath: v0.LibxlPath()}
	require.NoError(t, os.WriteFile(r.dom.ConfigPath, []byte(cfg), 0o600))

	r.fake = qmptest.New(qmptest.Options{Version: v, Logger: testLogger(t)})
	require.NoError(t, r.fake.Listen(xen.QMPSocketPath(r.run, 1)))
	t.Cleanup(func() { r.fake.Close() })
	require.NoError(t, r.fake.Insert("ide-5632", a, "raw"))

	r.a, err = New(testenv.Context(t, 5*time.Second), Config{Host: "rig", XenstorePath: sock, QMPDir: r.run, LibxlDir: r.lib,
		ISORoots: []string{r.isos}, Logger: testLogger(t), LockWait: 200 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(func() { Close(r.a) })
	return r
}

func (r *dom0Rig) read(t *testing.T, p string) string {
	t.Helper()
	v, err := r.srv.Read(p)
	require.NoError(t, err, "read %s", p)
	return v
}

// TestDropBetweenAddFDAndChangeMedium drops the QMP connection right after add-fd. Before
// QEMU 9.1 the set goes with the connection: ChangeMedium says ErrFdsetGone and a new AddFD
// fixes it. From 9.1 the set stays: ChangeMedium goes through, and a repeated AddFD reuses it.
func TestDropBetweenAddFDAndChangeMedium(t *testing.T) {
	for _, v := range []qmp.Version{{Major: 7, Minor: 2}, {Major: 9, Minor: 1}} {
		t.Run(v.String(), func(t *testing.T) {
			r := newDom0Rig(t, v)
			env := newEnv(t, r.a)
			b := filepath.Join(r.isos, "b.iso")
			insp := must(t, env, r.a.Inspect, InspectInput{Host: "rig", DomID: 1, Vdev: "hdc", Medium: b})
			d := insp.Drive
			must(t, env, r.a.Lock, LockInput{DomID: 1, Key: "drop"})
			must(t, env, r.a.Eject, EjectInput{Drive: d, Key: "drop"})
			r.fake.DropAfter("add-fd")
			add := must(t, env, r.a.AddFD, AddFDInput{Drive: d, Key: "drop", Medium: insp.Medium, Format: "raw"})
			cm := ChangeMediumInput{Drive: d, Key: "drop", FdsetID: add.FdsetID, Format: "raw"}
			_, err := run(t, env, r.a.ChangeMedium, cm)
			if !v.AtLeast(9, 1, 0) {
				requireType(t, err, ErrFdsetGone, false, fmt.Sprintf("fdset %d is no longer in QEMU", add.FdsetID), "AddFD passes the medium again")
				again := must(t, env, r.a.AddFD, AddFDInput{Drive: d, Key: "drop", Medium: insp.Medium, Format: "raw"})
				assert.False(t, again.Reused)
				cm.FdsetID = again.FdsetID
				must(t, env, r.a.ChangeMedium, cm)
			} else {
				require.NoError(t, err)
				again := must(t, env, r.a.AddFD, AddFDInput{Drive: d, Key: "drop", Medium: insp.Medium, Format: "raw"})
				assert.False(t, again.Reused, "the set was removed once the medium was in")
			}
			must(t, env, r.a.Verify, VerifyInput{Drive: d, Filename: FdsetFilename(cm.FdsetID)})
			st, _ := r.fake.Block("ide-5632")
			assert.Equal(t, b, st.Path)
			must(t, env, r.a.Unlock, UnlockInput{DomID: 1, Key: "drop"})
		})
	}
}

// TestAddFDLostReply loses add-fd's reply (the connection drops before it): the activity
// runs again on a new connection and, from QEMU 9.1, reuses the set the lost call made.
func TestAddFDLostReply(t *testing.T) {
	for _, v := range []qmp.Version{{Major: 7, Minor: 2}, {Major: 9, Minor: 1}} {
		t.Run(v.String(), func(t *testing.T) {
			r := newDom0Rig(t, v)
			env := newEnv(t, r.a)
			b := filepath.Join(r.isos, "b.iso")
			insp := must(t, env, r.a.Inspect, InspectInput{Host: "rig", DomID: 1, Vdev: "hdc", Medium: b})
			must(t, env, r.a.Lock, LockInput{DomID: 1, Key: "lost"})
			must(t, env, r.a.Eject, EjectInput{Drive: insp.Drive, Key: "lost"})
			r.fake.DropBeforeReply("add-fd")
			add := must(t, env, r.a.AddFD, AddFDInput{Drive: insp.Drive, Key: "lost", Medium: insp.Medium, Format: "raw"})
			assert.Equal(t, v.AtLeast(9, 1, 0), add.Reused, "reused the set of the lost call")
			must(t, env, r.a.ChangeMedium, ChangeMediumInput{Drive: insp.Drive, Key: "lost", FdsetID: add.FdsetID, Format: "raw"})
			assert.Len(t, r.fake.Fdsets(), 1, "one set: the medium's")
			must(t, env, r.a.Unlock, UnlockInput{DomID: 1, Key: "lost"})
		})
	}
}

// TestOldQEMU refuses a QEMU without blockdev-change-medium and explains a drive that a
// QEMU before 2.8 names differently.
func TestOldQEMU(t *testing.T) {
	r := newDom0Rig(t, qmp.Version{Major: 2, Minor: 4})
	env := newEnv(t, r.a)
	_, err := run(t, env, r.a.Inspect, InspectInput{Host: "rig", DomID: 1, Vdev: "hdc"})
	requireType(t, err, ErrUnsupportedDeviceModel, false, "older than 2.5")
}

func TestRecord(t *testing.T) {
	r := newDom0Rig(t, qmp.Version{Major: 7, Minor: 2})
	env := newEnv(t, r.a)
	insp := must(t, env, r.a.Inspect, InspectInput{Host: "rig", DomID: 1, Vdev: "hdc", Medium: filepath.Join(r.isos, "b.iso")})
	d := insp.Drive
	rec := RecordInput{Drive: d, Key: "rec", Medium: insp.Medium, Format: insp.Format, Params: insp.NewParams}

	t.Run("config keeps everything else", func(t *testing.T) {
		assert.True(t, must(t, env, r.a.Record, rec).Changed)
		raw, err := os.ReadFile(r.dom.ConfigPath)
		require.NoError(t, err)
		var cfg object
		require.NoError(t, cfg.UnmarshalJSON(raw))
		var keys []string
		for _, m := range cfg {
			keys = append(keys, m.key)
		}
		assert.Equal(t, []string{"c_info", "disks", "on_reboot"}, keys, "member order kept")
		assert.Contains(t, string(raw), `"pdev_path": "`+insp.Medium+`"`)
		assert.Contains(t, string(raw), `"is_cdrom": 1`)
		fi, err := os.Stat(r.dom.ConfigPath)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
		left, _ := filepath.Glob(filepath.Join(r.lib, "*.cdswap-*"))
		assert.Empty(t, left, "no temporary file left")
	})
	t.Run("eject", func(t *testing.T) {
		ej := RecordInput{Drive: d, Key: "rec", Params: ""}
		assert.True(t, must(t, env, r.a.Record, ej).Changed)
		raw, err := os.ReadFile(r.dom.ConfigPath)
		require.NoError(t, err)
		assert.NotContains(t, string(raw), "pdev_path")
		assert.Contains(t, string(raw), `"format": "empty"`)
		assert.False(t, must(t, env, r.a.Record, ej).Changed)
	})
	t.Run("no JSON config", func(t *testing.T) {
		require.NoError(t, os.Rename(r.dom.ConfigPath, r.dom.ConfigPath+".away"))
		defer os.Rename(r.dom.ConfigPath+".away", r.dom.ConfigPath)
		res := must(t, env, r.a.Record, rec)
		assert.True(t, res.Changed, "xenstore was still updated")
		_, err := os.Stat(r.dom.ConfigPath)
		assert.True(t, os.IsNotExist(err), "no config is made up")
	})
	t.Run("EAGAIN", func(t *testing.T) {
		// xenstored answers most commits EAGAIN, as when other writers win: the
		// transaction is run again inside the activity.
		r.srv.SetFaults(xenstored.Faults{AgainRatio: 0.75})
		defer r.srv.SetFaults(xenstored.Faults{})
		before := r.a.xsc.Stats().Retries
		for i, params := range []string{"aio:/elsewhere.iso", insp.NewParams, "aio:/elsewhere.iso", insp.NewParams, "aio:/elsewhere.iso", insp.NewParams} {
			in := rec
			in.Params = params
			res := must(t, env, r.a.Record, in)
			assert.True(t, res.Changed, "Record %d", i)
			assert.Equal(t, params, r.read(t, r.dom.LibxlPath+"/params"))
			assert.Equal(t, params, r.read(t, r.dom.BackendPath+"/params"))
		}
		assert.Greater(t, r.a.xsc.Stats().Retries, before, "some commits were retried")
	})
	t.Run("XSA-178: no frontend in libxl's tree", func(t *testing.T) {
		x, err := xs.Dial(testenv.Context(t, 5*time.Second), r.a.cfg.XenstorePath)
		require.NoError(t, err)
		defer x.Close()
		require.NoError(t, x.Rm(testenv.Context(t, 5*time.Second), r.dom.LibxlPath+"/frontend"))
		_, err = run(t, env, r.a.Record, rec)
		requireType(t, err, ErrNoSuchDrive, false, "frontend does not exist")
	})
}

func TestVerifyMismatch(t *testing.T) {
	r := newDom0Rig(t, qmp.Version{Major: 7, Minor: 2})
	env := newEnv(t, r.a)
	insp := must(t, env, r.a.Inspect, InspectInput{Host: "rig", DomID: 1, Vdev: "hdc"})
	_, err := run(t, env, r.a.Verify, VerifyInput{Drive: insp.Drive, Filename: "/dev/fdset/9"})
	requireType(t, err, ErrVerifyMismatch, true, "QEMU shows "+filepath.Join(r.isos, "a.iso")+" inserted", "want /dev/fdset/9")
	_, err = run(t, env, r.a.Verify, VerifyInput{Drive: insp.Drive})
	requireType(t, err, ErrVerifyMismatch, true, "want an empty drive")
}

// TestRestoreOutsideRoots puts back an old medium that lies outside the ISO roots, which
// libxl's records say the guest had, and refuses any other file outside the roots.
func TestRestoreOutsideRoots(t *testing.T) {
	r := newDom0Rig(t, qmp.Version{Major: 7, Minor: 2})
	env := newEnv(t, r.a)
	// The guest booted with an image outside the worker's roots.
	old := filepath.Join(r.dir, "boot.iso")
	require.NoError(t, isofs.Write(old, "BOOT", map[string][]byte{"B.TXT": []byte("b")}))
	other := filepath.Join(r.dir, "other.iso")
	require.NoError(t, isofs.Write(other, "OTHER", map[string][]byte{"O.TXT": []byte("o")}))
	x, err := xs.Dial(testenv.Context(t, 5*time.Second), r.a.cfg.XenstorePath)
	require.NoError(t, err)
	defer x.Close()
	ctx := testenv.Context(t, 5*time.Second)
	require.NoError(t, x.Write(ctx, r.dom.LibxlPath+"/params", "aio:"+old))
	require.NoError(t, r.fake.Insert("ide-5632", old, "raw"))

	insp := must(t, env, r.a.Inspect, InspectInput{Host: "rig", DomID: 1, Vdev: "hdc", Medium: filepath.Join(r.isos, "b.iso")})
	assert.Equal(t, old, insp.OldMedium)
	d := insp.Drive
	must(t, env, r.a.Lock, LockInput{DomID: 1, Key: "restore"})
	must(t, env, r.a.Eject, EjectInput{Drive: d, Key: "restore", Force: true})
	_, err = run(t, env, r.a.AddFD, AddFDInput{Drive: d, Key: "restore", Medium: other, Format: "raw"})
	requireType(t, err, ErrMediumOutsideRoots, false, other)
	add := must(t, env, r.a.AddFD, AddFDInput{Drive: d, Key: "restore", Medium: old, Format: "raw"})
	must(t, env, r.a.ChangeMedium, ChangeMediumInput{Drive: d, Key: "restore", FdsetID: add.FdsetID, Format: "raw"})
	st, _ := r.fake.Block("ide-5632")
	assert.Equal(t, old, st.Path)
	must(t, env, r.a.Unlock, UnlockInput{DomID: 1, Key: "restore"})
}

// TestVBDFaults covers the stubdom vbd steps' refusals and failures: a vbd that never
// closes, a hotplug script that fails, a vbd already there with other params, params that
// are not a resolved image under the roots, and the empty-cdrom file made when missing.
func TestVBDFaults(t *testing.T) {
	s := startSim(t, xensim.Config{StubdomGuests: 1})
	dom := s.domain(xensim.KindStubdom)
	ctx := testenv.Context(t, 30*time.Second)
	key := "vbd"
	tools := s.iso(xensim.ISOTools)
	insp := s.inspect(dom, tools)
	d := insp.Drive
	must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: key})
	must(t, s.env, s.a.Eject, EjectInput{Drive: d, Key: key})
	must(t, s.env, s.a.ReleaseFdset, ReleaseFdsetInput{Drive: d, Key: key})

	t.Run("never closes", func(t *testing.T) {
		require.NoError(t, s.h.SetFault(ctx, dom.Name, xensim.KnobNeverClose, "true"))
		a := s.newActivities(func(c *Config) { c.VBDTimeout = 200 * time.Millisecond })
		env := newEnv(t, a)
		require.NoError(t, Close(s.a)) // a takes the lock over
		s.a, s.env = a, env
		_, err := run(t, env, a.DetachVBD, DetachVBDInput{Drive: d, Key: key})
		requireType(t, err, ErrVBDBusy, true, "did not close within 200ms", "still has the disk open")
		assert.Equal(t, "0", s.read(dom.BackendPath+"/online"))
		require.NoError(t, s.h.SetFault(ctx, dom.Name, xensim.KnobNeverClose, "false"))
		r := must(t, env, a.DetachVBD, DetachVBDInput{Drive: d, Key: key})
		assert.Equal(t, s.iso(xensim.ISODebian), r.Params)
	})
	t.Run("params refused", func(t *testing.T) {
		require.NoError(t, os.Symlink(xensim.ISOTools, s.iso("alias.iso"))) // relative: it stays inside
		for _, tt := range []struct {
			name, params, errType string
		}{
			{"outside the roots", "/etc/hostname", ErrMediumOutsideRoots},
			{"not resolved", s.iso("alias.iso"), ErrBadInput},
			{"qcow2", s.iso(xensim.QCOW2Image), ErrFormatMismatch},
			{"relative", "tools.iso", ErrBadInput},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := run(t, s.env, s.a.AttachVBD, AttachVBDInput{Drive: d, Key: key, Params: tt.params})
				requireType(t, err, tt.errType, false)
				assert.Empty(t, s.vbdDevids(dom.StubDomID), "nothing was attached")
			})
		}
	})
	t.Run("hotplug fails", func(t *testing.T) {
		require.NoError(t, s.h.SetFault(ctx, dom.Name, xensim.KnobHotplugFails, "true"))
		_, err := run(t, s.env, s.a.AttachVBD, AttachVBDInput{Drive: d, Key: key, Params: tools})
		requireType(t, err, ErrHotplugFailed, false, "hotplug script failed", "hotplug-status error")
		require.NoError(t, s.h.SetFault(ctx, dom.Name, xensim.KnobHotplugFails, "false"))
		must(t, s.env, s.a.DetachVBD, DetachVBDInput{Drive: d, Key: key})
	})
	t.Run("empty-cdrom made when missing", func(t *testing.T) {
		require.NoError(t, os.Remove(dom.EmptyCDROM))
		r := must(t, s.env, s.a.AttachVBD, AttachVBDInput{Drive: d, Key: key, Params: dom.EmptyCDROM})
		assert.False(t, r.WasPresent)
		fi, err := os.Stat(dom.EmptyCDROM)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o400), fi.Mode().Perm())
		assert.Zero(t, fi.Size())
	})
	t.Run("conflict", func(t *testing.T) {
		_, err := run(t, s.env, s.a.AttachVBD, AttachVBDInput{Drive: d, Key: key, Params: tools})
		requireType(t, err, ErrVBDConflict, false, "already has a vbd for hdc with params "+dom.EmptyCDROM)
	})
	must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: key})
}

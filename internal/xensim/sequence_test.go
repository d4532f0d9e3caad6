package xensim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/simqemu"
	"github.com/cdswap/cdswap/internal/xs"
)

// These tests drive libxl's cd-insert (xen-cdrom-facts §1.3) by hand against xensim, with
// our xs and qmp clients, for each guest kind, with the real QEMU and with the fake.

// libxl's timeouts: LIBXL_DESTROY_TIMEOUT and LIBXL_INIT_TIMEOUT (10 s), and the 40 s of the
// whole cd-insert.
const (
	destroyTimeout = 10 * time.Second
	initTimeout    = 10 * time.Second
	insertTimeout  = 40 * time.Second
)

// record is step 8: type and params on the backend and the /libxl copy, in one transaction
// that first checks <libxl path>/frontend (XSA-178), retried on EAGAIN by Update.
func record(ctx context.Context, x *xs.Client, be, lp, typ, params string) error {
	return x.Update(ctx, func(tx *xs.Tx) error {
		if _, err := tx.Read(ctx, lp+"/frontend"); err != nil {
			return fmt.Errorf("internal error: %s/frontend does not exist: %w", lp, err)
		}
		for _, p := range []string{be, lp} {
			if err := tx.Write(ctx, p+"/type", typ); err != nil {
				return err
			}
			if err := tx.Write(ctx, p+"/params", params); err != nil {
				return err
			}
		}
		return nil
	})
}

// recordJSON puts the new medium in the guest's libxl JSON configuration.
func recordJSON(t *testing.T, in DomainInfo, pdev, format string) {
	t.Helper()
	b, err := os.ReadFile(in.ConfigPath)
	require.NoError(t, err)
	var cfg map[string]any
	require.NoError(t, json.Unmarshal(b, &cfg))
	disk := cfg["disks"].([]any)[0].(map[string]any)
	disk["pdev_path"], disk["format"] = pdev, format
	b, err = json.MarshalIndent(cfg, "", "    ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(in.ConfigPath, b, 0o600))
}

// stubdomChange runs libxl's stubdom cd-insert of medium ("" = cd-eject) on guest in, over
// q, libxl's QMP connection, held open from the first command to the last as libxl holds
// its ev_qmp.
func stubdomChange(t *testing.T, x *xs.Client, q *qmp.Client, in DomainInfo, medium string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), insertTimeout)
	defer cancel()
	devid := in.DevID

	// 1. inspect
	require.Equal(t, "qemu_xen", read(t, x, xen.DMVersionPath(in.DomID)))
	require.Equal(t, fmt.Sprint(in.StubDomID), read(t, x, xen.DeviceModelDomIDPath(in.DomID)))
	old, err := xen.ReadVBD(ctx, x, in.StubDomID, devid)
	require.NoError(t, err)
	require.Equal(t, xen.TypePhy, old.Type)
	v, err := q.QueryVersion(ctx)
	require.NoError(t, err)
	require.True(t, v.AtLeast(2, 8, 0), "QEMU %v", v)

	// 2. eject
	require.NoError(t, q.Eject(ctx, devid.QEMUID(), false))

	// 3. release fdset: remove-fd of the set with our opaque; whatever is still listed
	// afterwards is stale and must not be taken for the new one.
	sets, err := stubSets(ctx, q, devid)
	require.NoError(t, err)
	for k := range sets {
		require.NoError(t, q.RemoveFD(ctx, k[0], nil))
	}
	stale, err := stubSets(ctx, q, devid)
	require.NoError(t, err)

	// 4. detach the stub domain's PV disk
	require.NoError(t, xen.RemoveVBD(ctx, x, old.BackendPath()))
	dctx, dcancel := context.WithTimeout(ctx, destroyTimeout)
	require.NoError(t, xen.WaitBackendState(dctx, x, old.BackendPath(), xen.StateClosed))
	dcancel()
	require.NoError(t, xen.DestroyVBD(ctx, x, old))

	// 5. attach the new one (the empty-cdrom file for an eject)
	params := medium
	if medium == "" {
		params = in.EmptyCDROM
	}
	nv := xen.VBD{BackendDom: 0, FrontendDom: in.StubDomID, DevID: devid, Vdev: in.Vdev, Type: xen.TypePhy, Params: params}
	require.NoError(t, xen.AddVBD(ctx, x, nv))
	ictx, icancel := context.WithTimeout(ctx, initTimeout)
	require.NoError(t, xen.WaitBackendState(ictx, x, nv.BackendPath(), xen.StateInitWait))
	require.NoError(t, xen.WaitHotplug(ictx, x, nv.BackendPath()))
	icancel()

	// 6. wait for the stub domain's fdset, a new one (eject too)
	fdset, err := waitNewStubSet(ctx, q, devid, stale)
	require.NoError(t, err)

	// 7. change medium (not for eject)
	if medium != "" {
		require.NoError(t, q.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{
			ID: devid.QEMUID(), Filename: fmt.Sprintf("/dev/fdset/%d", fdset), Format: "host_device",
		}))
	}

	// 8. record
	require.NoError(t, record(ctx, x, nv.BackendPath(), nv.LibxlPath(), xen.TypePhy, params))
	format := "raw"
	if medium == "" {
		format = "empty"
	}
	recordJSON(t, in, medium, format)

	// 9. verify
	b := cdrom(t, q, devid)
	if medium == "" {
		assert.Nil(t, b.Inserted, "query-block of an ejected drive")
	} else {
		require.NotNil(t, b.Inserted, "query-block after the change: %+v", b)
		assert.Equal(t, fmt.Sprintf("/dev/fdset/%d", fdset), b.Inserted.File)
		assert.Equal(t, "host_device", b.Inserted.Drv)
		assert.True(t, b.Inserted.RO)
		if b.TrayOpen != nil {
			assert.False(t, *b.TrayOpen, "tray open after the change")
		}
	}
	got, err := xen.ReadVBD(ctx, x, in.StubDomID, devid)
	require.NoError(t, err)
	assert.Equal(t, params, got.Params)
	assert.Equal(t, params, read(t, x, nv.BackendPath()+"/params"))
	assert.Equal(t, "4", read(t, x, nv.BackendPath()+"/state"), "the new vbd is connected")
}

// dom0Change runs libxl's cd-insert for a QEMU in dom0 (qdisk): eject, add-fd with opaque
// "<format>:<path>", change medium, record "aio:<path>".
func dom0Change(t *testing.T, x *xs.Client, q *qmp.Client, in DomainInfo, medium string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), insertTimeout)
	defer cancel()
	devid := in.DevID
	require.Equal(t, "qemu_xen", read(t, x, xen.DMVersionPath(in.DomID)))
	_, err := x.Read(ctx, xen.DeviceModelDomIDPath(in.DomID))
	require.ErrorIs(t, err, xs.ErrNotFound, "a guest with QEMU in dom0 has no device-model-domid")
	old, err := xen.ReadVBD(ctx, x, in.DomID, devid)
	require.NoError(t, err)
	require.Equal(t, xen.TypeQdisk, old.Type)
	_, err = q.QueryVersion(ctx)
	require.NoError(t, err)

	require.NoError(t, q.Eject(ctx, devid.QEMUID(), false))
	params := ""
	if medium != "" {
		f, err := os.Open(medium)
		require.NoError(t, err)
		info, err := q.AddFD(ctx, f, nil, "raw:"+medium)
		f.Close()
		require.NoError(t, err)
		require.NoError(t, q.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{
			ID: devid.QEMUID(), Filename: fmt.Sprintf("/dev/fdset/%d", info.FdsetID), Format: "raw",
		}))
		params = "aio:" + medium
		b := cdrom(t, q, devid)
		require.NotNil(t, b.Inserted, "query-block after the change: %+v", b)
		assert.Equal(t, fmt.Sprintf("/dev/fdset/%d", info.FdsetID), b.Inserted.File)
		assert.Equal(t, "raw", b.Inserted.Drv)
	} else {
		assert.Nil(t, cdrom(t, q, devid).Inserted)
	}
	require.NoError(t, record(ctx, x, old.BackendPath(), old.LibxlPath(), xen.TypeQdisk, params))
	recordJSON(t, in, medium, map[bool]string{true: "empty", false: "raw"}[medium == ""])
	got, err := xen.ReadVBD(ctx, x, in.DomID, devid)
	require.NoError(t, err)
	assert.Equal(t, params, got.Params)
}

func TestLibxlSequence(t *testing.T) {
	forEachQEMU(t, true, func(t *testing.T, mode simqemu.Mode) {
		h := startHost(t, Config{QEMU: mode, StubdomGuests: 1, Dom0Guests: 1, TradGuests: 1, AgentDelay: 20 * time.Millisecond})
		x := dialXS(t, h)
		tools := filepath.Join(h.ISODir(), ISOTools)
		rescue := filepath.Join(h.ISODir(), ISORescue)

		t.Run("stubdom", func(t *testing.T) {
			in := domainByKind(t, h, KindStubdom)
			require.Equal(t, string(mode), in.QEMU)
			q := dialQMP(t, in.QMPSocket)
			// The guest boots with debian-netinst from its command line (no fdset).
			require.NotNil(t, cdrom(t, q, in.DevID).Inserted)
			stubdomChange(t, x, q, in, tools)
			stubdomChange(t, x, q, in, rescue) // this time the old medium came by fdset
			stubdomChange(t, x, q, in, "")     // cd-eject
			stubdomChange(t, x, q, in, tools)  // and in again from an empty drive
			if mode == QEMUReal {
				// The stub domain's /dev/xvdc is a read-only loop device over the image.
				dev := read(t, x, in.BackendPath+"/physical-device-path")
				assert.Regexp(t, `^/dev/loop[0-9]+$`, dev)
				assert.Regexp(t, `^7:[0-9a-f]+$`, read(t, x, in.BackendPath+"/physical-device"))
			}
		})
		t.Run("traditional", func(t *testing.T) {
			// libxl 4.20 changes a qemu-xen-traditional cdrom through xenstore only
			// (facts §1.9); cdswap refuses it. There is no QMP socket to talk to.
			in := domainByKind(t, h, KindTraditional)
			assert.Equal(t, "qemu_xen_traditional", read(t, x, xen.DMVersionPath(in.DomID)))
			_, err := os.Stat(xen.QMPSocketPath(h.RunDir(), in.DomID))
			require.ErrorIs(t, err, os.ErrNotExist)
			ctx := testCtx(t)
			require.NoError(t, record(ctx, x, in.BackendPath, in.LibxlPath, xen.TypePhy, ""))
			require.NoError(t, record(ctx, x, in.BackendPath, in.LibxlPath, xen.TypePhy, tools))
			got, err := xen.ReadVBD(ctx, x, in.DomID, in.DevID)
			require.NoError(t, err)
			assert.Equal(t, tools, got.Params)
		})
		t.Run("dom0", func(t *testing.T) {
			in := domainByKind(t, h, KindDom0)
			require.Equal(t, string(mode), in.QEMU)
			q := dialQMP(t, in.QMPSocket)
			dom0Change(t, x, q, in, tools)
			dom0Change(t, x, q, in, "")
			dom0Change(t, x, q, in, rescue)
		})
	})
}

// TestDetachRefusedWhileOpen shows blkback refusing to close the stub domain's vbd while
// QEMU still has the medium, as blkfront does, and closing once it is ejected.
func TestDetachRefusedWhileOpen(t *testing.T) {
	h := startHost(t, Config{QEMU: QEMUFake, StubdomGuests: 1, TradGuests: 0, Dom0Guests: 0})
	x := dialXS(t, h)
	in := domainByKind(t, h, KindStubdom)
	q := dialQMP(t, in.QMPSocket)
	ctx := testCtx(t)
	require.NoError(t, xen.RemoveVBD(ctx, x, in.BackendPath))
	short, cancel := context.WithTimeout(ctx, 5*recheckEvery)
	err := xen.WaitBackendState(short, x, in.BackendPath, xen.StateClosed)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "blkback closed a vbd whose medium is in the drive")
	assert.Equal(t, "5", read(t, x, in.BackendPath+"/state"))

	require.NoError(t, q.Eject(ctx, in.DevID.QEMUID(), false))
	require.NoError(t, xen.WaitBackendState(ctx, x, in.BackendPath, xen.StateClosed))
}

package activities

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/xen"
)

// findBlock returns the query-block entry of QEMU drive id (libxl names both the -drive and
// the -device "ide-<devid>"), or nil.
func findBlock(blocks []qmp.BlockInfo, id string) *qmp.BlockInfo {
	for i := range blocks {
		if blocks[i].QDev == id || blocks[i].Device == id {
			return &blocks[i]
		}
	}
	return nil
}

// trayOpen is query-block's tray_open, false for a drive without a tray.
func trayOpen(b *qmp.BlockInfo) bool { return b.TrayOpen != nil && *b.TrayOpen }

// insertedFile is query-block's inserted.file, "" for no medium.
func insertedFile(b *qmp.BlockInfo) string {
	if b.Inserted == nil {
		return ""
	}
	return b.Inserted.File
}

// noDrive is the error for a QEMU that has no drive ide-<devid>.
func noDrive(ctx context.Context, d Drive, v qmp.Version, cause error) error {
	id := d.DevID.QEMUID()
	return NewError(ctx, ErrNoSuchDrive, false, cause,
		"QEMU %s of domain %s has no drive %s for %s: domains started by Xen before 4.16 (or a QEMU before 2.8) name their IDE drives differently, and cdswap cannot change them; restart the domain under Xen 4.16 or newer",
		v, d.domainName(), id, d.Vdev)
}

// stubSets returns the ids of the fdsets that hold an fd whose opaque is exactly
// stub-devid:<devid>, sorted.
func stubSets(sets []qmp.FdsetInfo, devid xen.DevID) []int64 {
	return setsWithOpaque(sets, devid.StubOpaque())
}

// setsWithOpaque returns the ids of the fdsets holding an fd with this opaque, sorted.
func setsWithOpaque(sets []qmp.FdsetInfo, opaque string) []int64 {
	var ids []int64
	for _, s := range sets {
		for _, fd := range s.FDs {
			if fd.Opaque == opaque {
				ids = append(ids, s.FdsetID)
				break
			}
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// emptyCDROM is the file a stubdom guest's vbd points at while its drive is empty.
func (a *Activities) emptyCDROM(domid uint32) string { return xen.EmptyCDROMPath(a.cfg.QMPDir, domid) }

// isEmptyCDROM reports whether params names domid's empty-cdrom file (in our run folder, or
// by libxl's file name in another one).
func (a *Activities) isEmptyCDROM(params string, domid uint32) bool {
	return params == a.emptyCDROM(domid) || filepath.Base(params) == fmt.Sprintf("empty-cdrom.%d", domid)
}

// recordedMedium is the image libxl's records give the drive's vbd ("" for an empty drive).
func (a *Activities) recordedMedium(k Kind, domid uint32, v xen.VBD) string {
	p := v.Path()
	if k == KindStubdom && a.isEmptyCDROM(p, domid) {
		return ""
	}
	return p
}

// newParams is the vbd "params" libxl writes for medium (resolved) of format.
func (a *Activities) newParams(k Kind, domid uint32, medium, format string) string {
	switch {
	case k == KindStubdom && medium == "":
		return a.emptyCDROM(domid)
	case k == KindStubdom:
		return medium
	case medium == "":
		return ""
	}
	return formats[format].params + ":" + medium
}

// Inspect reads a drive's state and validates a change (see InspectInput).
func (a *Activities) Inspect(ctx context.Context, in InspectInput) (InspectResult, error) {
	log := a.logger(ctx, NameInspect, "domid", in.DomID, "vdev", in.Vdev)
	if err := a.checkHost(ctx, in.Host); err != nil {
		return InspectResult{}, err
	}
	if in.DomID == 0 {
		return InspectResult{}, NewError(ctx, ErrBadInput, false, nil, "domid 0 is Domain-0, which has no emulated CD-ROM: give the guest's domid")
	}
	devid, err := parseVdev(ctx, in.Vdev)
	if err != nil {
		return InspectResult{}, err
	}
	info, err := a.domainInfo(ctx, in.DomID)
	if err != nil {
		return InspectResult{}, err
	}
	if info.Target != 0 {
		return InspectResult{}, NewError(ctx, ErrBadInput, false, nil,
			"domain %d is the stub domain of domain %d: give the guest's domid", in.DomID, info.Target)
	}
	k := kindOf(info)
	d := Drive{DomID: in.DomID, Name: info.Name, Vdev: in.Vdev, DevID: devid, Kind: k, StubDomID: info.StubDomID}
	if k == KindTraditional {
		dm := info.DMVersion
		if dm == "" {
			dm = "absent (libxl reads that as " + xen.DMQemuXenTraditional + ")"
		}
		return InspectResult{}, NewError(ctx, ErrUnsupportedDeviceModel, false, nil,
			"domain %s runs qemu-xen-traditional (/libxl/%d/dm-version is %s), which has no QMP medium change and which Xen 4.21 removed: only qemu-xen guests (in dom0 or in a Linux stubdom) can be changed; use `xl cd-insert` on that host, or move the guest to qemu-xen",
			d.domainName(), in.DomID, dm)
	}
	if k == KindStubdom {
		if _, err := a.domainInfo(ctx, info.StubDomID); err != nil {
			return InspectResult{}, err
		}
	} else {
		d.StubDomID = 0
	}
	v, stubMissing, err := a.findDrive(ctx, info, k, in.Vdev, devid)
	if err != nil {
		return InspectResult{}, err
	}
	d.BackendType = v.Type
	if stubMissing {
		// The change attaches a phy vbd to the stubdom, as libxl would have left it.
		d.BackendType = xen.TypePhy
		log.Warn("The stubdom has lost the drive's vbd (a change failed half-way?): this change attaches it again",
			"stubdomid", info.StubDomID, "guest_vbd", v.LibxlPath())
	}

	// The new medium: every check that can refuse is done before QEMU is asked anything.
	res := InspectResult{DMVersion: info.DMVersion}
	if in.Medium != "" {
		f, err := a.checkFormat(ctx, in.Format, k)
		if err != nil {
			return InspectResult{}, err
		}
		m, err := a.openMedium(ctx, in.Medium, f, false)
		if err != nil {
			return InspectResult{}, err
		}
		m.File.Close()
		res.Medium, res.Format = m.Path, f
	}
	res.NewParams = a.newParams(k, in.DomID, res.Medium, res.Format)

	var blocks []qmp.BlockInfo
	var sets []qmp.FdsetInfo
	var ver qmp.Version
	err = a.withQMP(ctx, info, func(c *qmp.Client) error {
		ver = c.Version()
		var err error
		if blocks, err = c.QueryBlock(ctx); err != nil {
			return fmt.Errorf("query-block: %w", err)
		}
		if sets, err = c.QueryFdsets(ctx); err != nil {
			return fmt.Errorf("query-fdsets: %w", err)
		}
		return nil
	})
	if err != nil {
		return InspectResult{}, err
	}
	if !ver.AtLeast(2, 5, 0) {
		return InspectResult{}, NewError(ctx, ErrUnsupportedDeviceModel, false, nil,
			"QEMU %s of domain %s is older than 2.5 and has no blockdev-change-medium: upgrade the device model", ver, d.domainName())
	}
	b := findBlock(blocks, devid.QEMUID())
	if b == nil {
		return InspectResult{}, noDrive(ctx, d, ver, nil)
	}
	res.Drive = d
	res.QEMUVersion = ver.String()
	res.TrayOpen, res.TrayLocked, res.QEMUFile = trayOpen(b), b.Locked, insertedFile(b)
	res.OldParams = v.Params
	if b.Inserted != nil {
		res.OldMedium = a.recordedMedium(k, in.DomID, v)
	}
	if stubMissing {
		// What a restore attaches: the medium QEMU still holds, else an empty drive; never
		// nothing, so that the drive keeps a vbd.
		res.OldParams = res.OldMedium
		if res.OldParams == "" {
			res.OldParams = a.emptyCDROM(in.DomID)
		}
	}
	if res.OldMedium != "" {
		res.OldFormat = a.recordedFormat(k, v, b)
	}
	if k == KindStubdom {
		res.Fdsets = stubSets(sets, devid)
	}
	res.InPlace = !stubMissing && a.inPlace(k, v, b, sets, res)
	res.Meta = NewMeta(ctx)
	log.Info("Inspected drive", "kind", k, "qemu", res.QEMUVersion, "qemu_file", res.QEMUFile,
		"tray_open", res.TrayOpen, "locked", res.TrayLocked, "old", res.OldMedium, "new", res.Medium, "in_place", res.InPlace)
	return res, nil
}

// recordedFormat is the format of the medium libxl's records give the drive: raw for a
// stubdom's phy disk, the "params" prefix of a dom0 qdisk, else what QEMU's driver says.
func (a *Activities) recordedFormat(k Kind, v xen.VBD, b *qmp.BlockInfo) string {
	if k == KindStubdom {
		return FormatRaw
	}
	if prefix, _, ok := strings.Cut(v.Params, ":"); ok && v.Type != xen.TypePhy {
		if f := formatOfParams(prefix); f != "" {
			return f
		}
	}
	if b.Inserted != nil {
		if _, ok := formats[b.Inserted.Drv]; ok {
			return b.Inserted.Drv
		}
	}
	return FormatRaw
}

// inPlace reports whether the drive already holds what res asks for, in QEMU and in libxl's
// records.
func (a *Activities) inPlace(k Kind, v xen.VBD, b *qmp.BlockInfo, sets []qmp.FdsetInfo, res InspectResult) bool {
	if v.Params != res.NewParams {
		return false
	}
	if res.Medium == "" {
		return b.Inserted == nil
	}
	if b.Inserted == nil || trayOpen(b) {
		return false
	}
	file := b.Inserted.File
	if k == KindStubdom {
		// The medium comes through the stubdom's device: /dev/fdset/N or, at boot, /dev/xvdX.
		return strings.HasPrefix(file, "/dev/")
	}
	if b.Inserted.Drv != res.Format {
		return false
	}
	if file == res.Medium {
		return true // -drive file=... at boot
	}
	var id int64
	if _, err := fmt.Sscanf(file, "/dev/fdset/%d", &id); err != nil || FdsetFilename(id) != file {
		return false
	}
	// The set's fds may be gone (remove-fd after the change, as XAPI does); if some are
	// listed, they must be this medium's.
	for _, s := range sets {
		if s.FdsetID == id {
			for _, fd := range s.FDs {
				if fd.Opaque != formats[res.Format].json+":"+res.Medium {
					return false
				}
			}
		}
	}
	return true
}

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
	f, err := a.findInRecords(ctx, in)
	if err != nil {
		return InspectResult{}, err
	}
	notePath := ""
	if in.RunID != "" {
		notePath = a.inspectNotePath(in.DomID, f.info.UUID, f.drive.DevID)
		note, ok, err := readInspectNote(notePath, in.RunID)
		if err != nil {
			return InspectResult{}, err
		}
		if ok {
			res := note.Result
			res.Meta = NewMeta(ctx)
			res.FromNote = true
			if in.Resume && note.AddedFdset != nil {
				// Whether the change took is a reading only: a paused guest, or a QEMU that
				// cannot be asked now, leaves the run to go through its steps again, as
				// it would without the answer.
				if q, err := a.readQEMU(ctx, f); err != nil {
					log.Warn("Cannot ask QEMU whether this run's change took; its steps run again", "error", err)
				} else {
					res.Taken = takenFile(res, q, *note.AddedFdset)
				}
			}
			log.Warn("Answered as before for this run, from its note: a worker stopped after the drive may have been touched",
				"note", notePath, "old", res.OldMedium, "new", res.Medium, "taken", res.Taken)
			return res, nil
		}
		if in.NoteOnly {
			return InspectResult{Meta: NewMeta(ctx)}, nil
		}
	}
	if f.stubMissing {
		log.Warn("The stubdom has lost the drive's vbd (a change failed half-way?): this change attaches it again",
			"stubdomid", f.info.StubDomID, "guest_vbd", f.vbd.LibxlPath())
	}

	// The new medium: every check that can refuse is done before QEMU is asked anything.
	res := InspectResult{Drive: f.drive, DMVersion: f.info.DMVersion}
	if res.Medium, res.Format, err = a.checkNewMedium(ctx, in.Medium, in.Format, f.drive.Kind); err != nil {
		return InspectResult{}, err
	}
	res.NewParams = a.newParams(f.drive.Kind, in.DomID, res.Medium, res.Format)

	q, err := a.askQEMU(ctx, f)
	if err != nil {
		return InspectResult{}, err
	}
	a.describeState(&res, f, q)
	res.Meta = NewMeta(ctx)
	if notePath != "" && !res.InPlace {
		if err := writeInspectNote(notePath, inspectNote{RunID: in.RunID, Result: res}); err != nil {
			return InspectResult{}, err
		}
	}
	log.Info("Inspected drive", "kind", f.drive.Kind, "qemu", res.QEMUVersion, "qemu_file", res.QEMUFile,
		"tray_open", res.TrayOpen, "locked", res.TrayLocked, "old", res.OldMedium, "new", res.Medium, "in_place", res.InPlace)
	return res, nil
}

// takenFile is the file a dom0 QEMU holds, tray closed, when it is added, the fdset the
// run's AddFD made for the change res validated (its note's AddedFdset), or "". ChangeMedium
// drops the set's fd once the medium holds its own (remove-fd), so the set's opaque cannot
// say which medium it was; the note can, since AddFD runs after the run's eject: a set of
// that id in the drive can only have been put there by the run's own ChangeMedium.
func takenFile(res InspectResult, q qemuState, added int64) string {
	if res.Drive.Kind != KindDom0 || res.Medium == "" || q.block == nil || trayOpen(q.block) {
		return ""
	}
	if file := insertedFile(q.block); file == FdsetFilename(added) {
		return file
	}
	return ""
}

// inspected is a drive as libxl's records have it.
type inspected struct {
	drive Drive
	info  xen.DomainInfo
	// vbd is the drive's vbd: the stubdom's for a stubdom guest, unless stubMissing, when
	// the stubdom has lost it and vbd is the guest's own.
	vbd         xen.VBD
	stubMissing bool
}

// findInRecords finds the drive of a request in libxl's records: the guest (not a stub
// domain), its device model (refusing qemu-xen-traditional) and the drive's vbd.
func (a *Activities) findInRecords(ctx context.Context, in InspectInput) (inspected, error) {
	if in.DomID == 0 {
		return inspected{}, NewError(ctx, ErrBadInput, false, nil, "domid 0 is Domain-0, which has no emulated CD-ROM: give the guest's domid")
	}
	devid, err := parseVdev(ctx, in.Vdev)
	if err != nil {
		return inspected{}, err
	}
	info, err := a.domainInfo(ctx, in.DomID)
	if err != nil {
		return inspected{}, err
	}
	if info.Target != 0 {
		return inspected{}, NewError(ctx, ErrBadInput, false, nil,
			"domain %d is the stub domain of domain %d: give the guest's domid", in.DomID, info.Target)
	}
	k := kindOf(info)
	d := Drive{DomID: in.DomID, Name: info.Name, Vdev: in.Vdev, DevID: devid, Kind: k}
	switch k {
	case KindTraditional:
		dm := info.DMVersion
		if dm == "" {
			dm = "absent (libxl reads that as " + xen.DMQemuXenTraditional + ")"
		}
		return inspected{}, NewError(ctx, ErrUnsupportedDeviceModel, false, nil,
			"domain %s runs qemu-xen-traditional (/libxl/%d/dm-version is %s), which has no QMP medium change and which Xen 4.21 removed: only qemu-xen guests (in dom0 or in a Linux stubdom) can be changed; use `xl cd-insert` on that host, or move the guest to qemu-xen",
			d.domainName(), in.DomID, dm)
	case KindStubdom:
		if _, err := a.domainInfo(ctx, info.StubDomID); err != nil {
			return inspected{}, err
		}
		d.StubDomID = info.StubDomID
	}
	v, stubMissing, err := a.findDrive(ctx, info, k, in.Vdev, devid)
	if err != nil {
		return inspected{}, err
	}
	d.BackendType = v.Type
	if stubMissing {
		// The change attaches a phy vbd to the stubdom, as libxl would have left it.
		d.BackendType = xen.TypePhy
	}
	return inspected{drive: d, info: info, vbd: v, stubMissing: stubMissing}, nil
}

// checkNewMedium validates the new medium of a change to a drive of kind k: its format,
// and a file that may be inserted. It returns the medium's resolved path and its normalized
// format, both "" for an eject.
func (a *Activities) checkNewMedium(ctx context.Context, medium, format string, k Kind) (resolved, normFormat string, err error) {
	if medium == "" {
		return "", "", nil
	}
	f, err := a.checkFormat(ctx, format, k)
	if err != nil {
		return "", "", err
	}
	m, err := a.openMedium(ctx, medium, f, false)
	if err != nil {
		return "", "", err
	}
	m.File.Close()
	return m.Path, f, nil
}

// qemuState is what the guest's QEMU says about the drive.
type qemuState struct {
	ver    qmp.Version
	status qmp.StatusInfo // query-status: the guest's run state
	block  *qmp.BlockInfo // the drive's query-block entry
	sets   []qmp.FdsetInfo
}

// askQEMU reads the guest QEMU's state (readQEMU). It refuses a QEMU without
// blockdev-change-medium, or without the drive, or whose guest is not running.
func (a *Activities) askQEMU(ctx context.Context, f inspected) (qemuState, error) {
	q, err := a.readQEMU(ctx, f)
	if err != nil {
		return qemuState{}, err
	}
	if !q.ver.AtLeast(2, 5, 0) {
		return qemuState{}, NewError(ctx, ErrUnsupportedDeviceModel, false, nil,
			"QEMU %s of domain %s is older than 2.5 and has no blockdev-change-medium: upgrade the device model", q.ver, f.drive.domainName())
	}
	if q.block == nil {
		return qemuState{}, noDrive(ctx, f.drive, q.ver, nil)
	}
	if err := guestRunning(ctx, f.drive, q.status, true); err != nil {
		return qemuState{}, err
	}
	return q, nil
}

// readQEMU reads the guest QEMU's version, run state, the drive's query-block entry (nil if
// QEMU has no such drive) and the fdsets, and judges none of it.
func (a *Activities) readQEMU(ctx context.Context, f inspected) (qemuState, error) {
	var q qemuState
	var blocks []qmp.BlockInfo
	err := a.withQMP(ctx, f.info, func(c *qmp.Client) error {
		q.ver = c.Version()
		var err error
		if q.status, err = c.QueryStatus(ctx); err != nil {
			return fmt.Errorf("query-status: %w", err)
		}
		if blocks, err = c.QueryBlock(ctx); err != nil {
			return fmt.Errorf("query-block: %w", err)
		}
		if q.sets, err = c.QueryFdsets(ctx); err != nil {
			return fmt.Errorf("query-fdsets: %w", err)
		}
		return nil
	})
	if err != nil {
		return qemuState{}, err
	}
	q.block = findBlock(blocks, f.drive.DevID.QEMUID())
	return q, nil
}

// guestRunning returns ErrGuestPaused (permanent: the workflow decides whether to wait)
// unless QEMU's query-status says the guest runs. A QEMU that is not running keeps the fds
// a remove-fd released (monitor_fdsets_cleanup runs only while the VM runs), so a stubdom's
// PV disk cannot be detached; refuse says the message is for a refused request.
func guestRunning(ctx context.Context, d Drive, st qmp.StatusInfo, refuse bool) error {
	if st.Running {
		return nil
	}
	status := st.Status
	if status == "" {
		status = "not running"
	}
	if refuse {
		return NewError(ctx, ErrGuestPaused, false, nil,
			"domain %s is paused (QEMU's run state is %q): a paused QEMU keeps the medium it is asked to release, so the change could leave the drive empty; nothing was touched: unpause the guest (`xl unpause`, QMP cont) and submit the change again",
			d.domainName(), status)
	}
	return NewError(ctx, ErrGuestPaused, false, nil,
		"domain %s is paused (QEMU's run state is %q): waiting for the guest to be unpaused, since a paused QEMU keeps the released medium and the stub domain's PV disk cannot be detached until it runs",
		d.domainName(), status)
}

// describeState fills in res the drive's state now, from QEMU and libxl's records: the
// tray, the medium held as libxl's records name it, what a restore puts back, the
// stub-devid fdsets, and whether the change has nothing to do. res's new medium and params
// must be set.
func (a *Activities) describeState(res *InspectResult, f inspected, q qemuState) {
	k, v, b := f.drive.Kind, f.vbd, q.block
	res.QEMUVersion = q.ver.String()
	res.TrayOpen, res.TrayLocked, res.QEMUFile = trayOpen(b), b.Locked, insertedFile(b)
	res.OldParams = v.Params
	if b.Inserted != nil {
		res.OldMedium = a.recordedMedium(k, f.drive.DomID, v)
	}
	if f.stubMissing {
		// What a restore attaches: the medium QEMU still holds, else an empty drive; never
		// nothing, so that the drive keeps a vbd.
		res.OldParams = res.OldMedium
		if res.OldParams == "" {
			res.OldParams = a.emptyCDROM(f.drive.DomID)
		}
	}
	if res.OldMedium != "" {
		res.OldFormat = a.recordedFormat(k, v, b)
	}
	if k == KindStubdom {
		res.Fdsets = stubSets(q.sets, f.drive.DevID)
	}
	res.InPlace = !f.stubMissing && a.inPlace(k, v, b, q.sets, *res)
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
	id, ok := FdsetOfFilename(file)
	if !ok {
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

// checkRunning asks the drive's QEMU for its run state: ErrGuestPaused if the guest is
// paused, ErrDeviceModelGone if QEMU is gone.
func (a *Activities) checkRunning(ctx context.Context, d Drive) error {
	info, err := a.domainInfo(ctx, d.DomID)
	if err != nil {
		return err
	}
	var st qmp.StatusInfo
	err = a.withQMP(ctx, info, func(c *qmp.Client) error {
		var err error
		if st, err = c.QueryStatus(ctx); err != nil {
			return fmt.Errorf("query-status: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return guestRunning(ctx, d, st, false)
}

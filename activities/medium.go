package activities

import (
	"context"
	"errors"
	"fmt"

	"github.com/cdswap/cdswap/internal/qmp"
)

// ChangeMedium inserts the medium held by an fdset (see ChangeMediumInput).
//
// For a dom0 QEMU it then removes the set (remove-fd, as XAPI does): QEMU has its own dup
// of the fd for the medium, and a removed set goes away as soon as the medium is ejected,
// so a later change leaves no fdset of this one behind. A stubdom's sets are the stubdom's;
// ReleaseFdset removes them at the next change, as libxl does.
func (a *Activities) ChangeMedium(ctx context.Context, in ChangeMediumInput) (ChangeMediumResult, error) {
	d := in.Drive
	log := a.driveLogger(ctx, NameChangeMedium, d)
	log = logWith(log, "fdset", in.FdsetID)
	if err := checkDrive(ctx, d, KindStubdom, KindDom0); err != nil {
		return ChangeMediumResult{}, err
	}
	format := in.Format
	switch d.Kind {
	case KindStubdom:
		if format != FormatHostDevice {
			return ChangeMediumResult{}, NewError(ctx, ErrFormatMismatch, false, nil,
				"format %q for a stubdom guest: its QEMU sees the medium as the stubdom's block device, format %s", format, FormatHostDevice)
		}
	default:
		f, ok := normalizeFormat(format)
		if !ok {
			return ChangeMediumResult{}, NewError(ctx, ErrFormatMismatch, false, nil, "format %q is not one cdswap can insert: use %s", format, formatNames)
		}
		format = f
	}
	if in.FdsetID < 0 {
		return ChangeMediumResult{}, NewError(ctx, ErrBadInput, false, nil, "fdset %d: fdset ids are not negative", in.FdsetID)
	}
	if err := a.ensureLock(ctx, in.Key, d.DomID); err != nil {
		return ChangeMediumResult{}, err
	}
	id := d.DevID.QEMUID()
	filename := FdsetFilename(in.FdsetID)
	res := ChangeMediumResult{Filename: filename}
	err := a.withDrive(ctx, d, func(c *qmp.Client, b *qmp.BlockInfo) error {
		if insertedFile(b) == filename && !trayOpen(b) {
			res.WasInserted = true
			a.releaseDom0Set(ctx, c, d, in.FdsetID)
			return nil
		}
		sets, err := c.QueryFdsets(ctx)
		if err != nil {
			return fmt.Errorf("query-fdsets: %w", err)
		}
		if !setUsable(sets, in.FdsetID, d) {
			return a.fdsetGone(ctx, d, in.FdsetID, nil)
		}
		err = c.BlockdevChangeMedium(ctx, qmp.ChangeMediumArgs{ID: id, Filename: filename, Format: format})
		if err != nil {
			return a.changeError(ctx, c, d, in.FdsetID, format, err)
		}
		log.Info("Inserted the medium", "file", filename, "format", format)
		a.releaseDom0Set(ctx, c, d, in.FdsetID)
		return nil
	})
	if err != nil {
		return ChangeMediumResult{}, err
	}
	res.Meta = NewMeta(ctx)
	return res, nil
}

// setUsable reports whether fdset id is listed with an fd QEMU can dup: for a stubdom, one
// with the drive's stub-devid opaque.
func setUsable(sets []qmp.FdsetInfo, id int64, d Drive) bool {
	for _, s := range sets {
		if s.FdsetID != id {
			continue
		}
		for _, fd := range s.FDs {
			if d.Kind != KindStubdom || fd.Opaque == d.DevID.StubOpaque() {
				return true
			}
		}
	}
	return false
}

func (a *Activities) fdsetGone(ctx context.Context, d Drive, id int64, cause error) error {
	what := "AddFD passes the medium again"
	if d.Kind == KindStubdom {
		what = "the stubdom's PV disk must be attached again for the stubdom to add it anew"
	}
	return NewError(ctx, ErrFdsetGone, false, cause,
		"fdset %d is no longer in QEMU of domain %s (the QMP connection that added it dropped, and QEMU before 9.1 closes such fds): %s",
		id, d.domainName(), what)
}

// changeError maps a failed blockdev-change-medium to the activity's errors. QEMU reports
// these cases only as GenericError: qmp's predicates tell them apart, after QEMU's state.
func (a *Activities) changeError(ctx context.Context, c *qmp.Client, d Drive, id int64, format string, err error) error {
	if errors.Is(err, qmp.ErrDeviceNotFound) {
		return noDrive(ctx, d, c.Version(), err)
	}
	if !errors.Is(err, qmp.ErrGenericError) {
		return fmt.Errorf("blockdev-change-medium: %w", err)
	}
	if sets, qerr := c.QueryFdsets(ctx); qerr == nil && !setUsable(sets, id, d) {
		return a.fdsetGone(ctx, d, id, err)
	}
	switch {
	case qmp.IsFdsetDupFailed(err):
		return a.fdsetGone(ctx, d, id, err)
	case qmp.IsTrayLocked(err):
		return NewError(ctx, ErrTrayLocked, true, err,
			"the guest locked the tray of %s (domain %s) again: QEMU asked it to open; retried", d.Vdev, d.domainName())
	case qmp.IsFormatRefused(err):
		var qe *qmp.Error
		errors.As(err, &qe)
		return NewError(ctx, ErrFormatMismatch, false, err,
			"QEMU of domain %s cannot open the medium as %s: %s", d.domainName(), format, qe.Desc)
	}
	return fmt.Errorf("blockdev-change-medium %s: %w", FdsetFilename(id), err)
}

// releaseDom0Set removes a dom0 medium's fdset once the medium is in (see ChangeMedium).
// Failures are only logged: the set then lingers until QEMU's own clean-up.
func (a *Activities) releaseDom0Set(ctx context.Context, c *qmp.Client, d Drive, id int64) {
	if d.Kind != KindDom0 {
		return
	}
	log := logWith(a.driveLogger(ctx, NameChangeMedium, d), "fdset", id)
	if err := c.RemoveFD(ctx, id, nil); err != nil && !qmp.IsFdsetNotFound(err) {
		log.Warn("Cannot remove the medium's fdset after the change; it lingers until QEMU cleans it up", "error", err)
		return
	}
	log.Debug("Removed the medium's fdset; QEMU keeps its dup for the medium")
}

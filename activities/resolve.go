package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xs"
)

// kindOf says where a domain's device model runs, from libxl's dm-version and the stubdom id.
// An absent dm-version is what libxl reads as qemu-xen-traditional.
func kindOf(info xen.DomainInfo) Kind {
	if info.DMVersion != xen.DMQemuXen {
		return KindTraditional
	}
	if info.StubDomID != 0 {
		return KindStubdom
	}
	return KindDom0
}

// findDrive finds the cdrom vbd vdev (devid, parsed by the caller) of a domain of kind k in
// libxl's trusted records: the stubdom's vbds for a stubdom guest (the disk
// libxl_cdrom_insert changes), the guest's own otherwise. A vdev that is a disk is
// ErrNotCDROM, a missing one ErrNoSuchDrive.
//
// A stubdom guest whose stubdom has lost the drive's vbd (libxl's dead end "Virtual device
// not found", left by a change that failed half-way) still has the drive in its own vbds,
// which libxl's stubdom path never touches: then that vbd is returned with stubMissing set,
// and a change attaches the stubdom's vbd again.
func (a *Activities) findDrive(ctx context.Context, info xen.DomainInfo, k Kind, vdev string, devid xen.DevID) (v xen.VBD, stubMissing bool, err error) {
	if k == KindStubdom {
		v, err = a.findDriveIn(ctx, info, info.StubDomID, k, vdev)
		if isType(err, ErrNoSuchDrive) {
			if own, oerr := a.findDriveIn(ctx, info, info.DomID, k, vdev); oerr == nil {
				v, stubMissing, err = own, true, nil
			}
		}
	} else {
		v, err = a.findDriveIn(ctx, info, info.DomID, k, vdev)
	}
	if err == nil && v.DevID != devid {
		return xen.VBD{}, false, fmt.Errorf("vbd %s of domain %d has devid %d, want %d", vdev, v.FrontendDom, v.DevID, devid)
	}
	return v, stubMissing, err
}

// findDriveIn looks for the drive among the vbds of diskDom, explaining a miss for a person.
func (a *Activities) findDriveIn(ctx context.Context, info xen.DomainInfo, diskDom uint32, k Kind, vdev string) (xen.VBD, error) {
	var v xen.VBD
	err := a.withXS(ctx, func(c *xs.Client) error {
		var err error
		v, err = xen.FindCDROM(ctx, c, diskDom, vdev)
		return err
	})
	var nf *xen.NoCDROMError
	switch {
	case err == nil:
		return v, nil
	case !errors.As(err, &nf):
		return xen.VBD{}, fmt.Errorf("list the vbds of domain %d: %w", diskDom, err)
	case nf.DeviceType != "":
		return xen.VBD{}, NewError(ctx, ErrNotCDROM, false, nil,
			"%s of domain %s (%d) is a %s, not a CD-ROM drive: only CD-ROM media can be changed; pick the guest's cdrom vdev", vdev, info.Name, info.DomID, nf.DeviceType)
	}
	has := "it has no CD-ROM drive"
	if len(nf.CDROMs) > 0 {
		has = "its CD-ROM drives are " + strings.Join(nf.CDROMs, ", ")
	}
	hint := ""
	if k == KindStubdom {
		hint = fmt.Sprintf(" (a stubdom guest's drive is the stub domain's vbd, /libxl/%d/device/vbd; if a change failed half-way, `cdswap history` says what to repair)", diskDom)
	}
	return xen.VBD{}, NewError(ctx, ErrNoSuchDrive, false, nil,
		"domain %s (%d) has no drive %s: %s%s", info.Name, info.DomID, vdev, has, hint)
}

// parseVdev is the devid libxl gives vdev; a name libxl would refuse is ErrBadInput. Every
// drive is parsed here once, when a step first meets it (ResolveDrive, Inspect); later steps
// carry the devid in their Drive.
func parseVdev(ctx context.Context, vdev string) (xen.DevID, error) {
	id, err := xen.ParseVdev(vdev)
	if err != nil {
		return 0, NewError(ctx, ErrBadInput, false, err, "drive %q: %v", vdev, err)
	}
	return id, nil
}

// ResolveDrive finds a drive by host, domain name or domid, and vdev (see ResolveDriveInput).
func (a *Activities) ResolveDrive(ctx context.Context, in ResolveDriveInput) (ResolveDriveResult, error) {
	log := a.logger(ctx, NameResolveDrive, "vdev", in.Vdev)
	if err := a.checkHost(ctx, in.Host); err != nil {
		return ResolveDriveResult{}, err
	}
	if in.Domain == "" {
		return ResolveDriveResult{}, NewError(ctx, ErrBadInput, false, nil, "no domain given: name the guest, or give its domid")
	}
	devid, err := parseVdev(ctx, in.Vdev)
	if err != nil {
		return ResolveDriveResult{}, err
	}
	var info xen.DomainInfo
	err = a.withXS(ctx, func(c *xs.Client) error {
		var err error
		info, err = xen.FindDomain(ctx, c, in.Domain)
		return err
	})
	if err != nil {
		var xe *xs.Error
		switch {
		case errors.Is(err, xen.ErrNoSuchDomain):
			return ResolveDriveResult{}, NewError(ctx, ErrNoSuchDomain, false, err,
				"no domain %q on host %s (%v): check the name with `xl list` on %s", in.Domain, a.cfg.Host, err, a.cfg.Host)
		case errors.As(err, &xe), errors.Is(err, xs.ErrClosed), ctx.Err() != nil:
			return ResolveDriveResult{}, err
		}
		// A name used by several domains.
		return ResolveDriveResult{}, NewError(ctx, ErrBadInput, false, err, "%v", err)
	}
	if info.DomID == 0 {
		return ResolveDriveResult{}, NewError(ctx, ErrBadInput, false, nil, "domain %q is Domain-0, which has no emulated CD-ROM: name a guest", in.Domain)
	}
	if info.Target != 0 {
		return ResolveDriveResult{}, NewError(ctx, ErrNoSuchDomain, false, nil,
			"domain %q (%d) is the stub domain of domain %d: name the guest itself", in.Domain, info.DomID, info.Target)
	}
	k := kindOf(info)
	if _, _, err := a.findDrive(ctx, info, k, in.Vdev, devid); err != nil {
		return ResolveDriveResult{}, err
	}
	log.Info("Resolved drive", "domain", in.Domain, "domid", info.DomID, "devid", int(devid), "kind", k)
	return ResolveDriveResult{Meta: NewMeta(ctx), DomID: info.DomID, Name: info.Name, DevID: devid, Kind: k}, nil
}

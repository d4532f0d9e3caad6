package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xs"
)

// NameInventory is the activity type of Activities.Inventory.
const NameInventory = "Inventory"

// InventoryInput asks a host for its guests' CD-ROM drives, and whether it would serve
// some new media.
//
// Activities.Inventory(ctx, in) (InventoryResult, error) only reads: xenstore (every
// /local/domain/<domid> that is a guest, not a stub domain: its name, uuid, dm-version,
// stub domain, and the cdrom vbds in /libxl/<domid>/device/vbd, a stubdom guest's from its
// stub domain's list as libxl_cdrom_insert reads them) and each guest's libxl JSON
// configuration (its disks). It asks no QEMU anything, and takes no lock: a fleet's
// planning must not disturb the guests. Each medium of Media is checked as Inspect checks
// a new medium (the ISO roots, a regular file, its content in the format asked), once for
// each guest kind, whose format rules differ.
//
// Errors: ErrWrongHost; anything else is a transient failure to read (retried).
type InventoryInput struct {
	// Host is the dom0 host asked; a worker for another host refuses.
	Host string
	// Media are the new media to check on this host.
	Media []MediumSpec
}

// MediumSpec is a new medium and its format ("" = raw).
type MediumSpec struct {
	Medium string
	Format string
}

// InventoryResult is what a host has and what it would refuse.
type InventoryResult struct {
	Meta
	// Host is the host that answered.
	Host string
	// Drives are the guests' CD-ROM drives, by domid then in libxl's order.
	Drives []InventoryDrive
	// Media are the checks of InventoryInput.Media: for each, one entry per guest kind
	// that can change media (KindStubdom, KindDom0).
	Media []MediumCheck
}

// InventoryDrive is one CD-ROM drive as libxl's records have it.
type InventoryDrive struct {
	// DomID and Name are the guest's.
	DomID uint32
	Name  string
	// Vdev is the drive's name in libxl's records ("hdc"); DevID its devid.
	Vdev  string
	DevID xen.DevID
	// Kind is where the guest's device model runs.
	Kind Kind
	// Medium is the image the drive holds per the vbd's xenstore params ("" = empty);
	// Format its format (raw for a stubdom's phy disk, the qdisk params' prefix else).
	Medium, Format string
	// ConfigMedium is the image the guest's libxl JSON configuration gives the drive
	// ("" = empty); ConfigError says why the configuration could not be read ("" if it
	// was). A drive whose two records disagree was changed by something that wrote only
	// one of them.
	ConfigMedium, ConfigError string
	// RefusalType and Refusal say why no change of this drive could run (an unsupported
	// device model), "" if one can.
	RefusalType, Refusal string
}

// MediumCheck is whether the host would insert a medium into a drive of Kind.
type MediumCheck struct {
	Medium, Format string
	Kind           Kind
	// Resolved is the medium's path with its symlinks resolved ("" if refused).
	Resolved string
	// ErrorType and Error say why the host would refuse it ("" if it would not): one of
	// ErrMediumOutsideRoots, ErrMediumNotFound, ErrMediumNotRegular, ErrFormatMismatch,
	// ErrBadInput.
	ErrorType, Error string
}

// Inventory lists the host's CD-ROM drives and checks new media (see InventoryInput).
func (a *Activities) Inventory(ctx context.Context, in InventoryInput) (InventoryResult, error) {
	log := a.logger(ctx, NameInventory)
	if err := a.checkHost(ctx, in.Host); err != nil {
		return InventoryResult{}, err
	}
	res := InventoryResult{Host: a.cfg.Host}
	err := a.withXS(ctx, func(c *xs.Client) error {
		var err error
		res.Drives, err = a.listDrives(ctx, c)
		return err
	})
	if err != nil {
		return InventoryResult{}, fmt.Errorf("list the CD-ROM drives of host %s: %w", a.cfg.Host, err)
	}
	for _, m := range in.Media {
		for _, k := range []Kind{KindStubdom, KindDom0} {
			mc, err := a.checkMedium(ctx, m, k)
			if err != nil {
				return InventoryResult{}, err
			}
			res.Media = append(res.Media, mc)
		}
	}
	res.Meta = NewMeta(ctx)
	log.Info("Inventory", "drives", len(res.Drives), "media", len(in.Media))
	return res, nil
}

// checkMedium checks one new medium for a drive of kind k with the checks Inspect runs. A
// refusal is an answer; only a failure to check is an error.
func (a *Activities) checkMedium(ctx context.Context, m MediumSpec, k Kind) (MediumCheck, error) {
	mc := MediumCheck{Medium: m.Medium, Format: m.Format, Kind: k}
	if mc.Format == "" {
		mc.Format = FormatRaw
	}
	resolved, _, err := a.checkNewMedium(ctx, m.Medium, mc.Format, k)
	var appErr *temporal.ApplicationError
	switch {
	case err == nil:
		mc.Resolved = resolved
	case errors.As(err, &appErr):
		mc.ErrorType, mc.Error = appErr.Type(), appErr.Message()
	default:
		return MediumCheck{}, fmt.Errorf("check medium %s: %w", m.Medium, err)
	}
	return mc, nil
}

// listDrives reads every guest's CD-ROM drives from xenstore and libxl's files.
func (a *Activities) listDrives(ctx context.Context, c *xs.Client) ([]InventoryDrive, error) {
	names, err := c.Directory(ctx, "/local/domain")
	if err != nil && !errors.Is(err, xs.ErrNotFound) {
		return nil, fmt.Errorf("list /local/domain: %w", err)
	}
	var ids []uint32
	for _, n := range names {
		if id, err := strconv.ParseUint(n, 10, 32); err == nil && id != 0 {
			ids = append(ids, uint32(id))
		}
	}
	slices.Sort(ids)
	var out []InventoryDrive
	for _, id := range ids {
		info, err := xen.ReadDomainInfo(ctx, c, id)
		if errors.Is(err, xen.ErrNoSuchDomain) {
			continue // destroyed while we looked
		}
		if err != nil {
			return nil, err
		}
		if info.Target != 0 {
			continue // a stub domain: its drives are its guest's
		}
		drives, err := a.guestDrives(ctx, c, info)
		if err != nil {
			return nil, err
		}
		out = append(out, drives...)
	}
	return out, nil
}

// guestDrives lists one guest's CD-ROM drives.
func (a *Activities) guestDrives(ctx context.Context, c *xs.Client, info xen.DomainInfo) ([]InventoryDrive, error) {
	own, err := xen.ListVBDs(ctx, c, info.DomID)
	if err != nil {
		return nil, err
	}
	k := kindOf(info)
	stub := map[string]xen.VBD{}
	if k == KindStubdom {
		vbds, err := xen.ListVBDs(ctx, c, info.StubDomID)
		if err != nil {
			return nil, err
		}
		for _, v := range vbds {
			stub[v.Vdev] = v
		}
	}
	disks, cfgErr := a.configDisks(info)
	var out []InventoryDrive
	for _, v := range own {
		if v.DeviceType != "cdrom" {
			continue
		}
		if s, ok := stub[v.Vdev]; ok && s.DeviceType == "cdrom" {
			v = s // libxl changes the stubdom's vbd
		}
		d := InventoryDrive{DomID: info.DomID, Name: info.Name, Vdev: v.Vdev, DevID: v.DevID, Kind: k,
			Medium: a.recordedMedium(k, info.DomID, v)}
		if d.Medium != "" {
			d.Format = paramsFormat(k, v)
		}
		if cfgErr != nil {
			d.ConfigError = cfgErr.Error()
		} else {
			for _, disk := range disks {
				if disk.Vdev == v.Vdev {
					d.ConfigMedium = disk.PdevPath
				}
			}
		}
		if k == KindTraditional {
			d.RefusalType = ErrUnsupportedDeviceModel
			d.Refusal = fmt.Sprintf("domain %s runs qemu-xen-traditional (dm-version %q), which has no QMP medium change: use `xl cd-insert` on that host, or move the guest to qemu-xen",
				Drive{DomID: info.DomID, Name: info.Name}.domainName(), info.DMVersion)
		}
		out = append(out, d)
	}
	return out, nil
}

// paramsFormat is the format of the medium a vbd's params give: raw for a stubdom's phy
// disk, else the qdisk prefix's.
func paramsFormat(k Kind, v xen.VBD) string {
	if k != KindStubdom && v.Type != xen.TypePhy {
		if prefix, _, ok := strings.Cut(v.Params, ":"); ok {
			if f := formatOfParams(prefix); f != "" {
				return f
			}
		}
	}
	return FormatRaw
}

// configDisks reads the disks of a guest's libxl JSON configuration.
func (a *Activities) configDisks(info xen.DomainInfo) ([]xen.Disk, error) {
	if info.UUID == "" {
		return nil, errors.New("the domain has no uuid in xenstore")
	}
	p := xen.ConfigPath(a.cfg.LibxlDir, info.DomID, info.UUID)
	raw, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read libxl's configuration: %w", err)
	}
	disks, err := xen.ConfigDisks(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return disks, nil
}

package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.temporal.io/sdk/activity"
	"golang.org/x/sys/unix"

	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xs"
)

// DetachVBD removes the stubdom's vbd of the drive (see DetachVBDInput).
func (a *Activities) DetachVBD(ctx context.Context, in DetachVBDInput) (DetachVBDResult, error) {
	d := in.Drive
	log := a.driveLogger(ctx, NameDetachVBD, d)
	if err := checkDrive(ctx, d, KindStubdom); err != nil {
		return DetachVBDResult{}, err
	}
	if err := a.ensureLock(ctx, in.Key, d.DomID); err != nil {
		return DetachVBDResult{}, err
	}
	var res DetachVBDResult
	if activity.IsActivity(ctx) && activity.GetInfo(ctx).Attempt > 1 {
		// The last attempt's vbd did not close: something holds the disk, most likely an
		// fdset the stubdom add-fd'd after ReleaseFdset ran (a stubdom slow to publish, or
		// one that publishes after a worker restart was taken for a lost set). The drive is
		// ejected, so every stub-devid set of it is one to let go; the workflow adds their
		// ids to the ones it never takes for a new medium.
		ids, err := a.releaseStubSets(ctx, d, log)
		if err != nil {
			return DetachVBDResult{}, err
		}
		res.ReleasedFdsets = ids
	}
	err := a.withXS(ctx, func(c *xs.Client) error {
		v, err := xen.ReadVBD(ctx, c, d.StubDomID, d.DevID)
		if errors.Is(err, xen.ErrNoSuchVBD) {
			res.WasAbsent = true
			return nil
		}
		if err != nil {
			return err
		}
		// A paused QEMU keeps the medium ReleaseFdset released, and the backend would never
		// close: the workflow waits for the guest to run instead.
		if err := a.checkRunning(ctx, d); err != nil {
			return err
		}
		res.Params = v.Params
		be := v.BackendPath()
		err = xen.RemoveVBD(ctx, c, be)
		switch {
		case errors.Is(err, xen.ErrBackendGone):
			log.Info("The vbd's backend was already gone; removing what is left", "backend", be)
		case err != nil:
			return err
		default:
			wctx, cancel := context.WithTimeout(ctx, a.cfg.VBDTimeout)
			err = xen.WaitBackendState(wctx, c, be, xen.StateClosed)
			cancel()
			if err != nil && !errors.Is(err, xen.ErrBackendGone) {
				if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
					return NewError(ctx, ErrVBDBusy, true, err,
						"the stub domain's vbd %s did not close within %s: the stubdom still has the disk open (QEMU may still hold the old medium in an fdset); it is retried, and the drive is left as it is if it stays busy",
						be, a.cfg.VBDTimeout)
				}
				return err
			}
		}
		if err := xen.DestroyVBD(ctx, c, v); err != nil {
			return err
		}
		log.Info("Detached the stubdom's vbd", "backend", be, "params", v.Params)
		return nil
	})
	if err != nil {
		return DetachVBDResult{}, err
	}
	if res.WasAbsent {
		log.Info("The stubdom has no vbd for the drive: nothing to detach")
	}
	res.Meta = NewMeta(ctx)
	return res, nil
}

// AttachVBD adds a stubdom vbd for the drive (see AttachVBDInput).
func (a *Activities) AttachVBD(ctx context.Context, in AttachVBDInput) (AttachVBDResult, error) {
	d := in.Drive
	log := a.driveLogger(ctx, NameAttachVBD, d)
	if err := checkDrive(ctx, d, KindStubdom); err != nil {
		return AttachVBDResult{}, err
	}
	if in.Params == "" || !filepath.IsAbs(in.Params) {
		return AttachVBDResult{}, NewError(ctx, ErrBadInput, false, nil,
			"vbd params %q is not an absolute path: pass Inspect's NewParams (or OldParams on a restore)", in.Params)
	}
	if err := a.ensureLock(ctx, in.Key, d.DomID); err != nil {
		return AttachVBDResult{}, err
	}
	info, err := a.domainInfo(ctx, d.DomID)
	if err != nil {
		return AttachVBDResult{}, err
	}
	var v xen.VBD
	present := false
	err = a.withXS(ctx, func(c *xs.Client) error {
		var err error
		v, err = xen.ReadVBD(ctx, c, d.StubDomID, d.DevID)
		if err == nil {
			present = true
		} else if errors.Is(err, xen.ErrNoSuchVBD) {
			err = nil
		}
		return err
	})
	if err != nil {
		return AttachVBDResult{}, err
	}
	if present && v.Params != in.Params {
		return AttachVBDResult{}, NewError(ctx, ErrVBDConflict, false, nil,
			"the stub domain %d already has a vbd for %s with params %s, not %s: another change of the drive ran meanwhile; check `cdswap history` and the stubdom's vbds (/libxl/%d/device/vbd/%d)",
			d.StubDomID, d.Vdev, v.Params, in.Params, d.StubDomID, d.DevID)
	}
	// The file is checked (and held open, so that its inode cannot be reused) on every
	// attempt, also when an earlier one added the vbd: what the backend attached is then
	// compared with it.
	checked, err := a.checkVBDParams(ctx, d, info, in.Params)
	if err != nil {
		return AttachVBDResult{}, err
	}
	defer checked.Close()
	if !present {
		v = xen.VBD{BackendDom: 0, FrontendDom: d.StubDomID, DevID: d.DevID, Vdev: d.Vdev, Type: xen.TypePhy, Params: in.Params}
		err = a.withXS(ctx, func(c *xs.Client) error {
			err := xen.AddVBD(ctx, c, v)
			if errors.Is(err, xen.ErrDeviceExists) {
				// Added meanwhile (an attempt whose reply was lost): the same params are fine.
				cur, rerr := xen.ReadVBD(ctx, c, d.StubDomID, d.DevID)
				if rerr == nil && cur.Params == in.Params {
					present = true
					return nil
				}
			}
			return err
		})
		if err != nil {
			return AttachVBDResult{}, err
		}
		if !present {
			log.Info("Attached a vbd to the stubdom", "backend", v.BackendPath(), "params", in.Params)
		}
	}
	if err := a.waitAttached(ctx, v); err != nil {
		return AttachVBDResult{}, err
	}
	att, err := a.checkAttached(ctx, v, checked)
	if err != nil {
		return AttachVBDResult{}, err
	}
	log.Info("The backend attached the checked file", "device", att.Device, "dev", att.Medium.Dev, "ino", att.Medium.Ino)
	att.Meta, att.WasPresent = NewMeta(ctx), present
	return att, nil
}

// checkVBDParams checks what a new stubdom vbd will give the stub domain and returns it open
// (the caller closes it): the guest's empty-cdrom file (created 0400 as libxl creates it,
// when missing), or a raw image beneath the ISO roots named by the path the kernel gives the
// opened file, or an old medium libxl's records say the guest had (a restore).
func (a *Activities) checkVBDParams(ctx context.Context, d Drive, info xen.DomainInfo, params string) (*os.File, error) {
	if params == a.emptyCDROM(d.DomID) {
		return a.openEmptyCDROM(ctx, params)
	}
	m, trusted, err := a.openOldOrNew(ctx, d, info, params, FormatRaw)
	if err != nil {
		return nil, err
	}
	if !trusted && m.Path != params {
		// The hotplug script opens params as root later: it must name the checked file
		// itself, not a symlink that could be pointed elsewhere meanwhile.
		m.File.Close()
		return nil, NewError(ctx, ErrBadInput, false, nil,
			"vbd params %s is not the resolved path of the image (%s): pass Inspect's NewParams", params, m.Path)
	}
	return m.File, nil
}

// openOldOrNew opens medium p for a drive as openMedium does, or, when that refuses it for
// lying outside the roots or for not being a CD image and libxl's records say the guest had
// it (a restore puts it back), as a trusted medium. It reports whether it trusted it.
func (a *Activities) openOldOrNew(ctx context.Context, d Drive, info xen.DomainInfo, p, format string) (*medium, bool, error) {
	m, err := a.openMedium(ctx, p, format, false)
	if err == nil || (!isType(err, ErrMediumOutsideRoots) && !isType(err, ErrFormatMismatch)) || !a.trustedOld(ctx, d, info, p) {
		return m, false, err
	}
	activity.GetLogger(ctx).Info("libxl's records say the guest had the medium: putting it back", "medium", p, "refusal", err)
	m, err = a.openMedium(ctx, p, format, true)
	return m, err == nil, err
}

// openEmptyCDROM opens (creating it 0400, as libxl does, when missing) the guest's
// empty-cdrom file, which must be a regular file.
func (a *Activities) openEmptyCDROM(ctx context.Context, params string) (*os.File, error) {
	fd, err := unix.Open(params, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if errors.Is(err, unix.ENOENT) {
		f, cerr := os.OpenFile(params, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
		if cerr != nil && !errors.Is(cerr, os.ErrExist) {
			return nil, fmt.Errorf("create the empty-cdrom file %s: %w", params, cerr)
		}
		if f != nil {
			f.Close()
		}
		fd, err = unix.Open(params, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	}
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, NewError(ctx, ErrMediumNotRegular, false, err,
				"the empty-cdrom file %s is a symlink, not a regular file: remove it (libxl creates it as an empty file)", params)
		}
		return nil, fmt.Errorf("empty-cdrom file %s: %w", params, err)
	}
	f := os.NewFile(uintptr(fd), params)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("empty-cdrom file %s: %w", params, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, NewError(ctx, ErrMediumNotRegular, false, nil,
			"the empty-cdrom file %s is %s, not a regular file: remove it (libxl creates it as an empty file)", params, statKind(st.Mode))
	}
	return f, nil
}

// waitAttached waits, as libxl__wait_device_connection does (xen.WaitAttached), for the new
// vbd's backend to reach InitWait (or later) with the hotplug script done: hotplug-status
// "connected". "error" or "busy" is ErrHotplugFailed; a wait longer than VBDTimeout is a
// plain (retryable) error.
func (a *Activities) waitAttached(ctx context.Context, v xen.VBD) error {
	be := v.BackendPath()
	wctx, cancel := context.WithTimeout(ctx, a.cfg.VBDTimeout)
	defer cancel()
	err := a.withXS(ctx, func(c *xs.Client) error { return xen.WaitAttached(wctx, c, be) })
	var he *xen.HotplugError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &he):
		return NewError(ctx, ErrHotplugFailed, false, nil,
			"the block hotplug script failed for the stub domain's new vbd %s (params %s): hotplug-status %s: %s; check the file and the host's loop devices (`losetup -a`)",
			be, v.Params, he.Status, he.Reason())
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("the stub domain's new vbd %s did not become ready within %s: retried: %w", be, a.cfg.VBDTimeout, err)
	}
	return err
}

// checkAttached compares what the backend of the new vbd v attached with the file checked
// (held open by the caller). Xen's block script names the file again by its path (it
// resolves params with readlink -f and hands that to losetup) after AttachVBD checked it, so
// anything that renamed a symlink into place meanwhile would give the stub domain another
// file: the loop device it made (physical-device, physical-device-path) must be backed by the
// very inode that was checked. A mismatch is ErrMediumSwapped.
func (a *Activities) checkAttached(ctx context.Context, v xen.VBD, checked *os.File) (AttachVBDResult, error) {
	var want unix.Stat_t
	if err := unix.Fstat(int(checked.Fd()), &want); err != nil {
		return AttachVBDResult{}, fmt.Errorf("fstat the checked medium %s: %w", v.Params, err)
	}
	wantID := FileIdentity{Dev: uint64(want.Dev), Ino: want.Ino}
	be := v.BackendPath()
	var physDev, physPath string
	err := a.withXS(ctx, func(c *xs.Client) error {
		var err error
		if physDev, err = c.Read(ctx, be+"/physical-device"); err != nil && !errors.Is(err, xs.ErrNotFound) {
			return err
		}
		if physPath, err = c.Read(ctx, be+"/physical-device-path"); err != nil && !errors.Is(err, xs.ErrNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return AttachVBDResult{}, err
	}
	got, what, err := attachedFile(physDev, physPath)
	if err != nil {
		return AttachVBDResult{}, fmt.Errorf("the stub domain's new vbd %s: cannot tell what its backend attached: %w", be, err)
	}
	if got != wantID {
		return AttachVBDResult{}, NewError(ctx, ErrMediumSwapped, false, nil,
			"the block hotplug script attached another file than the one checked for the stub domain's vbd %s: %s holds %s, but %s was checked as %s; something replaced it meanwhile (a symlink renamed into place?): nothing of it reached the guest, the old medium is put back; make sure no one can rename files in the ISO root, and submit the change again",
			be, what, got, v.Params, wantID)
	}
	return AttachVBDResult{Device: what, Medium: got}, nil
}

// attachedFile returns the identity of the file a vbd backend attached, and names what holds
// it. physDev is the backend's physical-device ("major:minor" in hex, as the block script
// writes it): a loop device, whose backing file's identity LOOP_GET_STATUS64 gives
// (lo_device, lo_inode), found at physPath or through sysfs. Without physDev, physPath is the
// file the stub domain reads as it is (a host that has no loop devices).
func attachedFile(physDev, physPath string) (FileIdentity, string, error) {
	if physDev == "" {
		if physPath == "" {
			return FileIdentity{}, "", errors.New("neither physical-device nor physical-device-path is written")
		}
		var st unix.Stat_t
		if err := unix.Stat(physPath, &st); err != nil {
			return FileIdentity{}, "", err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return FileIdentity{}, "", fmt.Errorf("physical-device-path %s is %s, and there is no physical-device", physPath, statKind(st.Mode))
		}
		return FileIdentity{Dev: uint64(st.Dev), Ino: st.Ino}, physPath, nil
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(physDev, "%x:%x", &major, &minor); err != nil {
		return FileIdentity{}, "", fmt.Errorf("physical-device %q is not major:minor in hex: %w", physDev, err)
	}
	rdev := unix.Mkdev(major, minor)
	if physPath == "" {
		// /sys/dev/block/M:m/uevent names the device node.
		b, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/uevent", major, minor))
		if err != nil {
			return FileIdentity{}, "", fmt.Errorf("no physical-device-path, and device %d:%d is not in sysfs: %w", major, minor, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "DEVNAME="); ok {
				physPath = "/dev/" + name
			}
		}
	}
	fd, err := unix.Open(physPath, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return FileIdentity{}, "", fmt.Errorf("open %s: %w", physPath, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return FileIdentity{}, "", fmt.Errorf("fstat %s: %w", physPath, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != rdev {
		return FileIdentity{}, "", fmt.Errorf("physical-device-path %s is not the block device %s (physical-device)", physPath, physDev)
	}
	info, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil {
		return FileIdentity{}, "", fmt.Errorf("%s (%s) is not an attached loop device (LOOP_GET_STATUS64: %w): the stub domain was given a device, not the checked file", physPath, physDev, err)
	}
	return FileIdentity{Dev: info.Device, Ino: info.Inode}, "loop device " + physPath, nil
}

package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
	err := a.withXS(ctx, func(c *xs.Client) error {
		v, err := xen.ReadVBD(ctx, c, d.StubDomID, d.DevID)
		if errors.Is(err, xen.ErrNoSuchVBD) {
			res = DetachVBDResult{WasAbsent: true}
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
		res = DetachVBDResult{Params: v.Params}
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
	if !present {
		if err := a.checkVBDParams(ctx, d, info, in.Params); err != nil {
			return AttachVBDResult{}, err
		}
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
	return AttachVBDResult{Meta: NewMeta(ctx), WasPresent: present}, nil
}

// checkVBDParams checks what a new stubdom vbd will give the stub domain: the guest's
// empty-cdrom file (created 0400 as libxl creates it, when missing), or a raw image under
// the ISO roots named by its resolved path, or an old medium libxl's records say the guest
// had (a restore).
func (a *Activities) checkVBDParams(ctx context.Context, d Drive, info xen.DomainInfo, params string) error {
	if params == a.emptyCDROM(d.DomID) {
		fi, err := os.Lstat(params)
		if errors.Is(err, os.ErrNotExist) {
			f, err := os.OpenFile(params, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
			if err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("create the empty-cdrom file %s: %w", params, err)
			}
			if f != nil {
				f.Close()
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("empty-cdrom file %s: %w", params, err)
		}
		if !fi.Mode().IsRegular() {
			return NewError(ctx, ErrMediumNotRegular, false, nil,
				"the empty-cdrom file %s is %s, not a regular file: remove it (libxl creates it as an empty file)", params, fileKind(fi.Mode()))
		}
		return nil
	}
	trusted := false
	m, err := a.openMedium(ctx, params, FormatRaw, false)
	if err != nil && isType(err, ErrMediumOutsideRoots) && a.trustedOld(ctx, d, info, params) {
		trusted = true
		m, err = a.openMedium(ctx, params, FormatRaw, true)
	}
	if err != nil {
		return err
	}
	m.File.Close()
	if !trusted && m.Path != params {
		// The hotplug script opens params as root later: it must name the checked file
		// itself, not a symlink that could be pointed elsewhere meanwhile.
		return NewError(ctx, ErrBadInput, false, nil,
			"vbd params %s is not the resolved path of the image (%s): pass Inspect's NewParams", params, m.Path)
	}
	return nil
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

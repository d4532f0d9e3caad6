package activities

import (
	"context"
	"errors"
	"fmt"

	"github.com/cdswap/cdswap/internal/qmp"
)

// Eject ejects the drive's medium in QEMU (see EjectInput).
func (a *Activities) Eject(ctx context.Context, in EjectInput) (EjectResult, error) {
	d := in.Drive
	log := a.driveLogger(ctx, NameEject, d)
	if err := checkDrive(ctx, d, KindStubdom, KindDom0); err != nil {
		return EjectResult{}, err
	}
	if err := a.ensureLock(ctx, in.Key, d.DomID); err != nil {
		return EjectResult{}, err
	}
	id := d.DevID.QEMUID()
	var res EjectResult
	err := a.withDrive(ctx, d, func(c *qmp.Client, b *qmp.BlockInfo) error {
		if b.Inserted == nil {
			res.WasEmpty = true
			return nil
		}
		err := c.Eject(ctx, id, in.Force)
		switch {
		case err == nil:
			log.Info("Ejected medium", "file", b.Inserted.File, "force", in.Force)
			return nil
		case errors.Is(err, qmp.ErrDeviceNotFound):
			return noDrive(ctx, d, c.Version(), err)
		case errors.Is(err, qmp.ErrGenericError) && (b.Locked || qmp.IsTrayLocked(err)):
			log.Info("The guest keeps the tray locked; QEMU asked it to open the tray", "file", b.Inserted.File)
			return NewError(ctx, ErrTrayLocked, true, err,
				"the guest keeps the tray of %s (domain %s) locked: QEMU asked it to eject; retried, then forced if the change asks for force", d.Vdev, d.domainName())
		}
		return fmt.Errorf("eject %s: %w", id, err)
	})
	if err != nil {
		return EjectResult{}, err
	}
	res.Meta = NewMeta(ctx)
	return res, nil
}

package activities

import (
	"context"
	"fmt"

	"github.com/cdswap/cdswap/internal/qmp"
)

// Verify checks with query-block that the drive holds what it should (see VerifyInput).
func (a *Activities) Verify(ctx context.Context, in VerifyInput) (VerifyResult, error) {
	d := in.Drive
	log := a.driveLogger(ctx, NameVerify, d)
	if err := checkDrive(ctx, d, KindStubdom, KindDom0); err != nil {
		return VerifyResult{}, err
	}
	info, err := a.domainInfo(ctx, d.DomID)
	if err != nil {
		return VerifyResult{}, err
	}
	id := d.devID().QEMUID()
	var res VerifyResult
	err = a.withQMP(ctx, info, func(c *qmp.Client) error {
		blocks, err := c.QueryBlock(ctx)
		if err != nil {
			return fmt.Errorf("query-block: %w", err)
		}
		b := findBlock(blocks, id)
		if b == nil {
			return noDrive(ctx, d, c.Version(), nil)
		}
		res.File, res.TrayOpen = insertedFile(b), trayOpen(b)
		return nil
	})
	if err != nil {
		return VerifyResult{}, err
	}
	ok := res.File == in.Filename && (in.Filename == "" || !res.TrayOpen)
	if !ok {
		want, got := "an empty drive", "an empty drive"
		if in.Filename != "" {
			want = in.Filename + " inserted with the tray closed"
		}
		if res.File != "" {
			got = res.File + " inserted"
		}
		return VerifyResult{}, NewError(ctx, ErrVerifyMismatch, true, nil,
			"QEMU shows %s in %s of domain %s (tray open: %v), want %s", got, d.Vdev, d.domainName(), res.TrayOpen, want)
	}
	log.Info("Verified the drive", "file", res.File, "tray_open", res.TrayOpen)
	res.Meta = NewMeta(ctx)
	return res, nil
}

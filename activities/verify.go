package activities

import (
	"context"

	"github.com/cdswap/cdswap/internal/qmp"
)

// Verify checks with query-block that the drive holds what it should (see VerifyInput).
func (a *Activities) Verify(ctx context.Context, in VerifyInput) (VerifyResult, error) {
	d := in.Drive
	log := a.driveLogger(ctx, NameVerify, d)
	if err := checkDrive(ctx, d, KindStubdom, KindDom0); err != nil {
		return VerifyResult{}, err
	}
	var res VerifyResult
	err := a.withDrive(ctx, d, func(_ *qmp.Client, b *qmp.BlockInfo) error {
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

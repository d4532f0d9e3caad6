package workflows

import "time"

// Change ids for workflow.GetVersion of the dead and paused device model handling (see
// options.go for the others).
const (
	// changeDeviceModelGone: a restore round that fails because the guest's QEMU (or the
	// domain) is gone ends the restore instead of trying the next rounds, which cannot
	// reach it either.
	changeDeviceModelGone = "restore-stops-on-device-model-gone"
	// changeWaitPaused: a DetachVBD refused because the guest is paused
	// (activities.ErrGuestPaused) is waited out (ReleaseFdset and DetachVBD again once the
	// guest runs) instead of failing the change or the restore.
	changeWaitPaused = "wait-while-guest-paused"
)

// Pauses of the wait for a paused guest: the first check after pausedFirstWait, then
// doubling up to pausedMaxWait, so that a guest paused for hours adds few events to the
// history.
const (
	pausedFirstWait = 2 * time.Second
	pausedMaxWait   = 30 * time.Second
)

// WaitingUnpause is Progress.Waiting while a run waits for its guest to be unpaused.
const WaitingUnpause = "waiting for the guest to be unpaused"

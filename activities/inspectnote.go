package activities

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/cdswap/cdswap/internal/xen"
)

// An inspectNote is Inspect's answer to one run of a change, kept on the host from that
// Inspect until the run's Unlock, so that Inspect run again for the same run gives the same
// answer.
//
// That matters once Eject is a local activity in the same workflow task as Inspect: a worker
// that dies after the eject but before the task completes leaves no record of Inspect's
// answer in the history, and the next worker runs Inspect again on a drive that is now
// empty. Asked afresh, Inspect would answer "no old medium", and a restore after a later
// failure would leave the drive empty; the note makes it answer what the drive held before
// this run touched it.
//
// The note is one of libxl's userdata files of the guest (userdata-d.<domid>.<uuid>.
// cdswap-inspect-<devid>, next to xl's own), the place libxl keeps for an application's data
// about a domain: it is per domain incarnation (the uuid), and libxl deletes it with the
// domain. It names the run (a workflow run id): a note left by a run that never reached its
// Unlock (a terminated run) is ignored by the next run of the drive, which writes its own.
type inspectNote struct {
	// RunID is the workflow run that Inspect answered.
	RunID string
	// Result is Inspect's answer.
	Result InspectResult
	// AddedFdset is the fdset the run's AddFD gave a dom0 QEMU for the new medium, nil
	// before (AddFDInput.RunID). AddFD runs only after the run's eject, so QEMU holding that
	// set later means the run's own ChangeMedium put it in (InspectResult.Taken).
	AddedFdset *int64 `json:",omitempty"`
}

// inspectNoteName is the libxl userdata name of the note of the drive devid.
func inspectNoteName(devid xen.DevID) string { return fmt.Sprintf("cdswap-inspect-%d", devid) }

// inspectNotePath is the note's file in libxl's folder.
func (a *Activities) inspectNotePath(domid uint32, uuid string, devid xen.DevID) string {
	return xen.UserdataPath(a.cfg.LibxlDir, domid, uuid, "d", inspectNoteName(devid))
}

// readInspectNote returns the note kept at path for run runID, if there is one. A note of
// another run is none. A note that cannot be read is an error: answering afresh could forget
// the medium the drive held.
func readInspectNote(path, runID string) (inspectNote, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return inspectNote{}, false, nil
	}
	if err != nil {
		return inspectNote{}, false, fmt.Errorf("read Inspect's note %s: %w", path, err)
	}
	var n inspectNote
	if err := json.Unmarshal(b, &n); err != nil {
		return inspectNote{}, false, fmt.Errorf("the Inspect note %s is not a note (%w): if no change of the drive runs, delete it", path, err)
	}
	if n.RunID != runID {
		return inspectNote{}, false, nil
	}
	return n, true, nil
}

// noteAddedFdset keeps in run runID's note at path the fdset id its AddFD made for medium
// of format, when that is the medium the run asked for. An AddFD of another medium (the old
// one, which a restore puts back) clears it: that set in the drive says the change was
// undone, not that it took. A run without a note (none kept: RunID "") keeps nothing.
func noteAddedFdset(path, runID, medium, format string, id int64) error {
	n, ok, err := readInspectNote(path, runID)
	if err != nil || !ok {
		return err
	}
	n.AddedFdset = nil
	if medium == n.Result.Medium && format == n.Result.Format {
		n.AddedFdset = &id
	}
	return writeInspectNote(path, n)
}

// writeInspectNote keeps n at path, whole or not at all (writeFileAtomic): the note must
// outlive the worker, not dom0, whose crash takes the guest with it.
func writeInspectNote(path string, n inspectNote) error {
	b, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("encode Inspect's note: %w", err)
	}
	return writeFileAtomic(path, b)
}

// dropInspectNote deletes the note at path if it is run runID's; it reports whether it did.
func dropInspectNote(path, runID string) (bool, error) {
	if _, ok, err := readInspectNote(path, runID); err != nil || !ok {
		return false, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("delete Inspect's note: %w", err)
	}
	return true, nil
}

// Package activities holds the side effects of a CD-ROM medium change: one Activities value
// per dom0 host whose methods talk to that host's xenstored, its guests' QEMU
// monitors and libxl's lock and config files. Package workflows calls them by method value on
// the host's task queue, TaskQueue(host); one cdswap-worker per host polls it.
//
// This file is the contract between the workflows and the implementations: the task queue
// name, the guest kinds, the application error types the workflows switch on, and one
// <Name>Input / <Name>Result pair per activity. Each method's documentation on its Input type
// says what the activity reads first, when it does nothing (every activity is idempotent: a
// retry after a crash or a lost reply must be safe), and which errors are permanent.
//
// Errors: a permanent failure is returned as
//
//	NewError(ctx, ErrNoSuchDrive, false, cause, "domain %s has no drive %s", name, vdev)
//
// (a non-retryable *temporal.ApplicationError of an exported type below, with the attempt in
// its details), a transient one either as NewError(..., true, ...) with a retryable type such
// as ErrTrayLocked, or as a plain Go error (retried by the step's policy). Messages say what
// was wrong, with the value, and what to do; the workflows never parse them.
package activities

import (
	"context"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/cdswap/cdswap/internal/xen"
)

// TaskQueuePrefix starts the name of every per-host task queue.
const TaskQueuePrefix = "cdswap-host-"

// TaskQueue is the task queue of the dom0 host named host: the ChangeMedium and ResolveDrive
// workflows of that host's guests and all their activities run there, because the side
// effects must happen on the machine that runs the guest.
func TaskQueue(host string) string { return TaskQueuePrefix + host }

// Activity type names: the names of the Activities methods, under which a worker registers
// them and a history shows them. The workflows' step records use them too.
const (
	NameResolveDrive = "ResolveDrive"
	NameInspect      = "Inspect"
	NameLock         = "Lock"
	NameUnlock       = "Unlock"
	NameEject        = "Eject"
	NameReleaseFdset = "ReleaseFdset"
	NameDetachVBD    = "DetachVBD"
	NameAttachVBD    = "AttachVBD"
	NameWaitFdset    = "WaitFdset"
	NameAddFD        = "AddFD"
	NameChangeMedium = "ChangeMedium"
	NameRecord       = "Record"
	NameVerify       = "Verify"
)

// Kind says where a guest's device model runs, which decides the steps of a medium change.
type Kind string

// Guest kinds.
const (
	// KindStubdom: qemu-xen in a Linux stub domain. The medium reaches QEMU as a PV disk of
	// the stubdom, which the stubdom add-fds with opaque "stub-devid:<devid>".
	KindStubdom Kind = "stubdom"
	// KindDom0: qemu-xen running in dom0. The worker opens the medium and add-fds it itself.
	KindDom0 Kind = "dom0"
	// KindTraditional: qemu-xen-traditional, with or without a Mini-OS stubdom. Refused
	// (ErrUnsupportedDeviceModel): it has no QMP medium change and libxl 4.21 dropped it.
	KindTraditional Kind = "traditional"
)

// Image formats. Dom0 QEMU takes the image's format (always passed, XSA-258); a stubdom's
// QEMU sees a block device, so the stubdom path takes raw images only and inserts them as
// host_device.
const (
	FormatRaw        = "raw"
	FormatHostDevice = "host_device"
)

// Application error types (temporal.ApplicationError.Type) returned by the activities.
// Workflows switch on them; an operator sees the message. Unless marked retryable, each is
// permanent: return it with NewError(ctx, Type, false, ...) and list it in
// PermanentErrorTypes.
const (
	// ErrBadInput: an input field is missing or malformed (empty vdev, relative medium path).
	ErrBadInput = "BadInput"
	// ErrWrongHost: the task reached a worker for another host than Input.Host: the worker
	// was started with the wrong --host.
	ErrWrongHost = "WrongHost"
	// ErrNoSuchDomain: no domain of that name or domid on this host (or it died mid-swap).
	ErrNoSuchDomain = "NoSuchDomain"
	// ErrNoSuchDrive: the domain has no disk with that vdev ("Virtual device not found").
	ErrNoSuchDrive = "NoSuchDrive"
	// ErrNotCDROM: the vdev is a disk, not a CD-ROM drive.
	ErrNotCDROM = "NotCDROM"
	// ErrUnsupportedDeviceModel: qemu-xen-traditional, a Mini-OS stubdom, an unknown
	// dm-version, or a QEMU without the commands a change needs.
	ErrUnsupportedDeviceModel = "UnsupportedDeviceModel"
	// ErrMediumOutsideRoots: the medium path is not under one of the worker's ISO roots, or
	// leads out of it (a symlink out, or an absolute one). The message names the path as
	// asked, never where it leads.
	ErrMediumOutsideRoots = "MediumOutsideRoots"
	// ErrMediumNotFound: the medium file does not exist (or vanished before it was opened).
	ErrMediumNotFound = "MediumNotFound"
	// ErrMediumNotRegular: the medium is a directory, device or other non-regular file.
	ErrMediumNotRegular = "MediumNotRegular"
	// ErrFormatMismatch: the format is not one QEMU knows, not the file's, not raw for a
	// stubdom guest, or raw but no CD image where only CD images are served.
	ErrFormatMismatch = "FormatMismatch"
	// ErrTrayLocked (retryable): the guest has locked the tray and Eject was not forced.
	// QEMU has asked the guest to open it; the next attempt usually succeeds.
	ErrTrayLocked = "TrayLocked"
	// ErrLockBusy (retryable): libxl-device-changes-lock is held by someone else (xl,
	// libvirt, another swap of the same domain).
	ErrLockBusy = "LockBusy"
	// ErrVBDBusy (retryable): the stubdom's vbd backend did not reach Closed in time; the
	// frontend still holds the device.
	ErrVBDBusy = "VBDBusy"
	// ErrVBDConflict: a vbd for the devid exists with other params than asked.
	ErrVBDConflict = "VBDConflict"
	// ErrHotplugFailed: the block hotplug script reported an error for the new vbd.
	ErrHotplugFailed = "HotplugFailed"
	// ErrFdsetTimeout: the stubdom did not publish a new stub-devid fdset in time.
	ErrFdsetTimeout = "FdsetTimeout"
	// ErrFdsetGone: the fdset to insert from is no longer in QEMU (the QMP connection that
	// added it dropped, before QEMU 9.1). Dom0: the workflow redoes AddFD.
	ErrFdsetGone = "FdsetGone"
	// ErrMediumSwapped: the block hotplug script attached another file than the one AttachVBD
	// checked (the file was replaced between the check and the script's open): the stub
	// domain must not get it, and the old medium is put back.
	ErrMediumSwapped = "MediumSwapped"
	// ErrVerifyMismatch (retryable): query-block does not show the expected medium.
	ErrVerifyMismatch = "VerifyMismatch"
	// ErrDeviceModelGone: the guest's QEMU is gone: its QMP socket refuses connections (or
	// is missing) and its recorded process is dead, or it kept refusing for
	// deviceModelGrace. No retry can reach it; the domain must be restarted.
	ErrDeviceModelGone = "DeviceModelGone"
	// ErrGuestPaused: the guest's QEMU is paused (query-status not running, after QMP stop,
	// `virsh suspend` or a save). Inspect refuses it: a paused QEMU keeps a removed fd, so a
	// stubdom's PV disk could not be detached. DetachVBD returns it instead of waiting, and
	// the workflow waits for the guest to run again.
	ErrGuestPaused = "GuestPaused"
	// ErrNoWorker: no cdswap-worker polls the host's task queue (set by the ResolveDrive
	// workflow from a ScheduleToStart timeout, never by an activity).
	ErrNoWorker = "NoWorker"
)

// PermanentErrorTypes lists the error types that no retry can fix, for
// RetryPolicy.NonRetryableErrorTypes (a safety net: activities mark them non-retryable
// themselves). It returns a new slice on every call.
func PermanentErrorTypes() []string {
	return []string{
		ErrBadInput, ErrWrongHost, ErrNoSuchDomain, ErrNoSuchDrive, ErrNotCDROM,
		ErrUnsupportedDeviceModel, ErrMediumOutsideRoots, ErrMediumNotFound,
		ErrMediumNotRegular, ErrFormatMismatch, ErrVBDConflict, ErrHotplugFailed,
		ErrMediumSwapped, ErrFdsetTimeout, ErrFdsetGone, ErrNoWorker, ErrDeviceModelGone,
	}
}

// Meta is embedded in every activity result.
type Meta struct {
	// Attempt is activity.GetInfo(ctx).Attempt of the attempt that produced the result
	// (1 = first try), so that the workflow's step records show retries.
	Attempt int32
}

// AttemptNumber returns m.Attempt; the workflows read it through this method.
func (m Meta) AttemptNumber() int32 { return m.Attempt }

// NewMeta fills Meta from an activity context (Attempt 0 outside an activity).
func NewMeta(ctx context.Context) Meta {
	if !activity.IsActivity(ctx) {
		return Meta{}
	}
	return Meta{Attempt: activity.GetInfo(ctx).Attempt}
}

// FailureDetails is the detail value NewError attaches to an activity's error.
type FailureDetails struct {
	// Attempt is the attempt that failed (1 = first try; 0 outside an activity).
	Attempt int32
}

// NewError returns an application error of type errType for an activity to return:
// retryable or not as asked, with cause kept for logs and the failing attempt in its details
// (FailureDetails), so that the workflow can record how many attempts a step took.
func NewError(ctx context.Context, errType string, retryable bool, cause error, format string, args ...any) error {
	return temporal.NewApplicationErrorWithOptions(fmt.Sprintf(format, args...), errType,
		temporal.ApplicationErrorOptions{
			NonRetryable: !retryable,
			Cause:        cause,
			Details:      []any{FailureDetails{Attempt: NewMeta(ctx).Attempt}},
		})
}

// FdsetFilename is the file name QEMU resolves to a dup of an fd of fdset id.
func FdsetFilename(id int64) string { return fmt.Sprintf("/dev/fdset/%d", id) }

// FdsetOfFilename is the fdset id of a file name FdsetFilename makes, and whether file is one.
func FdsetOfFilename(file string) (int64, bool) {
	var id int64
	if _, err := fmt.Sscanf(file, "/dev/fdset/%d", &id); err != nil || FdsetFilename(id) != file {
		return 0, false
	}
	return id, true
}

// Drive identifies the CD-ROM drive a step works on, as Inspect found it. Every step after
// Inspect takes one (and Lock/Unlock its DomID).
type Drive struct {
	// DomID is the guest's domid.
	DomID uint32
	// Name is the guest's name, for logs and messages.
	Name string
	// Vdev is the drive as named by the operator and by libxl ("hdc", "xvdc", "sdc").
	Vdev string
	// DevID is libxl's devid of Vdev (hdc = 5632), found once by Inspect (a number in
	// JSON). QEMU's device id is DevID.QEMUID(), "ide-<DevID>"; the stubdom's fdset opaque
	// DevID.StubOpaque(), "stub-devid:<DevID>".
	DevID xen.DevID
	// Kind is where the device model runs.
	Kind Kind
	// StubDomID is the stubdom's domid for KindStubdom, 0 otherwise.
	StubDomID uint32
	// BackendType is the backend type of the drive's vbd in libxl's records ("phy" or
	// "qdisk"); Record keeps it, as libxl does.
	BackendType string
}

// ResolveDriveInput names a drive the way an operator does.
//
// Activities.ResolveDrive(ctx, in) (ResolveDriveResult, error) only reads: it finds the
// domain by name (/local/domain/*/name, skipping stub domains) or by domid (a decimal
// Domain), then its vbd whose libxl "dev" equals Vdev (/libxl/<domid>/device/vbd/*, the
// stubdom's list for a stubdom guest), and its device model kind. It does not refuse
// KindTraditional (the caller decides); Inspect does.
//
// Errors: ErrBadInput, ErrWrongHost, ErrNoSuchDomain, ErrNoSuchDrive, ErrNotCDROM.
type ResolveDriveInput struct {
	// Host is the dom0 host the operator named; a worker for another host refuses.
	Host string
	// Domain is the guest's name, or its domid in decimal.
	Domain string
	// Vdev is the drive ("hdc", "xvdc").
	Vdev string
}

// ResolveDriveResult is the drive ResolveDrive found.
type ResolveDriveResult struct {
	Meta
	// DomID is the guest's domid.
	DomID uint32
	// Name is the guest's name.
	Name string
	// DevID is libxl's devid of the vdev (a number in JSON).
	DevID xen.DevID
	// Kind is where the guest's device model runs.
	Kind Kind
}

// InspectInput asks for the state of a drive and for validation of a change to it.
//
// Activities.Inspect(ctx, in) (InspectResult, error) only reads. It reads
// /libxl/<domid>/dm-version ("qemu_xen"; "qemu_xen_traditional" or missing is refused),
// /local/domain/<domid>/image/device-model-domid (the stubdom, 0 = none), the cdrom vbd from
// /libxl/<disk domid>/device/vbd/<devid> (refusing a missing drive or a non-cdrom one), then
// over QMP the QEMU version, query-block for ide-<devid> (tray, lock, inserted file) and, for
// a stubdom, query-fdsets (the stub-devid sets present now). It validates the new medium:
// an absolute path under one of the worker's ISO roots, opened beneath the root (symlinks
// followed only while they stay inside it), a regular file, readable; and the format: a
// format QEMU knows for dom0, raw only for a stubdom, and a raw image must be a CD image
// (ISO 9660 or UDF) unless its root allows other raw images.
//
// Errors: ErrBadInput, ErrWrongHost, ErrNoSuchDomain, ErrNoSuchDrive, ErrNotCDROM,
// ErrUnsupportedDeviceModel, ErrMediumOutsideRoots, ErrMediumNotFound, ErrMediumNotRegular,
// ErrFormatMismatch (all permanent); QMP or xenstore trouble as plain (retryable) errors.
type InspectInput struct {
	// Host is the dom0 host; a worker for another host refuses (ErrWrongHost).
	Host string
	// DomID is the guest.
	DomID uint32
	// Vdev is the drive.
	Vdev string
	// Medium is the new medium's path; "" asks for an eject.
	Medium string
	// Format is the new medium's format ("raw" when empty).
	Format string
	// RunID, when set, is the workflow run asking: Inspect keeps its answer on the host for
	// that run (see inspectNote) unless the change has nothing to do, and gives the kept
	// answer when asked again by the same run, whatever the drive holds by then. Unlock with
	// the same RunID deletes it. "" (runs before Eject was a local activity) keeps nothing.
	RunID string `json:",omitempty"`
	// Resume, with RunID, asks whether the run's change already took when Inspect answers
	// from the run's note (a worker was lost mid-run): InspectResult.Taken. Runs that make
	// AddFD a local step set it, since a dom0 change is then one workflow task from Inspect
	// to Unlock, and a worker lost after ChangeMedium must not eject what it put in.
	Resume bool `json:",omitempty"`
	// NoteOnly, with RunID, asks only for the answer kept in the run's note: that answer
	// (InspectResult.FromNote), or an empty result when there is none. QEMU is not asked and
	// no note is kept. A run canceled before its Inspect answered asks it, since an attempt
	// of its workflow task that was lost may have inspected and ejected already.
	NoteOnly bool `json:",omitempty"`
}

// InspectResult is the drive's state now and the validated change.
type InspectResult struct {
	Meta
	// Drive identifies the drive for the later steps.
	Drive Drive
	// DMVersion is /libxl/<domid>/dm-version ("qemu_xen").
	DMVersion string
	// QEMUVersion is QEMU's version ("7.2.0").
	QEMUVersion string
	// TrayOpen and TrayLocked are query-block's tray_open and locked.
	TrayOpen, TrayLocked bool
	// QEMUFile is query-block's inserted.file ("" = no medium in QEMU).
	QEMUFile string
	// OldMedium is the host path of the medium QEMU holds now, as libxl's records name it
	// ("" when QEMU has no medium): what a failed change puts back.
	OldMedium string
	// OldFormat is OldMedium's format ("" when empty).
	OldFormat string
	// OldParams is the "params" of the vbd now: for a stubdom the stubdom vbd's params (the
	// image path, or the empty-cdrom file), for dom0 the guest vbd's ("aio:/isos/a.iso").
	// Record writes it back, and AttachVBD re-creates the stubdom vbd with it, on a restore.
	OldParams string
	// Fdsets lists the ids of the fdsets with opaque stub-devid:<devid> now (stubdom), sorted.
	Fdsets []int64
	// Medium is the new medium's path, cleaned ("" = eject).
	Medium string
	// Format is the new medium's format, normalized ("raw"; "" for an eject).
	Format string
	// NewParams is the vbd "params" for the new medium, as libxl writes it: for a stubdom the
	// image path, or for an eject the empty-cdrom file (/var/run/xen/empty-cdrom.<domid>);
	// for dom0 qdisk "<aio|qcow2|...>:<path>", or "" for an eject.
	NewParams string
	// InPlace is true when QEMU already holds Medium with the tray closed (or is empty with
	// Medium "") and libxl's records already say so: the change has nothing to do.
	InPlace bool
	// Taken, for an InspectInput.Resume from the run's note, is the file a dom0 QEMU holds
	// with its tray closed ("/dev/fdset/<id>") when that fdset is the one AddFD made for
	// Medium: the change took before the run's worker was lost, and only Record, Verify and
	// Unlock are left. "" otherwise.
	Taken string `json:",omitempty"`
	// FromNote is true when the answer is the one the run's note kept (InspectInput.RunID).
	FromNote bool `json:",omitempty"`
}

// LockInput names libxl's device-changes lock of a domain.
//
// Activities.Lock(ctx, in) (LockResult, error) takes
// /var/lib/xen/userdata-l.<domid>.<uuid>.libxl-device-changes-lock (flock LOCK_EX, with
// libxl's stat/fstat inode check) and keeps it open in the worker process, in a table keyed
// by Key. Idempotent: if this worker already holds it under Key, it is done. It does not
// block for long: held by anyone else, it fails with ErrLockBusy (retryable) and the step's
// retry policy waits. A worker that restarts loses its locks; each mutating activity takes
// the same Key and re-takes the lock if this process does not hold it (ErrLockBusy if it
// cannot).
//
// Errors: ErrLockBusy (retryable), ErrNoSuchDomain.
type LockInput struct {
	// DomID is the guest.
	DomID uint32
	// Key identifies the holder: the workflow id.
	Key string
}

// LockResult says which lock file is held.
type LockResult struct {
	Meta
	// Path is the lock file.
	Path string
	// AlreadyHeld is true if this worker already held it under Key (a retried attempt).
	AlreadyHeld bool
}

// UnlockInput releases what Lock took.
//
// Activities.Unlock(ctx, in) (UnlockResult, error) closes the lock file held under Key.
// Idempotent: not held (never taken, already released, or lost with a restarted worker) is
// done. It never releases a lock held under another Key.
type UnlockInput struct {
	// DomID is the guest.
	DomID uint32
	// Key is the workflow id given to Lock.
	Key string
	// Vdev and RunID, when RunID is set, name the drive and the run whose Inspect note
	// (InspectInput.RunID) the change is done with: Unlock deletes it, if it is that run's.
	Vdev  string `json:",omitempty"`
	RunID string `json:",omitempty"`
}

// UnlockResult says whether there was something to release.
type UnlockResult struct {
	Meta
	// WasHeld is false if nothing was held under Key.
	WasHeld bool
}

// EjectInput asks QEMU to eject the drive's medium.
//
// Activities.Eject(ctx, in) (EjectResult, error) reads query-block first: no medium inserted
// is done. Otherwise it sends "eject" with id=ide-<devid> (device= before QEMU 2.8) and
// force only when Force. A locked tray ("Device 'ide-5632' is locked and force was not
// specified, wait for tray to open and try again") is ErrTrayLocked, retryable: QEMU has
// asked the guest to open the tray, and the policy retries a few times before the workflow
// either forces (ChangeMediumInput.Force) or gives up with the drive untouched.
//
// Errors: ErrTrayLocked (retryable), ErrNoSuchDrive (DeviceNotFound), ErrLockBusy.
type EjectInput struct {
	// Drive is the drive.
	Drive Drive
	// Key is the workflow id holding the lock (see LockInput).
	Key string
	// Force ejects even a guest-locked tray.
	Force bool
}

// EjectResult says what Eject did.
type EjectResult struct {
	Meta
	// WasEmpty is true if QEMU had no medium and nothing was sent.
	WasEmpty bool
}

// ReleaseFdsetInput asks QEMU to release the stubdom's fdsets for the drive.
//
// Activities.ReleaseFdset(ctx, in) (ReleaseFdsetResult, error) (stubdom only) sends
// query-fdsets and a remove-fd (no fd: the whole set) for every set with an fd whose opaque
// is exactly "stub-devid:<devid>". Idempotent: remove-fd of a set that is gone is fine, no set
// is done (the first change after boot has none: QEMU opened /dev/xvdX directly). remove-fd
// does not always make a set vanish from query-fdsets (QEMU keeps it while the VM is not
// running, or while a dup is in use), so the result lists every id seen; WaitFdset must
// ignore them all.
type ReleaseFdsetInput struct {
	// Drive is the drive.
	Drive Drive
	// Key is the workflow id holding the lock.
	Key string
}

// ReleaseFdsetResult lists the fdsets seen.
type ReleaseFdsetResult struct {
	Meta
	// FdsetIDs are the ids of every set with the drive's stub-devid opaque that was seen (and
	// remove-fd'd), sorted.
	FdsetIDs []int64
}

// DetachVBDInput asks for the stubdom's vbd of the drive to be removed.
//
// Activities.DetachVBD(ctx, in) (DetachVBDResult, error) (stubdom only) reads
// /libxl/<stubdomid>/device/vbd/<devid>: absent is done. Otherwise, as libxl with force off:
// online=0 and state=5 (unless already 6) on the backend, a wait (about 10 s) for backend
// state Closed(6), then removal of the frontend, backend and /libxl paths in one
// transaction.
//
// Errors: ErrVBDBusy (retryable: Closed not reached; the vbd is left closing), ErrLockBusy.
type DetachVBDInput struct {
	// Drive is the drive.
	Drive Drive
	// Key is the workflow id holding the lock.
	Key string
}

// DetachVBDResult says what was removed.
type DetachVBDResult struct {
	Meta
	// Params are the params of the vbd that was removed ("" if it was absent).
	Params string
	// WasAbsent is true if there was no vbd to remove.
	WasAbsent bool
	// ReleasedFdsets are the stub-devid fdsets a retried attempt removed because they held
	// the disk open (see DetachVBD); none on a first attempt.
	ReleasedFdsets []int64 `json:",omitempty"`
}

// AttachVBDInput asks for a new stubdom vbd for the drive.
//
// Activities.AttachVBD(ctx, in) (AttachVBDResult, error) (stubdom only) reads
// /libxl/<stubdomid>/device/vbd/<devid> first: present with the same params, it only waits
// (below); present with other params is ErrVBDConflict. Otherwise it adds the vbd as libxl
// does (backend phy in dom0, mode r, device-type cdrom, script block, state 1, in one
// transaction), creating the empty-cdrom file (0400) if Params names it and it is missing.
// Then it waits (about 10 s) for backend InitWait(2) or later and hotplug-status
// "connected". Params is checked as Inspect checks a medium (beneath an ISO root, or an old
// medium libxl's records name) and held open on every attempt; once the hotplug script ran,
// the loop device it made (physical-device) must be backed by that file's device and inode,
// or the step fails with ErrMediumSwapped before the medium reaches QEMU's drive.
//
// Errors: ErrVBDConflict, ErrHotplugFailed (hotplug-status "error"), ErrMediumSwapped,
// ErrMediumOutsideRoots, ErrMediumNotFound, ErrMediumNotRegular, ErrFormatMismatch,
// ErrLockBusy; a wait that times out is a plain (retryable) error.
type AttachVBDInput struct {
	// Drive is the drive.
	Drive Drive
	// Key is the workflow id holding the lock.
	Key string
	// Params is the vbd's params: the image path, or the empty-cdrom file for an eject
	// (InspectResult.NewParams, or OldParams on a restore).
	Params string
}

// AttachVBDResult says what AttachVBD did.
type AttachVBDResult struct {
	Meta
	// WasPresent is true if the vbd was already there with these params.
	WasPresent bool
	// Device names what the backend attached ("loop device /dev/loop3"), as checked.
	Device string
	// Medium is the identity of the file the backend attached, equal to the checked one's.
	Medium FileIdentity
}

// FileIdentity is a file's identity, as stat(2) gives it: device and inode numbers.
type FileIdentity struct {
	// Dev is st_dev (the kernel's encoding, as LOOP_GET_STATUS64's lo_device).
	Dev uint64
	// Ino is st_ino.
	Ino uint64
}

// WaitFdsetInput asks to wait for the stubdom to add-fd the drive's new PV disk.
//
// Activities.WaitFdset(ctx, in) (WaitFdsetResult, error) (stubdom only) polls query-fdsets
// every Interval until a set has an fd whose opaque is exactly "stub-devid:<devid>" and
// whose id is not in KnownFdsets, and returns it. It heartbeats on every poll with a
// WaitFdsetProgress (the step's HeartbeatTimeout is short, so a dead worker is noticed
// quickly); a retried attempt may resume its poll count from the last heartbeat. After
// Timeout (counted from the start of the attempt) it fails with ErrFdsetTimeout, naming the
// usual causes: the stubdom lacks the add-fd hook, or mdev is not running as a daemon.
//
// Errors: ErrFdsetTimeout.
type WaitFdsetInput struct {
	// Drive is the drive.
	Drive Drive
	// KnownFdsets are the sets to ignore: every stub-devid set seen before the vbd was
	// re-attached (Inspect, ReleaseFdset, earlier waits), sorted.
	KnownFdsets []int64
	// Interval between polls (50 ms when zero).
	Interval time.Duration
	// Timeout of the wait (25 s when zero).
	Timeout time.Duration
	// Wake makes the wait watch the stubdom's vbd frontend in xenstore and poll QEMU at once
	// when it changes state, then every FastInterval for a moment once it is Connected, when
	// the stubdom add-fds (see fdsetWake); false polls every Interval only.
	Wake bool `json:",omitempty"`
}

// WaitFdsetResult is the new fdset.
type WaitFdsetResult struct {
	Meta
	// FdsetID is the new set.
	FdsetID int64
	// Polls is how many query-fdsets it took.
	Polls int
}

// WaitFdsetProgress is WaitFdset's heartbeat detail.
type WaitFdsetProgress struct {
	// Polls so far in this attempt (or since the first attempt, if resumed).
	Polls int
	// Ignored are the ids of sets with the right opaque that were skipped as known.
	Ignored []int64
}

// AddFDInput asks the worker to open a medium and pass it to dom0 QEMU.
//
// Activities.AddFD(ctx, in) (AddFDResult, error) (dom0 only) reads query-fdsets first and
// reuses a set with an fd whose opaque is exactly "<format>:<medium>" if one is still there.
// Otherwise it opens Medium O_RDONLY and sends add-fd with that opaque, passing the fd by
// SCM_RIGHTS. A set added on a QMP connection that later dropped can vanish with it (QEMU
// before 9.1), which is why ChangeMedium may answer ErrFdsetGone and the workflow then runs
// AddFD again.
//
// Errors: ErrMediumNotFound, ErrMediumNotRegular, ErrLockBusy.
type AddFDInput struct {
	// Drive is the drive.
	Drive Drive
	// Key is the workflow id holding the lock.
	Key string
	// Medium is the image's path.
	Medium string
	// Format is its format ("raw", "qcow2").
	Format string
	// RunID, when set, is the workflow run asking: AddFD keeps the set it made in the run's
	// Inspect note (InspectResult.Taken). "" keeps nothing.
	RunID string `json:",omitempty"`
}

// AddFDResult is the fdset that holds the medium.
type AddFDResult struct {
	Meta
	// FdsetID is the set.
	FdsetID int64
	// Reused is true if an existing set with the same opaque was reused.
	Reused bool
}

// ChangeMediumInput asks QEMU to insert the medium held by an fdset.
//
// Activities.ChangeMedium(ctx, in) (ChangeMediumResult, error) reads query-block first: if
// ide-<devid> already has FdsetFilename(FdsetID) inserted with the tray closed, it is done.
// It checks with query-fdsets that the set is still there (ErrFdsetGone if not), then sends
// blockdev-change-medium id=ide-<devid> (device= before QEMU 2.8) filename=/dev/fdset/<N>
// format=Format. "Could not dup FD for /dev/fdset/N" is also ErrFdsetGone.
//
// Errors: ErrFdsetGone, ErrNoSuchDrive, ErrFormatMismatch, ErrLockBusy.
type ChangeMediumInput struct {
	// Drive is the drive.
	Drive Drive
	// Key is the workflow id holding the lock.
	Key string
	// FdsetID is the set to insert from.
	FdsetID int64
	// Format is "host_device" for a stubdom, the image's format for dom0.
	Format string
}

// ChangeMediumResult says what is inserted.
type ChangeMediumResult struct {
	Meta
	// Filename is the inserted file name (/dev/fdset/N).
	Filename string
	// WasInserted is true if it already was and nothing was sent.
	WasInserted bool
}

// RecordInput asks for libxl's records of the drive to be updated.
//
// Activities.Record(ctx, in) (RecordResult, error) writes "type" (Drive.BackendType) and
// "params" (Params) on the vbd's backend path and its /libxl path in one transaction, after
// checking that <libxl path>/frontend exists (XSA-178), retrying on EAGAIN; for a stubdom
// these are the stubdom's vbd paths. Then, under the domain-userdata lock, it replaces the
// drive's disk entry in the guest's libxl JSON config
// (/var/lib/xen/userdata-d.<domid>.<uuid>.libxl-json): pdev_path Medium, format Format, or
// an empty cdrom. Idempotent: values already in place are not rewritten.
//
// Errors: ErrNoSuchDrive (no frontend: the drive is gone), ErrNoSuchDomain, ErrLockBusy.
type RecordInput struct {
	// Drive is the drive.
	Drive Drive
	// Key is the workflow id holding the lock.
	Key string
	// Medium is the image now in the drive ("" = empty).
	Medium string
	// Format is its format ("" when empty).
	Format string
	// Params is the xenstore "params" value (InspectResult.NewParams, or OldParams on a
	// restore).
	Params string
}

// RecordResult says whether anything was written.
type RecordResult struct {
	Meta
	// Changed is false if xenstore and the JSON config already held these values.
	Changed bool
}

// VerifyInput states what the drive must hold now.
//
// Activities.Verify(ctx, in) (VerifyResult, error) only reads: query-block for ide-<devid>
// must show Filename inserted with the tray closed, or, for Filename "", no medium inserted
// (the tray may be open).
//
// Errors: ErrVerifyMismatch (retryable), ErrNoSuchDrive.
type VerifyInput struct {
	// Drive is the drive.
	Drive Drive
	// Filename is the expected inserted file (/dev/fdset/N), "" for an empty drive.
	Filename string
}

// VerifyResult is what query-block showed.
type VerifyResult struct {
	Meta
	// File is inserted.file ("" = none).
	File string
	// TrayOpen is tray_open.
	TrayOpen bool
}

package activities

import "context"

// Activities holds one dom0 host's clients (xenstore, QMP, the ISO roots, libxl's
// directories). Register a *Activities with a worker polling TaskQueue(host); the workflows
// call its methods by method value on a nil *Activities, so the method names are the activity
// type names. The contract of each method is documented on its Input type in api.go.
type Activities struct {
	// fields filled later
}

// errNotImplemented is the type of the placeholder errors below.
const errNotImplemented = "NotImplemented"

// notImplemented fails an activity that has no implementation yet, permanently, so that a
// worker running these stubs does not retry forever.
func notImplemented(ctx context.Context, name string) error {
	return NewError(ctx, errNotImplemented, false, nil, "%s: not implemented yet", name)
}

// ResolveDrive finds a drive by host, domain name or domid, and vdev (see ResolveDriveInput).
func (a *Activities) ResolveDrive(ctx context.Context, in ResolveDriveInput) (ResolveDriveResult, error) {
	return ResolveDriveResult{}, notImplemented(ctx, "ResolveDrive")
}

// Inspect reads a drive's state and validates a change (see InspectInput).
func (a *Activities) Inspect(ctx context.Context, in InspectInput) (InspectResult, error) {
	return InspectResult{}, notImplemented(ctx, "Inspect")
}

// Lock takes libxl's device-changes lock for a domain (see LockInput).
func (a *Activities) Lock(ctx context.Context, in LockInput) (LockResult, error) {
	return LockResult{}, notImplemented(ctx, "Lock")
}

// Unlock releases the lock taken by Lock (see UnlockInput).
func (a *Activities) Unlock(ctx context.Context, in UnlockInput) (UnlockResult, error) {
	return UnlockResult{}, notImplemented(ctx, "Unlock")
}

// Eject ejects the drive's medium in QEMU (see EjectInput).
func (a *Activities) Eject(ctx context.Context, in EjectInput) (EjectResult, error) {
	return EjectResult{}, notImplemented(ctx, "Eject")
}

// ReleaseFdset removes the stubdom's fdsets of the drive from QEMU (see ReleaseFdsetInput).
func (a *Activities) ReleaseFdset(ctx context.Context, in ReleaseFdsetInput) (ReleaseFdsetResult, error) {
	return ReleaseFdsetResult{}, notImplemented(ctx, "ReleaseFdset")
}

// DetachVBD removes the stubdom's vbd of the drive (see DetachVBDInput).
func (a *Activities) DetachVBD(ctx context.Context, in DetachVBDInput) (DetachVBDResult, error) {
	return DetachVBDResult{}, notImplemented(ctx, "DetachVBD")
}

// AttachVBD adds a stubdom vbd for the drive (see AttachVBDInput).
func (a *Activities) AttachVBD(ctx context.Context, in AttachVBDInput) (AttachVBDResult, error) {
	return AttachVBDResult{}, notImplemented(ctx, "AttachVBD")
}

// WaitFdset waits for the stubdom to publish a new fdset for the drive (see WaitFdsetInput).
func (a *Activities) WaitFdset(ctx context.Context, in WaitFdsetInput) (WaitFdsetResult, error) {
	return WaitFdsetResult{}, notImplemented(ctx, "WaitFdset")
}

// AddFD opens a medium and passes it to dom0 QEMU in an fdset (see AddFDInput).
func (a *Activities) AddFD(ctx context.Context, in AddFDInput) (AddFDResult, error) {
	return AddFDResult{}, notImplemented(ctx, "AddFD")
}

// ChangeMedium inserts the medium held by an fdset (see ChangeMediumInput).
func (a *Activities) ChangeMedium(ctx context.Context, in ChangeMediumInput) (ChangeMediumResult, error) {
	return ChangeMediumResult{}, notImplemented(ctx, "ChangeMedium")
}

// Record updates libxl's xenstore records and JSON config of the drive (see RecordInput).
func (a *Activities) Record(ctx context.Context, in RecordInput) (RecordResult, error) {
	return RecordResult{}, notImplemented(ctx, "Record")
}

// Verify checks with query-block that the drive holds what it should (see VerifyInput).
func (a *Activities) Verify(ctx context.Context, in VerifyInput) (VerifyResult, error) {
	return VerifyResult{}, notImplemented(ctx, "Verify")
}

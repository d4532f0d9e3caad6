// Package fakehost is a fake cdswap host for the tests of the workflows and of the CLI: the
// activities of package activities answered with canned results, as a healthy dom0 with one
// guest would answer them, every call recorded, and any step breakable by a hook.
//
// The guest is web1, domid 7, with its cdrom hdc (devid 5632) holding /isos/old.iso; a
// stubdom guest's device model runs in domain 8 and reaches the old medium through fdset 3.
// The activities themselves are tested against xensim, with the real peers; this fake
// stands in for them where the subject is the workflow or the CLI above them.
//
// It is for tests only: production code must not import it.
package fakehost

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"go.temporal.io/sdk/activity"

	"github.com/cdswap/cdswap/activities"
)

// The fake host's guest and media.
const (
	Domain     = "web1"
	DomID      = 7
	StubDomID  = 8 // the device model's domain of a stubdom guest
	Vdev       = "hdc"
	DevID      = 5632
	ISORoot    = "/isos" // the only ISO root: Inspect refuses a medium outside it
	OldISO     = "/isos/old.iso"
	NewISO     = "/isos/new.iso"
	EmptyCDROM = "/var/run/xen/empty-cdrom.7"
	// OldFdset is the stub-devid fdset through which a stubdom's QEMU holds OldISO.
	OldFdset = 3
	// FirstWaitFdset and FirstAddFD are the ids of the first new fdset that WaitFdset and
	// AddFD return; each later call returns the next id.
	FirstWaitFdset = 10
	FirstAddFD     = 20
	// LockPath is the device-changes lock that Lock reports.
	LockPath = "/var/lib/xen/userdata-l.7.u.libxl-device-changes-lock"
)

// Hook may make the n-th call (1-based, every attempt counted) of one activity fail, or
// block; in is the call's input. It runs in the activity's goroutine.
type Hook func(ctx context.Context, n int, in any) error

// Call is one activity call the host saw.
type Call struct {
	Name    string // activity type name
	In      any    // its input, such as an activities.EjectInput
	Attempt int32  // its attempt (1 = first try)
}

// Host answers the activities. Its zero value is host h1 with a stubdom guest; its
// exported fields are set before the first call. Its methods are safe for concurrent use.
// Register registers the activities on a worker or a test environment.
type Host struct {
	// Name is the host the fake is, as refusals name it; default "h1".
	Name string
	// Kind is the guest's kind; default activities.KindStubdom.
	Kind activities.Kind
	// EmptyDrive makes the drive empty: Inspect finds no old medium (default OldISO).
	EmptyDrive bool
	// InPlace makes Inspect say that the drive already holds the medium asked for.
	InPlace bool
	// Taken makes Inspect, asked to resume a run (InspectInput.Resume), say that the run's
	// change already took, QEMU holding this file.
	Taken string
	// NoteKept makes Inspect asked for the run's note only (InspectInput.NoteOnly) answer
	// from a note; without it, that Inspect answers nothing.
	NoteKept bool

	mu         sync.Mutex // guards the fields below
	calls      []Call
	hooks      map[string]Hook
	waitFdsets int64 // new sets WaitFdset returned
	addFDs     int64 // new sets AddFD returned
}

// On sets the hook of activity name (an activities.Name* constant), replacing any.
func (h *Host) On(name string, f Hook) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hooks == nil {
		h.hooks = map[string]Hook{}
	}
	h.hooks[name] = f
}

// Calls returns every call so far, in order.
func (h *Host) Calls() []Call {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Call(nil), h.calls...)
}

// Names lists the activities called so far, in order, one per attempt.
func (h *Host) Names() []string {
	var out []string
	for _, c := range h.Calls() {
		out = append(out, c.Name)
	}
	return out
}

// Inputs returns the inputs of every call of activity name, in order.
func Inputs[I any](h *Host, name string) []I {
	var out []I
	for _, c := range h.Calls() {
		if c.Name == name {
			out = append(out, c.In.(I))
		}
	}
	return out
}

// Registry is where Register puts the activities: a worker.Worker or a
// testsuite.TestWorkflowEnvironment.
type Registry interface {
	RegisterActivityWithOptions(a any, options activity.RegisterOptions)
}

// Register registers every activity of the host under its type name.
func (h *Host) Register(r Registry) {
	for name, fn := range map[string]any{
		activities.NameResolveDrive: h.ResolveDrive,
		activities.NameInspect:      h.Inspect,
		activities.NameLock:         h.Lock,
		activities.NameUnlock:       h.Unlock,
		activities.NameEject:        h.Eject,
		activities.NameReleaseFdset: h.ReleaseFdset,
		activities.NameDetachVBD:    h.DetachVBD,
		activities.NameAttachVBD:    h.AttachVBD,
		activities.NameWaitFdset:    h.WaitFdset,
		activities.NameAddFD:        h.AddFD,
		activities.NameChangeMedium: h.ChangeMedium,
		activities.NameRecord:       h.Record,
		activities.NameVerify:       h.Verify,
		activities.NameInventory:    h.Inventory,
	} {
		r.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
}

// enter records a call and runs its hook.
func (h *Host) enter(ctx context.Context, name string, in any) (activities.Meta, error) {
	m := activities.NewMeta(ctx)
	h.mu.Lock()
	h.calls = append(h.calls, Call{Name: name, In: in, Attempt: m.Attempt})
	n := 0
	for _, c := range h.calls {
		if c.Name == name {
			n++
		}
	}
	f := h.hooks[name]
	h.mu.Unlock()
	if f != nil {
		if err := f(ctx, n, in); err != nil {
			return activities.Meta{}, err
		}
	}
	return m, nil
}

func (h *Host) name() string {
	if h.Name == "" {
		return "h1"
	}
	return h.Name
}

func (h *Host) kind() activities.Kind {
	if h.Kind == "" {
		return activities.KindStubdom
	}
	return h.Kind
}

// oldMedium is the medium in the drive before any change ("" = empty).
func (h *Host) oldMedium() string {
	if h.EmptyDrive {
		return ""
	}
	return OldISO
}

// Params is libxl's vbd params for medium ("" = empty) on this host's kind of guest:
// the image or the empty-cdrom file for a stubdom, "aio:<medium>" or "" otherwise.
func (h *Host) Params(medium string) string {
	if h.kind() == activities.KindStubdom {
		if medium == "" {
			return EmptyCDROM
		}
		return medium
	}
	if medium == "" {
		return ""
	}
	return "aio:" + medium
}

// Drive is the guest's cdrom, as Inspect reports it.
func (h *Host) Drive() activities.Drive {
	d := activities.Drive{DomID: DomID, Name: Domain, Vdev: Vdev, DevID: DevID, Kind: h.kind(), BackendType: "qdisk"}
	if d.Kind == activities.KindStubdom {
		d.StubDomID, d.BackendType = StubDomID, "phy"
	}
	return d
}

// ResolveDrive knows the guest by its name or its domid, and refuses any other
// (ErrNoSuchDomain).
func (h *Host) ResolveDrive(ctx context.Context, in activities.ResolveDriveInput) (activities.ResolveDriveResult, error) {
	m, err := h.enter(ctx, activities.NameResolveDrive, in)
	if err != nil {
		return activities.ResolveDriveResult{}, err
	}
	if in.Domain != Domain && in.Domain != fmt.Sprint(DomID) {
		return activities.ResolveDriveResult{}, activities.NewError(ctx, activities.ErrNoSuchDomain, false, nil,
			"no guest named or numbered %q on host %s: xl list shows its guests", in.Domain, h.name())
	}
	return activities.ResolveDriveResult{Meta: m, DomID: DomID, Name: Domain, DevID: DevID, Kind: h.kind()}, nil
}

// Inspect finds OldISO in the drive (unless EmptyDrive) and refuses a medium outside ISORoot
// (ErrMediumOutsideRoots).
func (h *Host) Inspect(ctx context.Context, in activities.InspectInput) (activities.InspectResult, error) {
	m, err := h.enter(ctx, activities.NameInspect, in)
	if err != nil {
		return activities.InspectResult{}, err
	}
	if in.Medium != "" && !strings.HasPrefix(in.Medium, ISORoot+"/") {
		return activities.InspectResult{}, activities.NewError(ctx, activities.ErrMediumOutsideRoots, false, nil,
			"medium %s is outside the ISO roots of host %s (%s): copy it under a root, or start the worker with --iso-root", in.Medium, h.name(), ISORoot)
	}
	r := activities.InspectResult{
		Meta:        m,
		Drive:       h.Drive(),
		DMVersion:   "qemu_xen",
		QEMUVersion: "7.2.0",
		OldMedium:   h.oldMedium(),
		OldParams:   h.Params(h.oldMedium()),
		Medium:      in.Medium,
		NewParams:   h.Params(in.Medium),
		InPlace:     h.InPlace,
	}
	if in.Resume {
		r.Taken = h.Taken
	}
	if in.NoteOnly {
		if !h.NoteKept {
			return activities.InspectResult{Meta: m}, nil
		}
		r.FromNote = true
	}
	if in.Medium != "" {
		r.Format = in.Format
	}
	stubdom := r.Drive.Kind == activities.KindStubdom
	if stubdom {
		r.Fdsets = []int64{OldFdset}
	}
	if r.OldMedium != "" {
		// A stubdom's QEMU holds it through the stub-devid set; a dom0 QEMU through the set
		// libxl's insert added.
		r.OldFormat, r.QEMUFile = activities.FormatRaw, activities.FdsetFilename(1)
		if stubdom {
			r.QEMUFile = activities.FdsetFilename(OldFdset)
		}
	}
	return r, nil
}

// Lock takes LockPath.
func (h *Host) Lock(ctx context.Context, in activities.LockInput) (activities.LockResult, error) {
	m, err := h.enter(ctx, activities.NameLock, in)
	return activities.LockResult{Meta: m, Path: LockPath}, err
}

// Unlock lets go of a lock that was held.
func (h *Host) Unlock(ctx context.Context, in activities.UnlockInput) (activities.UnlockResult, error) {
	m, err := h.enter(ctx, activities.NameUnlock, in)
	return activities.UnlockResult{Meta: m, WasHeld: true}, err
}

// Eject succeeds.
func (h *Host) Eject(ctx context.Context, in activities.EjectInput) (activities.EjectResult, error) {
	m, err := h.enter(ctx, activities.NameEject, in)
	return activities.EjectResult{Meta: m}, err
}

// ReleaseFdset releases OldFdset.
func (h *Host) ReleaseFdset(ctx context.Context, in activities.ReleaseFdsetInput) (activities.ReleaseFdsetResult, error) {
	m, err := h.enter(ctx, activities.NameReleaseFdset, in)
	return activities.ReleaseFdsetResult{Meta: m, FdsetIDs: []int64{OldFdset}}, err
}

// DetachVBD removes the vbd that held the old medium.
func (h *Host) DetachVBD(ctx context.Context, in activities.DetachVBDInput) (activities.DetachVBDResult, error) {
	m, err := h.enter(ctx, activities.NameDetachVBD, in)
	return activities.DetachVBDResult{Meta: m, Params: h.Params(h.oldMedium())}, err
}

// AttachVBD succeeds.
func (h *Host) AttachVBD(ctx context.Context, in activities.AttachVBDInput) (activities.AttachVBDResult, error) {
	m, err := h.enter(ctx, activities.NameAttachVBD, in)
	return activities.AttachVBDResult{Meta: m}, err
}

// WaitFdset finds a new set after two polls: FirstWaitFdset, then the next id each call.
func (h *Host) WaitFdset(ctx context.Context, in activities.WaitFdsetInput) (activities.WaitFdsetResult, error) {
	m, err := h.enter(ctx, activities.NameWaitFdset, in)
	if err != nil {
		return activities.WaitFdsetResult{}, err
	}
	return activities.WaitFdsetResult{Meta: m, FdsetID: h.next(&h.waitFdsets, FirstWaitFdset), Polls: 2}, nil
}

// AddFD adds a new set: FirstAddFD, then the next id each call.
func (h *Host) AddFD(ctx context.Context, in activities.AddFDInput) (activities.AddFDResult, error) {
	m, err := h.enter(ctx, activities.NameAddFD, in)
	if err != nil {
		return activities.AddFDResult{}, err
	}
	return activities.AddFDResult{Meta: m, FdsetID: h.next(&h.addFDs, FirstAddFD)}, nil
}

// next returns the id of the next new set of a series that starts at first and has given
// *count sets so far.
func (h *Host) next(count *int64, first int64) int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	*count++
	return first + *count - 1
}

// ChangeMedium inserts the set it is given.
func (h *Host) ChangeMedium(ctx context.Context, in activities.ChangeMediumInput) (activities.ChangeMediumResult, error) {
	m, err := h.enter(ctx, activities.NameChangeMedium, in)
	return activities.ChangeMediumResult{Meta: m, Filename: activities.FdsetFilename(in.FdsetID)}, err
}

// Record changes libxl's records.
func (h *Host) Record(ctx context.Context, in activities.RecordInput) (activities.RecordResult, error) {
	m, err := h.enter(ctx, activities.NameRecord, in)
	return activities.RecordResult{Meta: m, Changed: true}, err
}

// Verify finds QEMU holding the file it is told to expect.
func (h *Host) Verify(ctx context.Context, in activities.VerifyInput) (activities.VerifyResult, error) {
	m, err := h.enter(ctx, activities.NameVerify, in)
	return activities.VerifyResult{Meta: m, File: in.Filename}, err
}

// FailWith is a hook that fails every call with a permanent error of type errType.
func FailWith(errType string) Hook {
	return func(ctx context.Context, n int, _ any) error {
		return activities.NewError(ctx, errType, false, nil, "injected %s (call %d)", errType, n)
	}
}

// FailCalls is a hook that fails calls 1 to n with an error of type errType, retryable or
// not, saying msg, and lets the later calls through.
func FailCalls(n int, errType string, retryable bool, msg string) Hook {
	return func(ctx context.Context, i int, _ any) error {
		if i <= n {
			return activities.NewError(ctx, errType, retryable, nil, "%s", msg)
		}
		return nil
	}
}

// Inventory lists the fixture's one drive (web1's hdc, holding OldISO unless EmptyDrive)
// and checks each medium as Inspect does: inside ISORoot or refused.
func (h *Host) Inventory(ctx context.Context, in activities.InventoryInput) (activities.InventoryResult, error) {
	m, err := h.enter(ctx, activities.NameInventory, in)
	if err != nil {
		return activities.InventoryResult{}, err
	}
	medium := OldISO
	if h.EmptyDrive {
		medium = ""
	}
	res := activities.InventoryResult{Meta: m, Host: h.name(), Drives: []activities.InventoryDrive{{
		DomID: DomID, Name: Domain, Vdev: Vdev, DevID: DevID, Kind: h.kind(),
		Medium: medium, Format: activities.FormatRaw, ConfigMedium: medium,
	}}}
	for _, spec := range in.Media {
		c := activities.MediumCheck{Medium: spec.Medium, Format: spec.Format, Kind: h.kind(), Resolved: spec.Medium}
		if !strings.HasPrefix(spec.Medium, ISORoot+"/") {
			c.Resolved, c.ErrorType = "", activities.ErrMediumOutsideRoots
			c.Error = fmt.Sprintf("medium %s is outside the ISO roots of host %s (%s)", spec.Medium, h.name(), ISORoot)
		}
		res.Media = append(res.Media, c)
	}
	return res, nil
}

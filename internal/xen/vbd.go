package xen

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/cdswap/cdswap/internal/xs"
)

// Errors of the vbd operations; test with errors.Is.
var (
	// ErrDeviceExists is libxl's ERROR_DEVICE_EXISTS: the vbd's /libxl copy is still
	// there, typically left by a half-done removal; DestroyVBD clears it.
	ErrDeviceExists = errors.New("device already exists in xenstore")
	// ErrNoSuchVBD means the domain has no such vbd in /libxl (libxl's "Virtual device
	// not found").
	ErrNoSuchVBD = errors.New("virtual device not found")
	// ErrBackendGone means the backend directory (its state node) is absent: RemoveVBD
	// returns it for a backend already removed, in which case the caller skips waiting
	// for Closed and goes on to DestroyVBD.
	ErrBackendGone = errors.New("vbd backend is gone")
	// ErrHotplug means the hotplug script reported failure in hotplug-status.
	ErrHotplug = errors.New("hotplug script failed")
)

// Backend types, the values of a vbd's "type" node.
const (
	TypePhy   = "phy"   // a block device or file given to blkback by the block script
	TypeQdisk = "qdisk" // an image opened by QEMU's xen-block backend
)

// VBD is one virtual block device as libxl lays it out in xenstore.
type VBD struct {
	BackendDom  uint32 // the domain running the backend, 0 for dom0
	FrontendDom uint32 // the guest, or the stubdom for a stubdom's PV disk
	DevID       DevID  // from Vdev; AddVBD fills it in when 0
	Vdev        string // the name given in the domain config, e.g. "hdc" (the "dev" node)
	Type        string // TypePhy or TypeQdisk
	// Params is the "params" value as stored: a path for phy; "<fmt>:<path>" for qdisk
	// ("aio:/isos/x.iso"). Path strips the prefix.
	Params     string
	Mode       string // "r" or "w"; AddVBD defaults to "r"
	DeviceType string // "cdrom" or "disk"; AddVBD defaults to "cdrom"
	// Script is the hotplug script of a phy vbd; AddVBD defaults to BlockScript. qdisk has
	// none.
	Script string
}

// Kind is the backend kind in xenstore paths: KindVBD for phy, KindQdisk for qdisk, ""
// for any other type.
func (v VBD) Kind() string {
	switch v.Type {
	case TypePhy:
		return KindVBD
	case TypeQdisk:
		return KindQdisk
	}
	return ""
}

// BackendPath is the vbd's backend directory.
func (v VBD) BackendPath() string { return BackendPath(v.BackendDom, v.FrontendDom, v.Kind(), v.DevID) }

// FrontendPath is the vbd's frontend directory.
func (v VBD) FrontendPath() string { return FrontendPath(v.FrontendDom, v.DevID) }

// LibxlPath is the vbd's trusted copy under /libxl.
func (v VBD) LibxlPath() string { return LibxlPath(v.FrontendDom, v.DevID) }

// Path is the image path in Params: for phy, Params itself; for other types, what follows
// the first ':' (libxl__disk_from_xenstore strips "<fmt>:" likewise), or Params when it
// has no ':'.
func (v VBD) Path() string {
	if v.Type == TypePhy {
		return v.Params
	}
	if _, p, ok := strings.Cut(v.Params, ":"); ok {
		return p
	}
	return v.Params
}

// normalize checks v and fills in the defaults AddVBD documents.
func (v VBD) normalize() (VBD, error) {
	id, err := ParseVdev(v.Vdev)
	if err != nil {
		return v, err
	}
	if v.DevID != 0 && v.DevID != id {
		return v, fmt.Errorf("vbd devid %d does not match vdev %q (devid %d)", v.DevID, v.Vdev, id)
	}
	v.DevID = id
	switch v.Type {
	case TypePhy:
		if v.Script == "" {
			v.Script = BlockScript
		}
	case TypeQdisk:
		if v.Script != "" {
			return v, fmt.Errorf("vbd %s: a qdisk backend runs no hotplug script, got script %q", v.Vdev, v.Script)
		}
	default:
		return v, fmt.Errorf("vbd %s: backend type %q, want %q or %q", v.Vdev, v.Type, TypePhy, TypeQdisk)
	}
	if v.Mode == "" {
		v.Mode = "r"
	}
	if v.Mode != "r" && v.Mode != "w" {
		return v, fmt.Errorf("vbd %s: mode %q, want \"r\" or \"w\"", v.Vdev, v.Mode)
	}
	if v.DeviceType == "" {
		v.DeviceType = "cdrom"
	}
	if v.DeviceType != "cdrom" && v.DeviceType != "disk" {
		return v, fmt.Errorf("vbd %s: device type %q, want \"cdrom\" or \"disk\"", v.Vdev, v.DeviceType)
	}
	return v, nil
}

// kv is one node under a device directory, in the order libxl writes them.
type kv struct{ k, v string }

func boolNode(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// backendKeys are the backend entries of device_disk_add (libxl_disk.c), after the
// "frontend" node libxl__device_generic_add writes first.
func (v VBD) backendKeys() []kv {
	var ks []kv
	ks = append(ks, kv{"params", v.Params})
	if v.Type == TypePhy {
		ks = append(ks, kv{"script", v.Script})
	}
	return append(ks,
		kv{"frontend-id", strconv.FormatUint(uint64(v.FrontendDom), 10)},
		kv{"online", "1"},
		kv{"removable", boolNode(v.DeviceType == "cdrom")}, // xl: a cdrom is removable
		kv{"bootable", "1"},
		kv{"state", strconv.Itoa(int(StateInitialising))},
		kv{"dev", v.Vdev},
		kv{"type", v.Type},
		kv{"mode", v.Mode},
		kv{"device-type", v.DeviceType},
		kv{"discard-enable", boolNode(v.Mode == "w")}, // libxl's default: !!readwrite
		kv{"specification", "xen"},
	)
}

// frontendKeys are the frontend entries of device_disk_add, after the "backend" node.
func (v VBD) frontendKeys() []kv {
	return []kv{
		{"backend-id", strconv.FormatUint(uint64(v.BackendDom), 10)},
		{"state", strconv.Itoa(int(StateInitialising))},
		{"virtual-device", v.DevID.String()},
		{"device-type", v.DeviceType},
		{"trusted", "1"}, // libxl's default unless LIBXL_DISK_BACKEND_UNTRUSTED is set
	}
}

// rmIfAny removes p, which may be absent.
func rmIfAny(ctx context.Context, ops xs.Ops, p string) error {
	if err := ops.Rm(ctx, p); err != nil && !errors.Is(err, xs.ErrNotFound) {
		return fmt.Errorf("rm %s: %w", p, err)
	}
	return nil
}

func write(ctx context.Context, ops xs.Ops, p, val string) error {
	if err := ops.Write(ctx, p, val); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

func setPerms(ctx context.Context, ops xs.Ops, p string, perms []xs.Perm) error {
	if err := ops.SetPerms(ctx, p, perms); err != nil {
		return fmt.Errorf("set permissions of %s: %w", p, err)
	}
	return nil
}

// AddVBD creates a vbd in xenstore in one transaction, as libxl's device_disk_add and
// libxl__device_generic_add do, with every device state at Initialising (1):
//
//   - the backend directory, owned by the backend domain and readable by the frontend
//     (n<b>, r<f>): frontend, then params, script (phy only), frontend-id, online=1,
//     removable (1 for a cdrom), bootable=1, state=1, dev, type, mode, device-type,
//     discard-enable (1 only for mode "w"), specification=xen;
//   - the frontend directory and each of its keys, owned by the frontend and readable by
//     the backend (n<f>, r<b>): backend, backend-id, state=1, virtual-device=<devid>,
//     device-type, trusted=1;
//   - the /libxl copy: frontend, backend, and a copy of the backend keys.
//
// It refuses with ErrDeviceExists when the /libxl copy exists. Defaults: Mode "r",
// DeviceType "cdrom", Script BlockScript for phy, DevID from Vdev. It does not wait for
// the backend: see WaitBackendState and WaitHotplug.
func AddVBD(ctx context.Context, c *xs.Client, v VBD) error {
	v, err := v.normalize()
	if err != nil {
		return fmt.Errorf("add vbd: %w", err)
	}
	be, fe, lp := v.BackendPath(), v.FrontendPath(), v.LibxlPath()
	fePerms := []xs.Perm{{DomID: v.FrontendDom, Access: xs.AccessNone}, {DomID: v.BackendDom, Access: xs.AccessRead}}
	bePerms := []xs.Perm{{DomID: v.BackendDom, Access: xs.AccessNone}, {DomID: v.FrontendDom, Access: xs.AccessRead}}
	back, front := v.backendKeys(), v.frontendKeys()

	err = c.Update(ctx, func(tx *xs.Tx) error {
		exists, err := tx.Exists(ctx, lp)
		if err != nil {
			return fmt.Errorf("read %s: %w", lp, err)
		}
		if exists {
			return fmt.Errorf("%s exists: %w", lp, ErrDeviceExists)
		}
		if err := write(ctx, tx, lp+"/frontend", fe); err != nil {
			return err
		}
		if err := write(ctx, tx, lp+"/backend", be); err != nil {
			return err
		}

		if err := rmIfAny(ctx, tx, fe); err != nil {
			return err
		}
		if err := tx.Mkdir(ctx, fe); err != nil {
			return fmt.Errorf("mkdir %s: %w", fe, err)
		}
		if err := setPerms(ctx, tx, fe, fePerms); err != nil {
			return err
		}
		if err := write(ctx, tx, fe+"/backend", be); err != nil {
			return err
		}
		for _, e := range front {
			if err := write(ctx, tx, fe+"/"+e.k, e.v); err != nil {
				return err
			}
			if err := setPerms(ctx, tx, fe+"/"+e.k, fePerms); err != nil {
				return err
			}
		}

		if err := rmIfAny(ctx, tx, be); err != nil {
			return err
		}
		if err := tx.Mkdir(ctx, be); err != nil {
			return fmt.Errorf("mkdir %s: %w", be, err)
		}
		if err := setPerms(ctx, tx, be, bePerms); err != nil {
			return err
		}
		if err := write(ctx, tx, be+"/frontend", fe); err != nil {
			return err
		}
		for _, e := range back {
			if err := write(ctx, tx, be+"/"+e.k, e.v); err != nil {
				return err
			}
		}
		// libxl keeps a copy of the backend keys it does not have to trust the backend for.
		for _, e := range back {
			if err := write(ctx, tx, lp+"/"+e.k, e.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add vbd %s (devid %d) of domain %d: %w", v.Vdev, v.DevID, v.FrontendDom, err)
	}
	return nil
}

// RemoveVBD asks the backend at backendPath to close, as step 1 of
// libxl__initiate_device_generic_remove: in one transaction (rerun on conflict) it writes
// online=0 and, unless the backend is already Closed (6), state=5 (Closing). When the
// backend has no state node it changes nothing and returns an error wrapping
// ErrBackendGone ("already removed"): skip WaitBackendState and call DestroyVBD.
func RemoveVBD(ctx context.Context, c *xs.Client, backendPath string) error {
	statePath := backendPath + "/state"
	var gone bool
	err := c.Update(ctx, func(tx *xs.Tx) error {
		gone = false
		s, err := tx.Read(ctx, statePath)
		if errors.Is(err, xs.ErrNotFound) {
			gone = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", statePath, err)
		}
		if err := write(ctx, tx, backendPath+"/online", "0"); err != nil {
			return err
		}
		// libxl compares atoi(state): anything unreadable counts as not Closed.
		if st, err := ParseXenbusState(s); err != nil || st != StateClosed {
			return write(ctx, tx, statePath, strconv.Itoa(int(StateClosing)))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove vbd %s: %w", backendPath, err)
	}
	if gone {
		return fmt.Errorf("remove vbd: %s is absent, backend already removed: %w", statePath, ErrBackendGone)
	}
	return nil
}

// watchCloseTimeout bounds the UNWATCH sent after a wait, which may run after ctx ended.
const watchCloseTimeout = 2 * time.Second

// waitWatch watches watchPath (a watch fires for changes at or below it) and calls poll at
// the start and after every event, until poll says done or fails, or ctx ends. poll also
// says what it saw, for the error of an ended ctx; it returns ctx's own error when a read
// failed because ctx ended.
func waitWatch(ctx context.Context, c *xs.Client, watchPath, what string, poll func() (done bool, seen string, err error)) error {
	w, err := c.Watch(ctx, watchPath, "")
	if err != nil {
		return fmt.Errorf("wait for %s: %w", what, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), watchCloseTimeout)
		defer cancel()
		_ = w.Close(cctx) // the answer is already decided; a failed UNWATCH only leaks a watch
	}()

	last := "nothing read yet"
	for {
		done, seen, err := poll()
		if seen != "" {
			last = seen
		}
		if cerr := ctx.Err(); err != nil && cerr != nil && errors.Is(err, cerr) {
			return fmt.Errorf("wait for %s: last seen %s: %w", what, last, cerr)
		}
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: last seen %s: %w", what, last, ctx.Err())
		case _, ok := <-w.Events():
			if !ok {
				return fmt.Errorf("wait for %s: last seen %s: watch ended: %w", what, last, w.Err())
			}
		}
	}
}

// readWaited reads p for a wait: found false for an absent node, and ctx's own error when
// the read failed because ctx ended.
func readWaited(ctx context.Context, c *xs.Client, p string) (v string, found bool, err error) {
	v, err = c.Read(ctx, p)
	switch {
	case err == nil:
		return v, true, nil
	case errors.Is(err, xs.ErrNotFound):
		return "", false, nil
	case ctx.Err() != nil:
		return "", false, ctx.Err()
	}
	return "", false, fmt.Errorf("read %s: %w", p, err)
}

// waitNode waits on the single node p: check gets its value (found false when absent) at
// the start and after every event.
func waitNode(ctx context.Context, c *xs.Client, p, what string, check func(v string, found bool) (bool, error)) error {
	return waitWatch(ctx, c, p, what, func() (bool, string, error) {
		v, found, err := readWaited(ctx, c, p)
		if err != nil {
			return false, "", err
		}
		seen := p + " absent"
		if found {
			seen = fmt.Sprintf("%s = %q", p, v)
		}
		done, err := check(v, found)
		return done, seen, err
	})
}

// WaitBackendState waits until the backend's state node reads want, as
// libxl__ev_devstate_wait does: it sets an xs watch on <backendPath>/state and reads the
// node again on every event (events may be spurious or coalesced). A state other than
// want, or a value that is not a number, keeps it waiting; an absent node fails with
// ErrBackendGone. When ctx ends it returns ctx's error with the last state seen. Bound
// the wait with ctx, as libxl does with LIBXL_INIT_TIMEOUT and LIBXL_DESTROY_TIMEOUT
// (10 s each).
func WaitBackendState(ctx context.Context, c *xs.Client, backendPath string, want XenbusState) error {
	p := backendPath + "/state"
	what := fmt.Sprintf("%s to be %d (%s)", p, int(want), want)
	return waitNode(ctx, c, p, what, func(v string, found bool) (bool, error) {
		if !found {
			return false, fmt.Errorf("%s is absent: %w", p, ErrBackendGone)
		}
		st, err := ParseXenbusState(v)
		return err == nil && st == want, nil
	})
}

// HotplugError is the failure a hotplug script reports in the backend directory
// (tools/hotplug/Linux/xen-hotplug-common.sh): hotplug-status "error" or "busy", and the
// script's hotplug-error text. It matches ErrHotplug.
type HotplugError struct {
	// Status is hotplug-status: "error" or "busy".
	Status string
	// Text is hotplug-error, "" when the script wrote none.
	Text string
}

func (e *HotplugError) Error() string {
	return fmt.Sprintf("hotplug-status %q: %s: %v", e.Status, e.Reason(), ErrHotplug)
}

// Reason is Text, or "no hotplug-error text" when there is none.
func (e *HotplugError) Reason() string {
	if e.Text == "" {
		return "no hotplug-error text"
	}
	return e.Text
}

// Is makes errors.Is(err, ErrHotplug) true.
func (e *HotplugError) Is(target error) bool { return target == ErrHotplug }

// hotplugFailure returns a *HotplugError when status, the hotplug-status of the backend at
// backendPath, reports a failure, and nil otherwise.
func hotplugFailure(ctx context.Context, c *xs.Client, backendPath, status string) error {
	if status != "error" && status != "busy" {
		return nil
	}
	text, err := ReadOptional(ctx, c, backendPath+"/hotplug-error")
	if err != nil {
		text = ""
	}
	return &HotplugError{Status: status, Text: text}
}

// WaitHotplug waits until the hotplug script has run for the backend at backendPath:
// hotplug-status "connected" is success; "error" or "busy" fail with a *HotplugError
// (ErrHotplug). An absent node or another value keeps it waiting. Bound it with ctx (libxl
// gives the script LIBXL_HOTPLUG_TIMEOUT, 40 s).
func WaitHotplug(ctx context.Context, c *xs.Client, backendPath string) error {
	p := backendPath + "/hotplug-status"
	return waitNode(ctx, c, p, p+` to be "connected"`, func(v string, found bool) (bool, error) {
		if !found {
			return false, nil
		}
		if err := hotplugFailure(ctx, c, backendPath, v); err != nil {
			return false, err
		}
		return v == "connected", nil
	})
}

// WaitAttached waits, as libxl__wait_device_connection does for a vbd just added, until
// the backend at backendPath is ready: its state InitWait (2) or later, up to Connected
// (4), and its hotplug script done (hotplug-status "connected"). A failed script ("error"
// or "busy", whatever the state) fails at once with a *HotplugError (ErrHotplug); absent
// nodes keep it waiting. It watches the whole backend directory. When ctx ends it returns
// ctx's error with the last state and hotplug-status seen. Bound it with ctx.
func WaitAttached(ctx context.Context, c *xs.Client, backendPath string) error {
	what := backendPath + ` to be ready (state 2 to 4, hotplug-status "connected")`
	return waitWatch(ctx, c, backendPath, what, func() (bool, string, error) {
		st, _, err := readWaited(ctx, c, backendPath+"/state")
		if err != nil {
			return false, "", err
		}
		hs, _, err := readWaited(ctx, c, backendPath+"/hotplug-status")
		if err != nil {
			return false, "", err
		}
		seen := fmt.Sprintf("state %q, hotplug-status %q", st, hs)
		if err := hotplugFailure(ctx, c, backendPath, hs); err != nil {
			return false, seen, err
		}
		s, err := ParseXenbusState(st)
		return hs == "connected" && err == nil && s >= StateInitWait && s <= StateConnected, seen, nil
	})
}

// DestroyVBD removes what is left of a vbd, as libxl__device_destroy does in the toolstack
// domain: one transaction (rerun on conflict) that removes the frontend, /libxl and
// backend directories and then each parent left empty. Absent directories are no error,
// so it can be repeated. Call it after the backend reached Closed (or is gone). It needs
// BackendDom, FrontendDom, Type and DevID (or Vdev, when DevID is 0).
func DestroyVBD(ctx context.Context, c *xs.Client, v VBD) error {
	if v.DevID == 0 && v.Vdev != "" {
		id, err := ParseVdev(v.Vdev)
		if err != nil {
			return fmt.Errorf("destroy vbd: %w", err)
		}
		v.DevID = id
	}
	if v.Kind() == "" {
		return fmt.Errorf("destroy vbd %d of domain %d: backend type %q, want %q or %q", v.DevID, v.FrontendDom, v.Type, TypePhy, TypeQdisk)
	}
	paths := []string{v.FrontendPath(), v.LibxlPath(), v.BackendPath()}
	err := c.Update(ctx, func(tx *xs.Tx) error {
		for _, p := range paths {
			if err := cleanupPath(ctx, tx, p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("destroy vbd %d of domain %d: %w", v.DevID, v.FrontendDom, err)
	}
	return nil
}

// cleanupPath is libxl__xs_path_cleanup: remove p, then each parent that is left empty.
func cleanupPath(ctx context.Context, tx *xs.Tx, p string) error {
	if err := tx.Rm(ctx, p); err != nil {
		if errors.Is(err, xs.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("rm %s: %w", p, err)
	}
	for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
		kids, err := tx.Directory(ctx, dir)
		if errors.Is(err, xs.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", dir, err)
		}
		if len(kids) != 0 {
			return nil
		}
		if err := tx.Rm(ctx, dir); err != nil && !errors.Is(err, xs.ErrNotFound) {
			return fmt.Errorf("rm %s: %w", dir, err)
		}
	}
	return nil
}

// ReadVBD reads vbd devid of frontendDom from its trusted /libxl copy, as
// libxl__disk_from_xenstore does: backend (required; BackendDom comes from it), params
// (optional), type, dev, mode and device-type (required), script (optional). A vbd without
// a /libxl copy fails with ErrNoSuchVBD. ops may be a *xs.Tx for a consistent read.
func ReadVBD(ctx context.Context, ops xs.Ops, frontendDom uint32, devid DevID) (VBD, error) {
	v := VBD{FrontendDom: frontendDom, DevID: devid}
	lp := LibxlPath(frontendDom, devid)
	fail := func(err error) (VBD, error) {
		return VBD{}, fmt.Errorf("read vbd %d of domain %d: %w", devid, frontendDom, err)
	}
	backend, err := ops.Read(ctx, lp+"/backend")
	if errors.Is(err, xs.ErrNotFound) {
		return fail(fmt.Errorf("%s/backend is absent: %w", lp, ErrNoSuchVBD))
	}
	if err != nil {
		return fail(fmt.Errorf("read %s/backend: %w", lp, err))
	}
	bdom, kind, fdom, bdev, err := parseBackendPath(backend)
	if err != nil {
		return fail(fmt.Errorf("%s/backend: %w", lp, err))
	}
	if fdom != frontendDom || bdev != devid {
		return fail(fmt.Errorf("%s/backend is %s, which belongs to another device", lp, backend))
	}
	v.BackendDom = bdom

	if v.Params, err = ReadOptional(ctx, ops, lp+"/params"); err != nil {
		return fail(err)
	}
	if v.Script, err = ReadOptional(ctx, ops, lp+"/script"); err != nil {
		return fail(err)
	}
	for _, f := range []struct {
		key string
		dst *string
	}{{"type", &v.Type}, {"dev", &v.Vdev}, {"mode", &v.Mode}, {"device-type", &v.DeviceType}} {
		val, err := ops.Read(ctx, lp+"/"+f.key)
		if errors.Is(err, xs.ErrNotFound) {
			return fail(fmt.Errorf("missing xenstore node %s/%s", lp, f.key))
		}
		if err != nil {
			return fail(fmt.Errorf("read %s/%s: %w", lp, f.key, err))
		}
		*f.dst = val
	}
	if k := v.Kind(); k != "" && k != kind {
		return fail(fmt.Errorf("type %q does not match backend kind %q in %s", v.Type, kind, backend))
	}
	return v, nil
}

// parseBackendPath splits /local/domain/<b>/backend/<kind>/<f>/<devid>.
func parseBackendPath(p string) (backendDom uint32, kind string, frontendDom uint32, devid DevID, err error) {
	parts := strings.Split(p, "/")
	// "", "local", "domain", b, "backend", kind, f, devid
	if len(parts) != 8 || parts[0] != "" || parts[1] != "local" || parts[2] != "domain" || parts[4] != "backend" || parts[5] == "" {
		return 0, "", 0, 0, fmt.Errorf("backend path %q is not /local/domain/<domid>/backend/<kind>/<domid>/<devid>", p)
	}
	b, err1 := strconv.ParseUint(parts[3], 10, 32)
	f, err2 := strconv.ParseUint(parts[6], 10, 32)
	d, err3 := strconv.ParseUint(parts[7], 10, 31)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, "", 0, 0, fmt.Errorf("backend path %q has a bad number", p)
	}
	return uint32(b), parts[5], uint32(f), DevID(d), nil
}

// ListVBDs reads every vbd of frontendDom from /libxl/<frontendDom>/device/vbd, in the
// order xenstore lists them, as libxl__device_list does. Entries removed while it reads
// are skipped.
func ListVBDs(ctx context.Context, ops xs.Ops, frontendDom uint32) ([]VBD, error) {
	dir := fmt.Sprintf("/libxl/%d/device/vbd", frontendDom)
	names, err := ops.Directory(ctx, dir)
	if errors.Is(err, xs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var vbds []VBD
	for _, n := range names {
		id, err := strconv.ParseUint(n, 10, 31)
		if err != nil {
			continue
		}
		v, err := ReadVBD(ctx, ops, frontendDom, DevID(id))
		if errors.Is(err, ErrNoSuchVBD) {
			continue
		}
		if err != nil {
			return nil, err
		}
		vbds = append(vbds, v)
	}
	return vbds, nil
}

// FindCDROM finds the cdrom vbd of domid whose "dev" is vdev, compared as strings, as
// libxl_cdrom_insert does ("hdc" does not match "xvdc"). When there is none it fails with a
// *NoCDROMError (ErrNoSuchVBD), which says whether vdev names a disk instead and which
// cdroms the domain has. For a guest with a stubdom, look in the stubdom's vbds.
func FindCDROM(ctx context.Context, ops xs.Ops, domid uint32, vdev string) (VBD, error) {
	vbds, err := ListVBDs(ctx, ops, domid)
	if err != nil {
		return VBD{}, err
	}
	nf := &NoCDROMError{DomID: domid, Vdev: vdev}
	for _, v := range vbds {
		if v.Vdev == vdev {
			if v.DeviceType == "cdrom" {
				return v, nil
			}
			nf.DeviceType = v.DeviceType
		} else if v.DeviceType == "cdrom" {
			nf.CDROMs = append(nf.CDROMs, v.Vdev)
		}
	}
	return VBD{}, nf
}

// NoCDROMError is FindCDROM's answer for a domain without a cdrom vbd named Vdev. It
// matches ErrNoSuchVBD.
type NoCDROMError struct {
	// DomID is the domain looked in.
	DomID uint32
	// Vdev is the name looked for.
	Vdev string
	// DeviceType is the device type of the domain's vbd named Vdev that is not a cdrom
	// ("disk"), or "" when no vbd has that name.
	DeviceType string
	// CDROMs are the names ("dev") of the domain's cdrom vbds, in ListVBDs order.
	CDROMs []string
}

func (e *NoCDROMError) Error() string {
	what := fmt.Sprintf("find cdrom %q of domain %d", e.Vdev, e.DomID)
	if e.DeviceType != "" {
		what += fmt.Sprintf(": it is a %s vbd, not a cdrom", e.DeviceType)
	}
	if len(e.CDROMs) == 0 {
		return fmt.Sprintf("%s: the domain has no cdrom vbd: %v", what, ErrNoSuchVBD)
	}
	return fmt.Sprintf("%s (cdroms: %s): %v", what, strings.Join(e.CDROMs, ", "), ErrNoSuchVBD)
}

// Is makes errors.Is(err, ErrNoSuchVBD) true.
func (e *NoCDROMError) Is(target error) bool { return target == ErrNoSuchVBD }

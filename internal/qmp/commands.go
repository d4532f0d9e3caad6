package qmp

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
)

// EventDeviceTrayMoved is the event QEMU emits when a tray opens or closes (qapi/block.json).
const EventDeviceTrayMoved = "DEVICE_TRAY_MOVED"

// TrayMoved is the data of a DEVICE_TRAY_MOVED event.
type TrayMoved struct {
	// Device is the block backend name; QEMU may send "" for a device without one.
	Device string `json:"device"`
	// ID is the qdev id (since QEMU 2.8), e.g. "ide-5632".
	ID string `json:"id"`
	// TrayOpen is the new state of the tray.
	TrayOpen bool `json:"tray-open"`
}

// DecodeData decodes the event's data into v.
func (e Event) DecodeData(v any) error {
	if e.Data == nil {
		return fmt.Errorf("event %s has no data", e.Name)
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("decode %s data: %w", e.Name, err)
	}
	return nil
}

// QueryVersion runs query-version.
func (c *Client) QueryVersion(ctx context.Context) (Version, error) {
	var r struct {
		QEMU struct {
			Major int `json:"major"`
			Minor int `json:"minor"`
			Micro int `json:"micro"`
		} `json:"qemu"`
		Package string `json:"package"`
	}
	if err := c.Execute(ctx, "query-version", nil, &r); err != nil {
		return Version{}, err
	}
	return Version{Major: r.QEMU.Major, Minor: r.QEMU.Minor, Micro: r.QEMU.Micro, Package: r.Package}, nil
}

// StatusInfo is the reply of query-status (qapi/run-state.json).
type StatusInfo struct {
	// Running is true while the guest's CPUs run.
	Running bool `json:"running"`
	// Status is the RunState, e.g. "running", "paused", "prelaunch".
	Status string `json:"status"`
}

// QueryStatus runs query-status.
func (c *Client) QueryStatus(ctx context.Context) (StatusInfo, error) {
	var s StatusInfo
	if err := c.Execute(ctx, "query-status", nil, &s); err != nil {
		return StatusInfo{}, err
	}
	return s, nil
}

// BlockInfo is one entry of query-block (qapi/block-core.json BlockInfo), reduced to what a
// medium change looks at.
type BlockInfo struct {
	// Device is the block backend name; libxl names it "ide-<devid>".
	Device string `json:"device"`
	// QDev is the qdev id or path of the attached device, e.g. "ide-5632".
	QDev string `json:"qdev,omitempty"`
	// Type is "unknown" in current QEMU (the field is deprecated).
	Type string `json:"type"`
	// Removable is true for a drive with removable media.
	Removable bool `json:"removable"`
	// Locked is true while the guest has locked the tray.
	Locked bool `json:"locked"`
	// TrayOpen is set only for a drive with a tray.
	TrayOpen *bool `json:"tray_open,omitempty"`
	// Inserted describes the medium; nil when the drive is empty.
	Inserted *BlockInserted `json:"inserted,omitempty"`
	// IOStatus is "ok", "failed" or "nospace"; empty when not reported.
	IOStatus string `json:"io-status,omitempty"`
}

// BlockInserted is the medium of a drive (qapi/block-core.json BlockDeviceInfo), reduced.
type BlockInserted struct {
	// File is the filename the medium was opened with, e.g. "/dev/fdset/3".
	File string `json:"file"`
	// Drv is the format driver, e.g. "raw" or "host_device".
	Drv string `json:"drv"`
	// RO is true for a read-only medium.
	RO bool `json:"ro"`
	// NodeName is the top block node, e.g. "#block153".
	NodeName string `json:"node-name"`
}

// QueryBlock runs query-block.
func (c *Client) QueryBlock(ctx context.Context) ([]BlockInfo, error) {
	var b []BlockInfo
	if err := c.Execute(ctx, "query-block", nil, &b); err != nil {
		return nil, err
	}
	return b, nil
}

// deviceKey is the argument that names a drive: "id" (the qdev id) since QEMU 2.8, "device"
// (the backend name, deprecated since) before. libxl gives both the same name, ide-<devid>.
func (c *Client) deviceKey() string {
	if c.version.AtLeast(2, 8, 0) {
		return "id"
	}
	return "device"
}

// Eject runs eject for the drive id. Ejecting an empty drive succeeds; a drive the guest has
// locked fails with GenericError unless force is set. An unknown id fails with an error
// matching ErrDeviceNotFound.
func (c *Client) Eject(ctx context.Context, id string, force bool) error {
	args := map[string]any{c.deviceKey(): id}
	if force {
		args["force"] = true
	}
	return c.Execute(ctx, "eject", args, nil)
}

// ChangeMediumArgs are the arguments of blockdev-change-medium (qapi/block.json).
type ChangeMediumArgs struct {
	// ID is the drive, e.g. "ide-5632"; sent as "id" or "device" like Eject.
	ID string
	// Filename is the new medium, e.g. "/dev/fdset/3".
	Filename string
	// Format is the format driver ("raw", "host_device", ...). "" omits it and QEMU probes the
	// format, which a guest-writable image must never get (XSA-258): always set it.
	Format string
	// ReadOnlyMode is "retain", "read-only" or "read-write"; "" omits it (QEMU: retain).
	ReadOnlyMode string
	// Force changes the medium even if the guest locked the tray. QEMU >= 7.1 only.
	Force bool
}

// BlockdevChangeMedium runs blockdev-change-medium, which opens the tray, swaps the medium and
// closes the tray. Force on a QEMU older than 7.1 is refused here, since that QEMU would
// refuse the unknown argument.
func (c *Client) BlockdevChangeMedium(ctx context.Context, a ChangeMediumArgs) error {
	args := map[string]any{c.deviceKey(): a.ID, "filename": a.Filename}
	if a.Format != "" {
		args["format"] = a.Format
	}
	if a.ReadOnlyMode != "" {
		args["read-only-mode"] = a.ReadOnlyMode
	}
	if a.Force {
		if !c.version.AtLeast(7, 1, 0) {
			return fmt.Errorf("qmp blockdev-change-medium: force needs QEMU 7.1 or newer, this is %s; eject with force first", c.version)
		}
		args["force"] = true
	}
	return c.Execute(ctx, "blockdev-change-medium", args, nil)
}

// AddFDInfo is the reply of add-fd (qapi/misc.json AddfdInfo).
type AddFDInfo struct {
	// FdsetID is the set the descriptor went into.
	FdsetID int64 `json:"fdset-id"`
	// FD is the descriptor's number inside QEMU.
	FD int64 `json:"fd"`
}

// AddFD runs add-fd, passing f's descriptor. A nil fdsetID lets QEMU pick the first free
// set; opaque ("" omits it) is a free-form tag shown by query-fdsets. When QEMU opens
// /dev/fdset/N it picks a descriptor of the set whose access mode matches, so a read-only
// CD-ROM needs f opened O_RDONLY.
func (c *Client) AddFD(ctx context.Context, f *os.File, fdsetID *int64, opaque string) (AddFDInfo, error) {
	args := map[string]any{}
	if fdsetID != nil {
		args["fdset-id"] = *fdsetID
	}
	if opaque != "" {
		args["opaque"] = opaque
	}
	var info AddFDInfo
	if err := c.ExecuteWithFile(ctx, "add-fd", args, f, &info); err != nil {
		return AddFDInfo{}, err
	}
	return info, nil
}

// RemoveFD runs remove-fd for one descriptor of a set, or for all of them when fd is nil.
// QEMU closes a descriptor only while the VM runs and nothing uses it, so the set may stay
// visible in query-fdsets with no descriptors listed.
func (c *Client) RemoveFD(ctx context.Context, fdsetID int64, fd *int64) error {
	args := map[string]any{"fdset-id": fdsetID}
	if fd != nil {
		args["fd"] = *fd
	}
	return c.Execute(ctx, "remove-fd", args, nil)
}

// FdsetInfo is one entry of query-fdsets (qapi/misc.json FdsetInfo).
type FdsetInfo struct {
	// FdsetID is the set's id.
	FdsetID int64 `json:"fdset-id"`
	// FDs are the descriptors not yet removed.
	FDs []FdsetFD `json:"fds"`
}

// FdsetFD is one descriptor of a set (qapi/misc.json FdsetFdInfo).
type FdsetFD struct {
	// FD is the descriptor's number inside QEMU.
	FD int64 `json:"fd"`
	// Opaque is the tag given to add-fd; "" when there was none.
	Opaque string `json:"opaque,omitempty"`
}

// QueryFdsets runs query-fdsets.
func (c *Client) QueryFdsets(ctx context.Context) ([]FdsetInfo, error) {
	var s []FdsetInfo
	if err := c.Execute(ctx, "query-fdsets", nil, &s); err != nil {
		return nil, err
	}
	return s, nil
}

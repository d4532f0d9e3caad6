package xen

import (
	"fmt"
	"path/filepath"
)

// Directories libxl is built with on Debian and upstream defaults (XEN_RUN_DIR,
// XEN_LIB_DIR, XEN_SCRIPT_DIR in config/Paths.mk).
const (
	DefaultRunDir    = "/var/run/xen"
	DefaultLibDir    = "/var/lib/xen"
	DefaultScriptDir = "/etc/xen/scripts"
	// BlockScript is the hotplug script libxl names in a phy vbd's "script" node.
	BlockScript = DefaultScriptDir + "/block"
)

// Device model versions, the values of /libxl/<domid>/dm-version (libxl_types.idl). libxl
// reads an absent node as DMQemuXenTraditional.
const (
	DMQemuXen            = "qemu_xen"
	DMQemuXenTraditional = "qemu_xen_traditional"
)

// Backend kinds, the <kind> of /local/domain/<backend>/backend/<kind>/... .
const (
	KindVBD   = "vbd"   // blkback, for a phy disk
	KindQdisk = "qdisk" // QEMU's xen-block, for a qdisk disk
)

// Userdata kinds and names of libxl__userdata_path (libxl_dom.c), the file
// <libDir>/userdata-<kind>.<domid>.<uuid>.<name>.
const (
	UserdataData = "d" // a data file
	UserdataLock = "l" // a lock file (flock, see Lock)

	ConfigName            = "libxl-json"                // the domain's JSON configuration ("d")
	DeviceChangesLockName = "libxl-device-changes-lock" // libxl__ev_devlock, held for the whole cd-insert ("l")
	UserdataLockName      = "domain-userdata-lock"      // libxl__lock_domain_userdata, around JSON updates ("l")
	QMPSocketLockName     = "qmp-socket-lock"           // held while libxl talks QMP to the domain ("l")
)

// DomainPath is a domain's home in xenstore, /local/domain/<domid>.
func DomainPath(domid uint32) string { return fmt.Sprintf("/local/domain/%d", domid) }

// LibxlDomainPath is libxl's private, trusted tree for a domain, /libxl/<domid>.
func LibxlDomainPath(domid uint32) string { return fmt.Sprintf("/libxl/%d", domid) }

// NamePath is /local/domain/<domid>/name.
func NamePath(domid uint32) string { return DomainPath(domid) + "/name" }

// VMPath is /local/domain/<domid>/vm, whose value is the domain's /vm/<uuid> path.
func VMPath(domid uint32) string { return DomainPath(domid) + "/vm" }

// BackendPath is /local/domain/<backendDom>/backend/<kind>/<frontendDom>/<devid>.
func BackendPath(backendDom, frontendDom uint32, kind string, devid DevID) string {
	return fmt.Sprintf("/local/domain/%d/backend/%s/%d/%d", backendDom, kind, frontendDom, devid)
}

// FrontendPath is /local/domain/<frontendDom>/device/vbd/<devid>.
func FrontendPath(frontendDom uint32, devid DevID) string {
	return fmt.Sprintf("/local/domain/%d/device/vbd/%d", frontendDom, devid)
}

// LibxlPath is /libxl/<frontendDom>/device/vbd/<devid>: libxl's trusted copy of a vbd,
// which it lists to find a domain's disks and whose existence means "device exists".
func LibxlPath(frontendDom uint32, devid DevID) string {
	return fmt.Sprintf("/libxl/%d/device/vbd/%d", frontendDom, devid)
}

// DMVersionPath is /libxl/<domid>/dm-version (DMQemuXen or DMQemuXenTraditional).
func DMVersionPath(domid uint32) string { return LibxlDomainPath(domid) + "/dm-version" }

// DeviceModelDomIDPath is /local/domain/<domid>/image/device-model-domid: the stubdom's
// domid when the guest's QEMU runs in a stubdom; absent or "0" otherwise.
func DeviceModelDomIDPath(domid uint32) string {
	return DomainPath(domid) + "/image/device-model-domid"
}

// StubTargetPath is /local/domain/<stubdomid>/target, the guest a stubdom serves.
func StubTargetPath(stubdomid uint32) string { return DomainPath(stubdomid) + "/target" }

// DeviceModelStatePath is /local/domain/<dmDom>/device-model/<guest>/state, where a device
// model reports "running"; dmDom is the stubdom, or 0 for a QEMU in dom0.
func DeviceModelStatePath(dmDom, guest uint32) string {
	return fmt.Sprintf("/local/domain/%d/device-model/%d/state", dmDom, guest)
}

func orDefault(dir, def string) string {
	if dir == "" {
		return def
	}
	return dir
}

// QMPSocketPath is <runDir>/qmp-libxl-<domid>, libxl's QMP socket for the guest's device
// model (a vchan-socket-proxy when the device model is in a stubdom). An empty runDir
// means DefaultRunDir.
func QMPSocketPath(runDir string, domid uint32) string {
	return filepath.Join(orDefault(runDir, DefaultRunDir), fmt.Sprintf("qmp-libxl-%d", domid))
}

// EmptyCDROMPath is <runDir>/empty-cdrom.<domid>, the empty file libxl gives a stubdom's
// phy vbd while the guest's cdrom is ejected. An empty runDir means DefaultRunDir.
func EmptyCDROMPath(runDir string, domid uint32) string {
	return filepath.Join(orDefault(runDir, DefaultRunDir), fmt.Sprintf("empty-cdrom.%d", domid))
}

// UserdataPath is <libDir>/userdata-<kind>.<domid>.<uuid>.<name>, as libxl__userdata_path
// builds it. uuid is the lower-case 8-4-4-4-12 form. An empty libDir means DefaultLibDir.
func UserdataPath(libDir string, domid uint32, uuid, kind, name string) string {
	return filepath.Join(orDefault(libDir, DefaultLibDir),
		fmt.Sprintf("userdata-%s.%d.%s.%s", kind, domid, uuid, name))
}

// ConfigPath is the domain's JSON configuration, userdata-d.<domid>.<uuid>.libxl-json.
func ConfigPath(libDir string, domid uint32, uuid string) string {
	return UserdataPath(libDir, domid, uuid, UserdataData, ConfigName)
}

// DeviceChangesLockPath is userdata-l.<domid>.<uuid>.libxl-device-changes-lock, taken
// first by anything that changes the domain's devices.
func DeviceChangesLockPath(libDir string, domid uint32, uuid string) string {
	return UserdataPath(libDir, domid, uuid, UserdataLock, DeviceChangesLockName)
}

// UserdataLockPath is userdata-l.<domid>.<uuid>.domain-userdata-lock, taken (after the
// device-changes lock) around reading and writing the JSON configuration.
func UserdataLockPath(libDir string, domid uint32, uuid string) string {
	return UserdataPath(libDir, domid, uuid, UserdataLock, UserdataLockName)
}

// QMPSocketLockPath is userdata-l.<domid>.<uuid>.qmp-socket-lock, held by libxl while it
// talks to the domain's QMP socket (a stubdom's QMP vchan takes one client at a time).
func QMPSocketLockPath(libDir string, domid uint32, uuid string) string {
	return UserdataPath(libDir, domid, uuid, UserdataLock, QMPSocketLockName)
}

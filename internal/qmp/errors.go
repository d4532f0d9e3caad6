package qmp

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinels for the QMP error classes (QapiErrorClass in qapi/error.json, all since QEMU 1.2).
// A *Error of that class matches its sentinel with errors.Is.
var (
	ErrGenericError    = errors.New("qmp GenericError")
	ErrCommandNotFound = errors.New("qmp CommandNotFound")
	ErrDeviceNotActive = errors.New("qmp DeviceNotActive")
	ErrDeviceNotFound  = errors.New("qmp DeviceNotFound")
	ErrKVMMissingCap   = errors.New("qmp KVMMissingCap")
	classSentinels     = map[string]error{
		"GenericError":    ErrGenericError,
		"CommandNotFound": ErrCommandNotFound,
		"DeviceNotActive": ErrDeviceNotActive,
		"DeviceNotFound":  ErrDeviceNotFound,
		"KVMMissingCap":   ErrKVMMissingCap,
	}
)

// Client-side errors that never come from the wire.
var (
	// ErrClosed is wrapped by the error of every pending and later call once the connection is
	// gone; the error also wraps the cause (EOF, a read error, ErrProtocol, Close).
	ErrClosed = errors.New("qmp connection closed")
	// ErrProtocol means the server sent something this client cannot route: a line that is
	// not a JSON object, an unknown or missing reply id, or a greeting out of place. The
	// connection is closed after it.
	ErrProtocol = errors.New("qmp protocol error")
)

// Error is an error reply from the server: {"error": {"class": ..., "desc": ...}}.
type Error struct {
	// Class is the QapiErrorClass name, such as "DeviceNotFound".
	Class string
	// Desc is QEMU's human-readable description; it is for people, not for matching (the
	// Is* predicates below are the exceptions, each tied to QEMU's source).
	Desc string
}

// Error returns "Class: Desc".
func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Class, e.Desc)
}

// Is reports whether target is the sentinel of e's class, so that
// errors.Is(err, ErrDeviceNotFound) holds for a DeviceNotFound reply. A class this package
// does not know matches no sentinel.
func (e *Error) Is(target error) bool {
	s, ok := classSentinels[e.Class]
	return ok && s == target
}

// QEMU reports the refusals below only as GenericError, so nothing but the description tells
// them apart. These predicates are the one place that reads descriptions: each names the
// QEMU 7.2 function and message it matches, and the conformance test checks each against the
// real binary (true on its error, false on the others).

// IsTrayLocked reports whether err is QEMU's refusal to open a tray the guest keeps locked,
// from eject or blockdev-change-medium without force: do_open_tray in block/qapi-sysemu.c,
// "Device '%s' is locked and force was not specified, wait for tray to open and try again".
// QEMU has then asked the guest to open the tray.
func IsTrayLocked(err error) bool {
	return genericDesc(err, func(d string) bool {
		return strings.Contains(d, " is locked and force was not specified")
	})
}

// IsFdsetNotFound reports whether err is remove-fd's answer for an fd set, or a member of
// one, that does not exist (any more): qmp_remove_fd in monitor/misc.c,
// "File descriptor named 'fdset-id:%ld' not found" (", fd:%ld" inside the quotes when an
// fd was named).
func IsFdsetNotFound(err error) bool {
	return genericDesc(err, func(d string) bool {
		return strings.HasPrefix(d, "File descriptor named 'fdset-id:") && strings.HasSuffix(d, "' not found")
	})
}

// IsFdsetDupFailed reports whether err is QEMU's failure to open /dev/fdset/N because the set
// is gone or holds no fd of the access mode asked (blockdev-change-medium of an fdset):
// qemu_open_internal in util/osdep.c, "Could not dup FD for %s flags %x: <strerror>".
func IsFdsetDupFailed(err error) bool {
	return genericDesc(err, func(d string) bool { return strings.Contains(d, "Could not dup FD for ") })
}

// IsFormatRefused reports whether err is QEMU's refusal to open a medium as the format (block
// driver) asked, from blockdev-change-medium:
//   - the image is not of that format: qcow2_do_open in block/qcow2.c, "Image is not in
//     qcow2 format";
//   - the file is not what the protocol driver takes: raw_open_common and hdev_open in
//     block/file-posix.c, "'%s' driver requires '%s' to be a regular file" and "... to be
//     either a character or block device";
//   - no such driver: bdrv_fill_options in block.c, "Unknown driver '%s'".
func IsFormatRefused(err error) bool {
	return genericDesc(err, func(d string) bool {
		return strings.Contains(d, "is not in") && strings.Contains(d, "format") ||
			strings.Contains(d, "driver requires") ||
			strings.Contains(d, "Unknown driver")
	})
}

// genericDesc reports whether err is a GenericError reply whose description match accepts.
func genericDesc(err error, match func(desc string) bool) bool {
	var qe *Error
	return errors.As(err, &qe) && qe.Class == "GenericError" && match(qe.Desc)
}

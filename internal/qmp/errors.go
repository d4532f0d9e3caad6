package qmp

import (
	"errors"
	"fmt"
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
	// Desc is QEMU's human-readable description; it is for people, not for matching.
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

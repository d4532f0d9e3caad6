package xs

import (
	"errors"
	"fmt"
)

// Sentinels for the errno names a server sends in an XS_ERROR reply (xsd_errors[] in
// xs_wire.h, plus oxenstored's EQUOTA). Test with errors.Is.
var (
	ErrInvalid  = errors.New("EINVAL: invalid argument")
	ErrAccess   = errors.New("EACCES: permission denied")
	ErrExist    = errors.New("EEXIST: already exists")
	ErrIsDir    = errors.New("EISDIR: is a directory")
	ErrNotFound = errors.New("ENOENT: no such node")
	ErrNoMem    = errors.New("ENOMEM: out of memory")
	ErrNoSpace  = errors.New("ENOSPC: no space left")
	ErrIO       = errors.New("EIO: input/output error")
	ErrNotEmpty = errors.New("ENOTEMPTY: directory not empty")
	ErrNoSys    = errors.New("ENOSYS: operation not supported")
	ErrReadOnly = errors.New("EROFS: read-only")
	ErrBusy     = errors.New("EBUSY: busy")
	ErrAgain    = errors.New("EAGAIN: transaction conflict, try again")
	ErrIsConn   = errors.New("EISCONN: already connected")
	ErrTooBig   = errors.New("E2BIG: argument too long")
	ErrPerm     = errors.New("EPERM: operation not permitted")
	ErrQuota    = errors.New("EQUOTA: quota exceeded")
)

// Client-side errors that never reach the wire.
var (
	// ErrClosed is returned by every call on a client whose connection is gone; pending
	// calls fail with it when the connection drops.
	ErrClosed = errors.New("xenstore connection closed")
	// ErrBadPath is returned for a path that xenstored would refuse: empty, too long, or
	// with characters outside [A-Za-z0-9-/_@].
	ErrBadPath = errors.New("invalid xenstore path")
	// ErrBadValue is returned for a value this client will not send (one with a NUL byte).
	ErrBadValue = errors.New("invalid xenstore value")
	// ErrProtocol is returned when a server's reply makes no sense (a malformed frame or
	// payload); the connection is closed after it.
	ErrProtocol = errors.New("xenstore protocol error")
	// ErrTxDone is returned by an operation on a transaction that was already committed or
	// aborted.
	ErrTxDone = errors.New("xenstore transaction already ended")
)

// errnoNames lists the wire names in xsd_errors[] order, with EQUOTA last.
var errnoNames = []struct {
	name string
	err  error
}{
	{"EINVAL", ErrInvalid}, {"EACCES", ErrAccess}, {"EEXIST", ErrExist}, {"EISDIR", ErrIsDir},
	{"ENOENT", ErrNotFound}, {"ENOMEM", ErrNoMem}, {"ENOSPC", ErrNoSpace}, {"EIO", ErrIO},
	{"ENOTEMPTY", ErrNotEmpty}, {"ENOSYS", ErrNoSys}, {"EROFS", ErrReadOnly}, {"EBUSY", ErrBusy},
	{"EAGAIN", ErrAgain}, {"EISCONN", ErrIsConn}, {"E2BIG", ErrTooBig}, {"EPERM", ErrPerm},
	{"EQUOTA", ErrQuota},
}

// ErrnoError maps a wire errno name to its sentinel. Like libxenstore, an unknown name
// maps to ErrInvalid.
func ErrnoError(name string) error {
	for _, e := range errnoNames {
		if e.name == name {
			return e.err
		}
	}
	return ErrInvalid
}

// ErrnoName is the wire name for a sentinel, for servers; "EINVAL" for anything else.
func ErrnoName(err error) string {
	for _, e := range errnoNames {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	return "EINVAL"
}

// Error is a failed operation on a path.
type Error struct {
	Op   Op
	Path string
	Err  error
}

func (e *Error) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("xenstore %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("xenstore %s %s: %v", e.Op, e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

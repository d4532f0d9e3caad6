package qmptest

import (
	"fmt"
	"time"
)

// QapiErrorClass names (qapi/error.json).
const (
	classGenericError    = "GenericError"
	classCommandNotFound = "CommandNotFound"
	classDeviceNotFound  = "DeviceNotFound"
)

// qerror is an error reply.
type qerror struct{ class, desc string }

// Error returns the description, which is what QEMU prints for it.
func (e *qerror) Error() string { return e.desc }

func genericErr(format string, a ...any) *qerror {
	return &qerror{classGenericError, fmt.Sprintf(format, a...)}
}

// command is one entry of the fake's QMP command table: its 'data' schema and its handler,
// which runs with s.mu held.
type command struct {
	fields []field
	run    func(c *conn, a args) (any, *qerror)
}

// commandTable returns the commands the fake implements; every other name gets
// CommandNotFound. Members that the configured QEMU version does not have yet are left out
// of the schemas, so a client that sends them gets "Parameter '...' is unexpected".
func (s *Server) commandTable() map[string]command {
	v := s.version
	device := []field{{name: "device", typ: argStr, optional: true}}
	if v.AtLeast(2, 8, 0) {
		device = append(device, field{name: "id", typ: argStr, optional: true})
	}
	change := append(append([]field(nil), device...), field{name: "filename", typ: argStr},
		field{name: "format", typ: argStr, optional: true})
	if v.AtLeast(7, 1, 0) {
		change = append(change, field{name: "force", typ: argBool, optional: true})
	}
	change = append(change, field{name: "read-only-mode", typ: argEnum, optional: true,
		enum: []string{"retain", "read-only", "read-write"}})

	return map[string]command{
		"qmp_capabilities": {
			fields: []field{{name: "enable", typ: argEnumList, optional: true, enum: []string{"oob"}}},
			run:    s.qmpCapabilities,
		},
		"query-version": {run: s.queryVersion},
		"query-status":  {run: s.queryStatus},
		"query-block":   {run: s.queryBlock},
		"stop":          {run: func(*conn, args) (any, *qerror) { s.setRunning(false); return nil, nil }},
		"cont":          {run: func(*conn, args) (any, *qerror) { s.setRunning(true); return nil, nil }},
		"eject": {
			fields: append(append([]field(nil), device...), field{name: "force", typ: argBool, optional: true}),
			run:    s.eject,
		},
		"blockdev-change-medium": {fields: change, run: s.changeMedium},
		"add-fd": {
			fields: []field{{name: "fdset-id", typ: argInt, optional: true}, {name: "opaque", typ: argStr, optional: true}},
			run:    s.addFD,
		},
		"remove-fd": {
			fields: []field{{name: "fdset-id", typ: argInt}, {name: "fd", typ: argInt, optional: true}},
			run:    s.removeFD,
		},
		"query-fdsets": {run: s.queryFdsets},
	}
}

// greeting is the first message of every connection.
func (s *Server) greeting() *qdict {
	caps := qlist{}
	if s.version.AtLeast(3, 0, 0) {
		caps = qlist{"oob"}
	}
	return obj("QMP", obj("version", s.versionInfo(), "capabilities", caps))
}

func (s *Server) versionInfo() *qdict {
	v := s.version
	return obj("qemu", obj("major", v.Major, "minor", v.Minor, "micro", v.Micro), "package", v.Package)
}

func (s *Server) qmpCapabilities(c *conn, a args) (any, *qerror) {
	if c.negotiated {
		return nil, &qerror{classCommandNotFound, "Capabilities negotiation is already complete, command ignored"}
	}
	if v, ok := a.d.get("enable"); ok && len(v.(qlist)) > 0 {
		if !s.version.AtLeast(3, 0, 0) {
			return nil, genericErr("This monitor does not support Out-Of-Band (OOB)")
		}
		c.oob = true
	}
	c.negotiated = true
	return nil, nil
}

func (s *Server) queryVersion(*conn, args) (any, *qerror) { return s.versionInfo(), nil }

func (s *Server) queryStatus(*conn, args) (any, *qerror) {
	status := "paused"
	if s.running {
		status = "running"
	}
	return obj("running", s.running, "singlestep", false, "status", status), nil
}

// setRunning is stop/cont. Like QEMU, it does not touch the fd sets: fds removed while the
// VM was paused stay until the next cleanup (a remove-fd, a released medium, a disconnect).
func (s *Server) setRunning(running bool) {
	if s.running == running {
		return
	}
	s.running = running
	if running {
		s.emit("RESUME", nil)
	} else {
		s.emit("STOP", nil)
	}
}

// emit broadcasts an event to every connection past capabilities negotiation. Callers hold
// s.mu.
func (s *Server) emit(name string, data *qdict) {
	now := time.Now()
	ev := obj("event", name)
	if data != nil {
		ev.put("data", data)
	}
	ev.put("timestamp", obj("seconds", now.Unix(), "microseconds", int64(now.Nanosecond()/1000)))
	msg := encode(nil, ev)
	for c := range s.conns {
		if c.negotiated {
			c.send(append([]byte(nil), msg...))
		}
	}
}

// emitTrayMoved is DEVICE_TRAY_MOVED: "device" is the block backend name and "id" the qdev
// id, both the drive id here.
func (s *Server) emitTrayMoved(d *drive) {
	s.emit("DEVICE_TRAY_MOVED", obj("device", d.id, "id", d.id, "tray-open", d.trayOpen))
}

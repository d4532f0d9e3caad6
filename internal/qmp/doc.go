// Package qmp is a client for the QEMU Machine Protocol (docs/interop/qmp-spec.rst in the QEMU
// tree) over a unix socket, with typed helpers for the block and fd commands of
// qapi/block.json, qapi/block-core.json and qapi/misc.json that a CD-ROM medium change needs.
//
// # Wire
//
// The server speaks first with a greeting, {"QMP": {"version": {"qemu": {"major", "minor",
// "micro"}, "package"}, "capabilities": [...]}}. The client then sends qmp_capabilities (no
// capability is enabled, so there is no out-of-band execution) and waits for its reply; until
// that reply only qmp_capabilities is accepted and no events are delivered. After it, every
// message the server sends is one JSON object on one line terminated by CRLF:
//
//   - a success reply {"return": value, "id": id},
//   - an error reply {"error": {"class", "desc"}, "id": id}, where class is one of
//     QapiErrorClass in qapi/error.json,
//   - an asynchronous event {"event": name, "data": object, "timestamp": {"seconds",
//     "microseconds"}}.
//
// # Ids and replies
//
// Every command carries an "id" ("cdswap-1", "cdswap-2", ...), which the server echoes, and one
// reader goroutine hands each reply to the call waiting for that id. Replies are never matched
// by position, so an event between a command and its reply, or the late reply of a call whose
// context expired, cannot shift later replies onto the wrong call. A late reply is counted
// (Stats.LateReplies) and discarded.
//
// The client treats anything it cannot route as a broken stream and closes the connection,
// failing every pending call with an error that wraps both ErrClosed and ErrProtocol: a line
// that is not a JSON object, a reply with an id this client never sent or has already been
// answered, a second greeting, and a reply without an id. QEMU sends a reply without an id
// only when it could not read the id of a request (a JSON parse error, "QMP input must be a
// JSON object"); this client only sends well-formed objects, so such a reply means something
// else is writing to the socket or the two sides disagree about the protocol, and since QEMU
// does not say which request failed, guessing (for example, failing the oldest pending call)
// could report the wrong call as failed.
//
// Lines have no length limit: a query-block reply grows with the number of drives.
//
// # Contexts
//
// Each call waits for its reply until its ctx ends; it then returns ctx.Err() and the reply,
// when it comes, is discarded. QEMU still runs the command, so a caller that gave up must
// read the state again (query-block, query-fdsets) before it retries. A ctx deadline also
// bounds the write of the command; a write that stops half way closes the connection.
//
// # Errors
//
// An error reply becomes a *Error holding the class and description; errors.Is matches the
// class sentinels (ErrDeviceNotFound and so on), so callers never compare descriptions, which
// the QMP specification says clients should not parse. Where QEMU gives a refusal a caller
// must act on no class of its own (a locked tray, a missing fd set, a format QEMU will not
// open), a named predicate (IsTrayLocked, IsFdsetNotFound, IsFdsetDupFailed,
// IsFormatRefused) reads the description in this package alone, citing the QEMU source of
// the text and checked against QEMU 7.2 by the conformance test.
//
// # File descriptors
//
// ExecuteWithFile and AddFD pass a file descriptor with SCM_RIGHTS on the same sendmsg that
// carries the start of the command, as libxl does, so QEMU holds the fd when it runs the
// command (add-fd, getfd). QEMU keeps one received fd per connection and replaces it when the
// next one arrives, so fd-carrying commands are serialised end to end: the next one is sent
// only after the reply to the previous one.
//
// # Events
//
// Events are delivered on a buffered channel (Dialer.EventBuffer, default 256). The reader
// goroutine never blocks on it: when the buffer is full the oldest queued event is dropped and
// counted in Stats.EventsDropped, so a slow or absent consumer never delays replies. The
// channel is closed when the connection ends.
package qmp

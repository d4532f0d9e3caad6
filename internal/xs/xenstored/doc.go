// Package xenstored is an in-memory xenstore daemon for tests, the demo and the simulated
// host: it serves the wire protocol of xen/include/public/io/xs_wire.h, with the semantics of
// docs/misc/xenstore.txt as the C (cxenstored) and OCaml (oxenstored) daemons implement
// them, on a unix socket, so that package xs and Debian's xenstore-utils (pointed at it with
// XENSTORED_PATH) are real clients of it.
//
// What it does like the real daemons:
//   - The node tree: READ, WRITE (missing parents are created and inherit their parent's
//     permissions), MKDIR, RM (recursive; removing an absent node is fine if its parent
//     exists), DIRECTORY, DIRECTORY_PART (a byte offset into the child list, answered with
//     the node's generation count), GET_PERMS and SET_PERMS, GET_DOMAIN_PATH.
//   - Every socket connection is dom0: relative paths are taken below /local/domain/0 and
//     permissions are stored, inherited and returned but not enforced.
//   - Transactions: a transaction sees its own changes, others see them only after
//     TRANSACTION_END "T". The commit fails with EAGAIN when another writer changed, created
//     or removed, after the transaction started, any node the transaction read or wrote.
//     Like cxenstored, a node's child list is part of the node, so creating or removing a
//     child touches the parent too.
//   - Watches: the initial event when a watch is set, an event for every committed change at
//     or below the watched path, and for the removal of a parent of the watched path (the
//     event then names the watched path); relative watches get relative event paths.
//   - Errors are XS_ERROR frames naming the errno ("ENOENT"); an unknown message type gets
//     ENOSYS; a header announcing more than XENSTORE_PAYLOAD_MAX (4096) bytes makes the
//     server drop that client, as the spec says.
//
// What it does not do: domains other than dom0 (INTRODUCE, RELEASE, SET_TARGET and quotas
// answer ENOSYS), permission checks, or watch depth.
//
// The store starts with what cxenstored creates (/tool/xenstored) plus what xen-init-dom0
// writes on a booted host (/local/domain/0/domid = "0", /local/domain/0/name = "Domain-0").
//
// The server is safe for concurrent use. One mutex serialises every request, which keeps the
// code simple and gives the same total order as the single-threaded real daemons; each
// connection has its own output queue and writer goroutine, so a client that is slow to read
// its watch events never blocks the server or other clients.
package xenstored

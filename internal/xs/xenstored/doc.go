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
//   - Transactions, as cxenstored keeps them since Xen 4.9 (tools/xenstored/transaction.c):
//     the first time a transaction looks at a node (to read, list, get permissions, change
//     or remove it, found or missing) it takes its own copy and notes the node's
//     generation; from then on it sees only its copy and its own changes, which others see
//     only after TRANSACTION_END "T". The commit fails with EAGAIN when any node it looked
//     at was written, created, removed or given new permissions by someone else since that
//     first look. A node's child list is part of the node, so creating or removing a child
//     touches the parent; a lookup that finds a node missing also reads its parents up to
//     the first that exists; removing a node reads everything below it.
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

// Package xs speaks the xenstore wire protocol of xen/include/public/io/xs_wire.h
// (docs/misc/xenstore.txt): a client for xenstored's unix socket or /dev/xen/xenbus, and the
// frame codec it shares with the in-memory server in package xenstored.
//
// A frame is a 16-byte header (type, req_id, tx_id, len as host-order uint32, little-endian
// on every platform Xen runs dom0 on) followed by len bytes of payload. Strings in a payload
// are NUL-separated. Errors come back as an XS_ERROR frame whose payload is the errno name
// ("ENOENT"), which this package maps to sentinels such as ErrNotFound and ErrAgain.
//
// A Client is safe for concurrent use. Unlike libxenstore, which allows one request in
// flight per handle, it gives each request its own req_id and routes replies to their
// callers from one reader goroutine, so many goroutines share one connection. Every call takes
// a context; a call whose context ends returns at once and its reply, when it comes, is
// discarded. Client.Update wraps the transaction retry loop that xenstore's EAGAIN demands.
// Directory reads a child list too long for one reply (E2BIG) in pieces with DIRECTORY_PART,
// checking the node's generation count as libxenstore does.
package xs

package xs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Where libxenstore's xs_open looks for xenstored (tools/include/xen-tools/xenstore-common.h
// and tools/libs/store/xs.c).
const (
	// DefaultSocketPath is xenstored's unix socket, $XENSTORED_RUNDIR/socket with the default
	// rundir.
	DefaultSocketPath = "/var/run/xenstored/socket"
	// DefaultDevicePath is the Linux xenbus device, the only way in when xenstored runs in a
	// stub domain.
	DefaultDevicePath = "/dev/xen/xenbus"
)

// DefaultPath is where Dial connects when given "": $XENSTORED_PATH if set, else
// DefaultSocketPath if it exists, else DefaultDevicePath. Like libxenstore it does not check
// that anything listens there.
func DefaultPath() string {
	if p := os.Getenv("XENSTORED_PATH"); p != "" {
		return p
	}
	if _, err := os.Stat(DefaultSocketPath); err == nil {
		return DefaultSocketPath
	}
	return DefaultDevicePath
}

// Ops are the node operations, implemented by a Client (each call on its own) and by a *Tx
// (inside the transaction). Paths are checked with ValidatePath before anything is sent.
type Ops interface {
	// Read returns the value of a node.
	Read(ctx context.Context, path string) (string, error)
	// Write sets the value of a node, creating it and any missing parents.
	Write(ctx context.Context, path, value string) error
	// Mkdir creates a node with an empty value; an existing node is left alone.
	Mkdir(ctx context.Context, path string) error
	// Rm removes a node and everything below it.
	Rm(ctx context.Context, path string) error
	// Directory lists the names (not paths) of a node's children.
	Directory(ctx context.Context, path string) ([]string, error)
	// GetPerms returns a node's permissions, owner first.
	GetPerms(ctx context.Context, path string) ([]Perm, error)
	// SetPerms replaces a node's permissions; the first entry names the owner.
	SetPerms(ctx context.Context, path string, perms []Perm) error
	// Exists is Read with ErrNotFound mapped to false.
	Exists(ctx context.Context, path string) (bool, error)
}

var (
	_ Ops = (*Client)(nil)
	_ Ops = (*Tx)(nil)
)

// conn is what the client needs from its transport: a *net.UnixConn or the *os.File of the
// xenbus device. The write deadline lets a context interrupt a write that the server does not
// drain.
type conn interface {
	io.ReadWriteCloser
	SetWriteDeadline(t time.Time) error
}

// Client is a connection to xenstored. It is safe for concurrent use: any number of
// goroutines may call it at once. Requests carry distinct req_ids and one reader goroutine
// hands each reply to its caller (as net/rpc does), so a slow call does not hold up others.
//
// When the connection is lost, or the server sends something that makes no sense (an error
// wrapping ErrProtocol), every pending and later call fails with an error wrapping ErrClosed
// and every watch channel is closed. A Client does not reconnect; Dial again.
type Client struct {
	rw conn
	// inOrder is set for the xenbus device, which answers requests in the order it got them
	// and whose older kernels (before Linux 4.11) answer WATCH and UNWATCH themselves with
	// req_id 0: a reply whose req_id matches nothing goes to the oldest pending call.
	inOrder bool
	done    chan struct{} // closed when the reader goroutine has returned

	wmu  sync.Mutex // guards writes to rw, so that frames are never interleaved, and wbuf
	wbuf []byte

	mu       sync.Mutex // guards the fields below
	pending  map[uint32]*call
	nextID   uint32            // last req_id handed out; 0 is never used (events carry it)
	seq      uint64            // order in which calls were registered, for inOrder matching
	watches  map[string]*Watch // by token
	tokenSeq uint64            // for tokens Watch makes up
	err      error             // why the connection is gone; nil while it works

	stats struct {
		requests, retries, late, dropped, unknownEvents atomic.Uint64
	}
}

// call is one request waiting for its reply.
type call struct {
	op  Op
	seq uint64
	ch  chan result // buffered: the reader never blocks on it
	// abandoned is set (under Client.mu) when the caller gave up: the reply, when it comes, is
	// discarded rather than mistaken for another call's.
	abandoned bool
	// late, if set, runs in its own goroutine with a reply that came after the caller gave
	// up, to undo what the server did (end a transaction, remove a watch).
	late func(Msg)
}

type result struct {
	m   Msg
	err error
}

// Stats are a client's counters since Dial.
type Stats struct {
	Requests      uint64 // requests sent
	Retries       uint64 // transactions that Update reran after ErrAgain
	LateReplies   uint64 // replies discarded because their caller's context had ended
	EventsDropped uint64 // watch events dropped because a consumer was WatchBuffer behind
	EventsUnknown uint64 // watch events for a token no open Watch has (after UNWATCH)
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Requests:      c.stats.requests.Load(),
		Retries:       c.stats.retries.Load(),
		LateReplies:   c.stats.late.Load(),
		EventsDropped: c.stats.dropped.Load(),
		EventsUnknown: c.stats.unknownEvents.Load(),
	}
}

// Dial connects to xenstored at path ("" means DefaultPath()). A unix socket is connected to;
// anything else is opened read-write as the xenbus device, as libxenstore does.
func Dial(ctx context.Context, path string) (*Client, error) {
	if path == "" {
		path = DefaultPath()
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("dial xenstore %s (is xenstored running? XENSTORED_PATH overrides the path): %w", path, err)
	}
	if fi.Mode()&os.ModeSocket != 0 {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "unix", path)
		if err != nil {
			return nil, fmt.Errorf("dial xenstore %s: %w", path, err)
		}
		return newClient(nc.(*net.UnixConn), false), nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial xenstore %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("dial xenstore %s: %w", path, err)
	}
	return newClient(f, true), nil
}

func newClient(rw conn, inOrder bool) *Client {
	c := &Client{
		rw:      rw,
		inOrder: inOrder,
		done:    make(chan struct{}),
		pending: make(map[uint32]*call),
		watches: make(map[string]*Watch),
	}
	go c.readLoop()
	return c
}

// Close closes the connection. Pending calls fail with ErrClosed, watch channels are closed,
// and the server drops this connection's watches and open transactions. Close waits for the
// reader goroutine to return. It returns ErrClosed if the connection was already gone.
func (c *Client) Close() error {
	first := c.shutdown(ErrClosed)
	<-c.done
	if !first {
		return ErrClosed
	}
	return nil
}

// shutdown records why the connection is gone, fails every pending call, closes every watch
// and closes the transport. It reports whether this was the first shutdown.
func (c *Client) shutdown(cause error) bool {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return false
	}
	if errors.Is(cause, ErrClosed) {
		c.err = ErrClosed
	} else {
		c.err = fmt.Errorf("%w: %w", ErrClosed, cause)
	}
	for _, cl := range c.pending {
		if !cl.abandoned {
			cl.ch <- result{err: c.err}
		}
	}
	c.pending = nil
	for _, w := range c.watches {
		w.finish(c.err)
	}
	c.watches = nil
	c.mu.Unlock()
	c.rw.Close()
	return true
}

// readLoop is the one goroutine that reads from the connection.
func (c *Client) readLoop() {
	defer close(c.done)
	br := bufio.NewReaderSize(c.rw, HeaderSize+PayloadMax)
	for {
		m, err := ReadMsg(br)
		if err != nil {
			switch {
			case errors.Is(err, ErrPayloadTooLarge):
				err = fmt.Errorf("%w: %w", ErrProtocol, err)
			case errors.Is(err, io.EOF):
				err = errors.New("server closed the connection")
			default:
				err = fmt.Errorf("read: %w", err)
			}
			c.shutdown(err)
			return
		}
		if err := c.dispatch(m); err != nil {
			c.shutdown(err)
			return
		}
	}
}

// dispatch routes one frame from the server. An error means the connection must be dropped.
func (c *Client) dispatch(m Msg) error {
	if m.Op == OpWatchEvent {
		return c.deliver(m)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	id := m.ReqID
	cl := c.pending[id]
	if cl == nil && c.inOrder {
		id, cl = c.oldest()
	}
	if cl == nil {
		return fmt.Errorf("%w: %s reply with req_id %d, which no request has", ErrProtocol, m.Op, m.ReqID)
	}
	if m.Op != cl.op && m.Op != OpError {
		return fmt.Errorf("%w: %s reply to a %s request (req_id %d)", ErrProtocol, m.Op, cl.op, m.ReqID)
	}
	delete(c.pending, id)
	if cl.abandoned {
		c.stats.late.Add(1)
		if cl.late != nil && m.Op != OpError {
			go cl.late(m)
		}
		return nil
	}
	cl.ch <- result{m: m}
	return nil
}

// oldest returns the pending call registered first. c.mu must be held.
func (c *Client) oldest() (uint32, *call) {
	var (
		id  uint32
		old *call
	)
	for i, cl := range c.pending {
		if old == nil || cl.seq < old.seq {
			id, old = i, cl
		}
	}
	return id, old
}

// register gives cl a free req_id and records it as pending. c.mu must be held and c.err nil.
func (c *Client) register(cl *call) uint32 {
	for {
		c.nextID++
		if _, busy := c.pending[c.nextID]; c.nextID != 0 && !busy {
			break
		}
	}
	c.seq++
	cl.seq = c.seq
	c.pending[c.nextID] = cl
	return c.nextID
}

// aLongTimeAgo is a deadline in the past, to make a blocked write return at once.
var aLongTimeAgo = time.Unix(1, 0)

// send writes one frame. If ctx ends before any byte is written the connection is still
// usable and ctx.Err() is returned; any other failure drops the connection, since a partly
// written frame leaves the stream out of step.
func (c *Client) send(ctx context.Context, m Msg) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var err error
	if c.wbuf, err = AppendMsg(c.wbuf[:0], m); err != nil {
		return err
	}
	if ctx.Done() != nil {
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			_ = c.rw.SetWriteDeadline(aLongTimeAgo) // the device may not support deadlines; then the write just completes
			close(fired)
		})
		defer func() {
			if !stop() {
				<-fired
				_ = c.rw.SetWriteDeadline(time.Time{})
			}
		}()
	}
	c.stats.requests.Add(1)
	n, err := c.rw.Write(c.wbuf)
	if err == nil {
		return nil
	}
	if n == 0 && ctx.Err() != nil {
		return ctx.Err()
	}
	c.shutdown(fmt.Errorf("write %s: %w", m.Op, err))
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// roundTrip sends one request and waits for its reply, returning the reply's payload. Every
// error is an *Error{op, path, ...}. late, if set, undoes the request's effect should its
// reply come after ctx ended.
func (c *Client) roundTrip(ctx context.Context, op Op, tx uint32, path string, payload []byte, late func(Msg)) ([]byte, error) {
	fail := func(err error) ([]byte, error) { return nil, &Error{Op: op, Path: path, Err: err} }
	if len(payload) > PayloadMax {
		return fail(fmt.Errorf("payload of %d bytes is over the %d-byte limit: %w", len(payload), PayloadMax, ErrTooBig))
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	cl := &call{op: op, ch: make(chan result, 1), late: late}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return fail(err)
	}
	id := c.register(cl)
	c.mu.Unlock()

	if err := c.send(ctx, Msg{Op: op, ReqID: id, TxID: tx, Payload: payload}); err != nil {
		c.mu.Lock()
		if c.pending[id] == cl {
			delete(c.pending, id) // nothing was sent, so no reply will come
		}
		c.mu.Unlock()
		return fail(err)
	}

	var r result
	select {
	case r = <-cl.ch:
	case <-ctx.Done():
		c.mu.Lock()
		if c.pending[id] == cl {
			cl.abandoned = true
			c.mu.Unlock()
			return fail(ctx.Err())
		}
		c.mu.Unlock()
		// The reply (or the connection's end) came in as ctx ended and is already in cl.ch:
		// take it, so that a transaction started or a watch set is not left unknown.
		r = <-cl.ch
	}
	if r.err != nil {
		return fail(r.err)
	}
	if r.m.Op == OpError {
		return fail(ErrnoError(strings.TrimRight(string(r.m.Payload), "\x00")))
	}
	return r.m.Payload, nil
}

// postTimeout bounds the write of a request nobody waits for.
const postTimeout = 5 * time.Second

// post sends a request whose reply is discarded: clean-up after a caller gave up (abort a
// transaction, remove a watch). It does not wait for the reply.
func (c *Client) post(op Op, tx uint32, payload []byte) {
	cl := &call{op: op, abandoned: true}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	id := c.register(cl)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), postTimeout)
	defer cancel()
	if err := c.send(ctx, Msg{Op: op, ReqID: id, TxID: tx, Payload: payload}); err != nil {
		c.mu.Lock()
		if c.pending[id] == cl {
			delete(c.pending, id)
		}
		c.mu.Unlock()
	}
}

// protocolError drops the connection because a reply's payload makes no sense, and returns
// the error for the call that got it.
func (c *Client) protocolError(op Op, path string, format string, args ...any) error {
	err := fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
	c.shutdown(err)
	return &Error{Op: op, Path: path, Err: fmt.Errorf("%w: %w", ErrClosed, err)}
}

// Read returns the value of the node at path.
func (c *Client) Read(ctx context.Context, path string) (string, error) {
	return c.read(ctx, 0, path)
}

// Write sets the node at path to value, creating it and missing parents.
func (c *Client) Write(ctx context.Context, path, value string) error {
	return c.write(ctx, 0, path, value)
}

// Mkdir creates the node at path with an empty value; an existing node is left as it is.
func (c *Client) Mkdir(ctx context.Context, path string) error {
	return c.simple(ctx, OpMkdir, 0, path)
}

// Rm removes the node at path and everything below it. A missing node is not an error, but a
// missing parent is (ErrNotFound).
func (c *Client) Rm(ctx context.Context, path string) error {
	return c.simple(ctx, OpRm, 0, path)
}

// Directory returns the names of the children of the node at path, in the server's order.
// A child list too long for one reply (E2BIG) is read in pieces with DIRECTORY_PART, as
// libxenstore does; if the list keeps changing between pieces the error wraps ErrAgain, and
// a server without DIRECTORY_PART gives the E2BIG error.
func (c *Client) Directory(ctx context.Context, path string) ([]string, error) {
	return c.directory(ctx, 0, path)
}

// GetPerms returns the permissions of the node at path, owner first.
func (c *Client) GetPerms(ctx context.Context, path string) ([]Perm, error) {
	return c.getPerms(ctx, 0, path)
}

// SetPerms replaces the permissions of the node at path. The first entry names the owner and
// the access of every domain not listed.
func (c *Client) SetPerms(ctx context.Context, path string, perms []Perm) error {
	return c.setPerms(ctx, 0, path, perms)
}

// Exists reports whether the node at path exists.
func (c *Client) Exists(ctx context.Context, path string) (bool, error) {
	return c.exists(ctx, 0, path)
}

// GetDomainPath returns the home path of a domain, /local/domain/<domid>. Error.Path is the
// domid in decimal.
func (c *Client) GetDomainPath(ctx context.Context, domid uint32) (string, error) {
	id := strconv.FormatUint(uint64(domid), 10)
	p, err := c.roundTrip(ctx, OpGetDomainPath, 0, id, JoinStrings(id), nil)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(p), "\x00"), nil
}

func (c *Client) read(ctx context.Context, tx uint32, path string) (string, error) {
	if err := ValidatePath(path); err != nil {
		return "", &Error{Op: OpRead, Path: path, Err: err}
	}
	p, err := c.roundTrip(ctx, OpRead, tx, path, JoinStrings(path), nil)
	if err != nil {
		return "", err
	}
	return string(p), nil
}

func (c *Client) write(ctx context.Context, tx uint32, path, value string) error {
	if err := ValidatePath(path); err != nil {
		return &Error{Op: OpWrite, Path: path, Err: err}
	}
	if i := strings.IndexByte(value, 0); i >= 0 {
		return &Error{Op: OpWrite, Path: path, Err: fmt.Errorf("value has a NUL byte at %d: %w", i, ErrBadValue)}
	}
	if n := len(path) + 1 + len(value); n > PayloadMax {
		return &Error{Op: OpWrite, Path: path, Err: fmt.Errorf("%w: a value of %d bytes makes a %d-byte payload, over the %d-byte limit: %w",
			ErrBadValue, len(value), n, PayloadMax, ErrTooBig)}
	}
	payload := make([]byte, 0, len(path)+1+len(value))
	payload = append(append(append(payload, path...), 0), value...)
	_, err := c.roundTrip(ctx, OpWrite, tx, path, payload, nil)
	return err
}

// simple sends a request whose payload is the path and whose reply is "OK".
func (c *Client) simple(ctx context.Context, op Op, tx uint32, path string) error {
	if err := ValidatePath(path); err != nil {
		return &Error{Op: op, Path: path, Err: err}
	}
	_, err := c.roundTrip(ctx, op, tx, path, JoinStrings(path), nil)
	return err
}

func (c *Client) directory(ctx context.Context, tx uint32, path string) ([]string, error) {
	if err := ValidatePath(path); err != nil {
		return nil, &Error{Op: OpDirectory, Path: path, Err: err}
	}
	p, err := c.roundTrip(ctx, OpDirectory, tx, path, JoinStrings(path), nil)
	if xe := (*Error)(nil); errors.As(err, &xe) && errors.Is(xe.Err, ErrTooBig) {
		// The server's E2BIG: the child list does not fit in one reply.
		return c.directoryParts(ctx, tx, path, err)
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, 8)
	for _, n := range SplitStrings(p) {
		if n != "" {
			names = append(names, n)
		}
	}
	return names, nil
}

func (c *Client) getPerms(ctx context.Context, tx uint32, path string) ([]Perm, error) {
	if err := ValidatePath(path); err != nil {
		return nil, &Error{Op: OpGetPerms, Path: path, Err: err}
	}
	p, err := c.roundTrip(ctx, OpGetPerms, tx, path, JoinStrings(path), nil)
	if err != nil {
		return nil, err
	}
	perms, err := ParsePerms(p)
	if err != nil {
		return nil, c.protocolError(OpGetPerms, path, "GET_PERMS reply %q: %w", p, err)
	}
	return perms, nil
}

func (c *Client) setPerms(ctx context.Context, tx uint32, path string, perms []Perm) error {
	if err := ValidatePath(path); err != nil {
		return &Error{Op: OpSetPerms, Path: path, Err: err}
	}
	if len(perms) == 0 {
		return &Error{Op: OpSetPerms, Path: path, Err: fmt.Errorf("no permissions given, the first names the owner: %w", ErrBadValue)}
	}
	strs := make([]string, 0, 1+len(perms))
	strs = append(strs, path)
	for _, p := range perms {
		switch p.Access {
		case AccessNone, AccessRead, AccessWrite, AccessBoth:
		default:
			return &Error{Op: OpSetPerms, Path: path, Err: fmt.Errorf("permission for domain %d has access %q, want n, r, w or b: %w", p.DomID, byte(p.Access), ErrBadValue)}
		}
		strs = append(strs, p.String())
	}
	_, err := c.roundTrip(ctx, OpSetPerms, tx, path, JoinStrings(strs...), nil)
	return err
}

func (c *Client) exists(ctx context.Context, tx uint32, path string) (bool, error) {
	_, err := c.read(ctx, tx, path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotFound):
		return false, nil
	default:
		return false, err
	}
}

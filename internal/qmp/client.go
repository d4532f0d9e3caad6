package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultEventBuffer is the capacity of the Events channel when Dialer.EventBuffer is 0.
const DefaultEventBuffer = 256

// idPrefix starts every command id, so that our commands stand out in a QMP trace.
const idPrefix = "cdswap-"

// Dialer holds optional settings for a connection. Its zero value works; Dial uses it.
type Dialer struct {
	// EventBuffer is the capacity of the Events channel. 0 means DefaultEventBuffer. When it is
	// full the oldest event is dropped (see Stats.EventsDropped).
	EventBuffer int
	// Logger receives late replies, dropped events and the reason a connection ended.
	// nil discards.
	Logger *slog.Logger
}

// Event is an asynchronous message from the server, such as DEVICE_TRAY_MOVED.
type Event struct {
	// Name is the event name, e.g. "DEVICE_TRAY_MOVED".
	Name string
	// Data is the raw "data" member; nil when the event has none.
	Data json.RawMessage
	// Time is the server's timestamp; zero when the event has none.
	Time time.Time
}

// Stats counts what a client dropped.
type Stats struct {
	// EventsDropped is the number of events discarded because the Events buffer was full.
	EventsDropped uint64
	// LateReplies is the number of replies that arrived after their caller gave up.
	LateReplies uint64
}

// Client is a QMP connection. It is safe for concurrent use: commands may be issued from many
// goroutines, writes are serialised and one reader goroutine routes replies by id.
type Client struct {
	conn         *net.UnixConn
	path         string
	version      Version
	capabilities []string
	log          *slog.Logger
	events       chan Event
	done         chan struct{} // closed when the reader goroutine has finished

	// fdSlot (capacity 1) is held by the fd-carrying command in flight, from its write until
	// its reply, because QEMU keeps only the last fd it received on a connection.
	fdSlot chan struct{}

	wmu sync.Mutex // serialises writes, so commands never interleave on the stream

	mu        sync.Mutex // guards the fields below
	nextID    uint64
	pending   map[string]*call // calls waiting for their reply, by id
	abandoned map[string]*call // calls whose caller gave up; their reply is discarded
	err       error            // set once the connection is gone; wraps ErrClosed
	closing   bool             // Close was called

	eventsDropped atomic.Uint64
	lateReplies   atomic.Uint64
}

// call is one command waiting for its reply.
type call struct {
	ch chan response // capacity 1; receives exactly one response
	// release, if not nil, frees fdSlot; it is safe to call more than once.
	release func()
}

type response struct {
	ret json.RawMessage
	err error
}

// errClosedByClient is the cause recorded when Close ends the connection.
var errClosedByClient = errors.New("closed by Close")

// Dial connects to the QMP unix socket at path with the zero Dialer.
func Dial(ctx context.Context, path string) (*Client, error) {
	return Dialer{}.Dial(ctx, path)
}

// Dial connects to the QMP unix socket at path, reads the greeting and negotiates
// capabilities (none are enabled). It returns when the server has accepted
// qmp_capabilities. QEMU serves one client per monitor socket and greets a second one only
// when the first leaves, so give ctx a deadline.
func (d Dialer) Dial(ctx context.Context, path string) (*Client, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp dial %s: %w", path, err)
	}
	uc, ok := conn.(*net.UnixConn)
	if !ok { // cannot happen for "unix", but a panic is worse than an error
		conn.Close()
		return nil, fmt.Errorf("qmp dial %s: got %T, want *net.UnixConn", path, conn)
	}
	br := bufio.NewReader(uc)
	g, err := readGreeting(ctx, uc, br)
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("qmp dial %s: %w", path, err)
	}
	n := d.EventBuffer
	if n <= 0 {
		n = DefaultEventBuffer
	}
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		conn:         uc,
		path:         path,
		version:      g.version,
		capabilities: g.capabilities,
		log:          log,
		events:       make(chan Event, n),
		done:         make(chan struct{}),
		fdSlot:       make(chan struct{}, 1),
		pending:      make(map[string]*call),
		abandoned:    make(map[string]*call),
	}
	go c.readLoop(br)
	if _, err := c.roundTrip(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp dial %s: qmp_capabilities: %w", path, err)
	}
	return c, nil
}

// readGreeting reads the first message, which must be the greeting, within ctx.
func readGreeting(ctx context.Context, conn *net.UnixConn, br *bufio.Reader) (message, error) {
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetReadDeadline(dl); err != nil {
			return message{}, err
		}
	}
	// A cancelled ctx without a deadline must also stop the read.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	m, err := readGreetingLine(br)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		<-ctx.Done() // the deadline came from ctx, which is about to report it
	}
	if !stop() || ctx.Err() != nil {
		// The deadline may already be in the past; the connection is of no further use.
		return message{}, fmt.Errorf("read greeting: %w", ctx.Err())
	}
	if err != nil {
		return message{}, err
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return message{}, err
	}
	return m, nil
}

func readGreetingLine(br *bufio.Reader) (message, error) {
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return message{}, fmt.Errorf("read greeting: %w", err)
		}
		if len(trimJSONSpace(line)) == 0 {
			continue
		}
		m, err := parseMessage(line)
		if err != nil {
			return message{}, fmt.Errorf("%w: greeting: %w: %s", ErrProtocol, err, excerpt(line))
		}
		if m.kind != kindGreeting {
			return message{}, fmt.Errorf("%w: expected a greeting, got %s: %s", ErrProtocol, m.kind, excerpt(line))
		}
		return m, nil
	}
}

// Version is the QEMU version from the greeting.
func (c *Client) Version() Version { return c.version }

// Capabilities are the capabilities the greeting offered (QEMU: "oob"); none is enabled.
func (c *Client) Capabilities() []string { return append([]string(nil), c.capabilities...) }

// Events returns the channel of asynchronous events. It is buffered and never blocks the
// reader: when full, the oldest event is dropped and counted in Stats. It is closed when the
// connection ends. Every call returns the same channel, so there should be one consumer.
func (c *Client) Events() <-chan Event { return c.events }

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{EventsDropped: c.eventsDropped.Load(), LateReplies: c.lateReplies.Load()}
}

// Done is closed when the connection has ended, after every pending call has failed.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is nil while the connection is up; after it has ended, it is the error (wrapping
// ErrClosed and the cause) that every call now returns.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection. Pending calls fail with an error wrapping ErrClosed. It waits
// for the reader goroutine to finish and may be called more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	err := c.conn.Close()
	<-c.done
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Execute runs command with args (nil, or anything that marshals to a JSON object) and, if
// result is not nil, decodes the "return" value into it. An error reply is returned as a
// *Error; a ctx that ends first returns ctx.Err() and the late reply is discarded.
func (c *Client) Execute(ctx context.Context, command string, args, result any) error {
	return c.execute(ctx, command, args, nil, result)
}

// ExecuteWithFile is Execute, passing f's descriptor with SCM_RIGHTS on the write that carries
// the command (for add-fd or getfd). The descriptor is duplicated by the kernel; the caller
// still owns f and may close it once the call returns. Commands that carry a file are
// serialised from write to reply (see the package doc), so use it for every command that
// consumes a passed fd.
func (c *Client) ExecuteWithFile(ctx context.Context, command string, args any, f *os.File, result any) error {
	if f == nil {
		return fmt.Errorf("qmp %s: no file to pass", command)
	}
	return c.execute(ctx, command, args, f, result)
}

func (c *Client) execute(ctx context.Context, command string, args any, f *os.File, result any) error {
	ret, err := c.roundTrip(ctx, command, args, f)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	if result != nil {
		if err := json.Unmarshal(ret, result); err != nil {
			return fmt.Errorf("qmp %s: decode return value: %w", command, err)
		}
	}
	return nil
}

// roundTrip sends one command and waits for its reply. It returns the raw "return" value.
func (c *Client) roundTrip(ctx context.Context, command string, args any, f *os.File) (json.RawMessage, error) {
	rawArgs, err := encodeArgs(args)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var release func()
	if f != nil {
		select {
		case c.fdSlot <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
			return nil, c.Err()
		}
		release = sync.OnceFunc(func() { <-c.fdSlot })
	}
	cl := &call{ch: make(chan response, 1), release: release}
	id, err := c.register(cl)
	if err != nil {
		if release != nil {
			release()
		}
		return nil, err
	}
	line, err := encodeCommand(command, rawArgs, id)
	if err == nil {
		err = c.write(ctx, line, f)
	}
	if err != nil {
		c.mu.Lock()
		_, mine := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if mine && release != nil {
			release()
		}
		if !mine { // the connection ended meanwhile; its error says more
			r := <-cl.ch
			return r.ret, r.err
		}
		return nil, err
	}
	select {
	case r := <-cl.ch:
		return r.ret, r.err
	case <-ctx.Done():
		c.mu.Lock()
		_, still := c.pending[id]
		if still {
			delete(c.pending, id)
			c.abandoned[id] = cl
		}
		c.mu.Unlock()
		if still {
			return nil, ctx.Err()
		}
		r := <-cl.ch // the reader has taken the call and is about to answer it
		return r.ret, r.err
	}
}

// register assigns the next id to cl and records it as pending.
func (c *Client) register(cl *call) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return "", c.err
	}
	c.nextID++
	id := idPrefix + strconv.FormatUint(c.nextID, 10)
	c.pending[id] = cl
	return id, nil
}

// encodeArgs marshals args, which must be nil or a JSON object.
func encodeArgs(args any) (json.RawMessage, error) {
	if args == nil {
		return nil, nil
	}
	b, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("encode arguments: %w", err)
	}
	if bytes.Equal(b, []byte("null")) {
		return nil, nil
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, fmt.Errorf("encode arguments: %T is not a JSON object", args)
	}
	return b, nil
}

// request is a command on the wire (docs/interop/qmp-spec.rst, "Issuing Commands").
type request struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	ID        string          `json:"id"`
}

// encodeCommand returns the command as one CRLF-terminated line, as libxl sends it.
func encodeCommand(command string, args json.RawMessage, id string) ([]byte, error) {
	b, err := json.Marshal(request{Execute: command, Arguments: args, ID: id})
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	return append(b, '\r', '\n'), nil
}

// write sends one command line, with f's descriptor attached when f is not nil. A ctx
// deadline bounds the write; a write that stops half way closes the connection, since the
// stream can no longer be parsed.
func (c *Client) write(ctx context.Context, line []byte, f *os.File) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	dl, _ := ctx.Deadline() // zero: no deadline
	if err := c.conn.SetWriteDeadline(dl); err != nil {
		// Only a closed connection refuses a deadline: the reader saw the peer go and
		// closed it, and has not failed the pending calls yet.
		c.lost(err)
		return fmt.Errorf("%w: write: %w", ErrClosed, err)
	}
	var n int
	var err error
	if f == nil {
		n, err = c.conn.Write(line)
	} else {
		n, err = c.writeWithFile(line, f)
	}
	if err == nil {
		return nil
	}
	if n > 0 {
		c.conn.Close()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		<-ctx.Done() // the deadline came from ctx, which is about to report it
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var fe *fileError
	if errors.As(err, &fe) { // our file was bad; nothing was sent
		return fe.err
	}
	// Any other write error (EPIPE, ECONNRESET) means the peer is gone: the connection is
	// unusable, and callers test for that with ErrClosed.
	c.conn.Close()
	c.lost(err)
	return fmt.Errorf("%w: write: %w", ErrClosed, err)
}

// lost makes Err report the connection closed at once after a write found the peer gone:
// the reader notices only when its read returns, and a caller that asks Err in between (a
// pool deciding whether to dial again) must not be given the dead connection back.
func (c *Client) lost(cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = fmt.Errorf("%w: write: %w", ErrClosed, cause)
	}
}

// writeWithFile sends line with f's descriptor in an SCM_RIGHTS control message on the first
// sendmsg; if the kernel takes only part of the line, the rest follows without one.
func (c *Client) writeWithFile(line []byte, f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, &fileError{fmt.Errorf("file %s: %w", f.Name(), err)}
	}
	var n int
	var werr error
	// Control keeps f open while its descriptor is in use, and unlike f.Fd it leaves the
	// descriptor's blocking mode alone.
	if err := rc.Control(func(fd uintptr) {
		n, _, werr = c.conn.WriteMsgUnix(line, syscall.UnixRights(int(fd)), nil)
	}); err != nil {
		return 0, &fileError{fmt.Errorf("file %s: %w", f.Name(), err)}
	}
	if werr != nil {
		return n, werr
	}
	if n < len(line) {
		m, err := c.conn.Write(line[n:])
		return n + m, err
	}
	return n, nil
}

// fileError marks a failure of the file to pass, before anything was written, so that the
// connection stays up.
type fileError struct{ err error }

func (e *fileError) Error() string { return e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

// readLoop routes every message until the connection fails, then fails what is pending.
func (c *Client) readLoop(br *bufio.Reader) {
	var cause error
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && len(trimJSONSpace(line)) > 0 {
				err = fmt.Errorf("%w: connection ended inside a message: %s", ErrProtocol, excerpt(line))
			} else {
				err = fmt.Errorf("read %s: %w", c.path, err)
			}
			cause = err
			break
		}
		if len(trimJSONSpace(line)) == 0 {
			continue
		}
		if err := c.handle(line); err != nil {
			cause = err
			break
		}
	}
	c.shutdown(cause)
}

// handle routes one line. An error means the stream cannot be trusted any more.
func (c *Client) handle(line []byte) error {
	m, err := parseMessage(line)
	if err != nil {
		return fmt.Errorf("%w: %w: %s", ErrProtocol, err, excerpt(line))
	}
	switch m.kind {
	case kindEvent:
		c.pushEvent(m.event)
		return nil
	case kindGreeting:
		return fmt.Errorf("%w: greeting after negotiation: %s", ErrProtocol, excerpt(line))
	}
	// A reply. Without an id QEMU could not read our request, and it does not say which one
	// failed; see the package doc for why the connection is dropped.
	if m.id == nil {
		what := "reply"
		if m.err != nil {
			what = fmt.Sprintf("error reply (%v)", m.err)
		}
		return fmt.Errorf("%w: %s without an id: %s", ErrProtocol, what, excerpt(line))
	}
	var id string
	if err := json.Unmarshal(m.id, &id); err != nil {
		return fmt.Errorf("%w: reply with id %s, which this client never sent", ErrProtocol, clip(m.id))
	}
	late := false
	c.mu.Lock()
	cl, ok := c.pending[id]
	if ok {
		delete(c.pending, id)
	} else if cl, ok = c.abandoned[id]; ok {
		delete(c.abandoned, id)
		late = true
	}
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: reply with id %q, which is not pending", ErrProtocol, id)
	}
	if cl.release != nil {
		cl.release()
	}
	if late {
		c.lateReplies.Add(1)
		c.log.Debug("qmp late reply discarded", "id", id)
		return nil
	}
	r := response{ret: m.ret}
	if m.err != nil {
		r = response{err: m.err}
	}
	cl.ch <- r
	return nil
}

// pushEvent queues ev without blocking, dropping the oldest queued event when full.
func (c *Client) pushEvent(ev Event) {
	for {
		select {
		case c.events <- ev:
			return
		default:
		}
		select {
		case old := <-c.events:
			if c.eventsDropped.Add(1) == 1 {
				c.log.Warn("qmp event buffer full, dropping the oldest events", "event", old.Name)
			}
		default:
		}
	}
}

// shutdown records why the connection ended and fails every pending call. Only readLoop
// calls it, once.
func (c *Client) shutdown(cause error) {
	c.mu.Lock()
	if c.closing {
		cause = errClosedByClient
	}
	c.err = fmt.Errorf("%w: %w", ErrClosed, cause)
	pending, abandoned := c.pending, c.abandoned
	c.pending, c.abandoned = map[string]*call{}, map[string]*call{}
	err := c.err
	closing := c.closing
	c.mu.Unlock()
	c.conn.Close()
	if !closing {
		c.log.Warn("qmp connection ended", "path", c.path, "err", cause, "pending", len(pending))
	}
	for _, cl := range abandoned {
		if cl.release != nil {
			cl.release()
		}
	}
	for _, cl := range pending {
		if cl.release != nil {
			cl.release()
		}
		cl.ch <- response{err: err}
	}
	close(c.events)
	close(c.done)
}

// excerptMax is how much of a bad line goes into an error message.
const excerptMax = 200

// excerpt quotes the start of a line for an error message.
func excerpt(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > excerptMax {
		return fmt.Sprintf("%q... (%d bytes)", b[:excerptMax], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// clip shortens a JSON value for an error message.
func clip(b []byte) string {
	if len(b) > excerptMax {
		return string(b[:excerptMax]) + "..."
	}
	return string(b)
}

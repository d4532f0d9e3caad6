package simqemu

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// maxFDs is how many file descriptors one message may carry: the kernel's SCM_MAX_FD.
const maxFDs = 253

// proxyBufSize is the read size of each direction of a proxied connection.
const proxyBufSize = 64 << 10

// maxTrackedObject bounds how much of one JSON object the proxy keeps to parse it; a larger
// object (no QMP command or reply is near this) is forwarded but not understood.
const maxTrackedObject = 16 << 20

// dropKind says when an armed drop closes the connection.
type dropKind int

const (
	dropAfterReply  dropKind = iota // right after the reply (DropAfter)
	dropBeforeReply                 // instead of the reply: the command ran, the client cannot know (DropBeforeReply)
)

// dropSet holds the armed drop faults: how many replies to each command still end their
// connection. It is shared by every monitor of one QEMU.
type dropSet struct {
	mu    sync.Mutex        // guards armed
	armed [2]map[string]int // by dropKind: command -> drops left
}

func newDropSet() *dropSet {
	return &dropSet{armed: [2]map[string]int{{}, {}}}
}

func (d *dropSet) arm(kind dropKind, command string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.armed[kind][command]++
}

// take consumes one armed drop for command, if there is one, and says which kind it was;
// a drop before the reply wins over one after it.
func (d *dropSet) take(command string) (dropKind, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, kind := range []dropKind{dropBeforeReply, dropAfterReply} {
		if d.armed[kind][command] > 0 {
			d.armed[kind][command]--
			return kind, true
		}
	}
	return 0, false
}

// proxy serves one public monitor socket: each client connection gets its own connection to
// QEMU's private socket, and bytes and SCM_RIGHTS fds are copied both ways. Like QEMU's own
// monitor, QEMU serves one of them at a time; the others wait for their greeting.
type proxy struct {
	public, upstream string
	ln               *net.UnixListener
	drops            *dropSet
	onCall           func(Call) // Config.OnCall; nil = none
	log              *slog.Logger
	wg               sync.WaitGroup // the accept loop and every connection's goroutines

	mu     sync.Mutex // guards conns and closed
	conns  map[*proxyConn]struct{}
	closed bool
}

// listenProxy listens on public, replacing a stale socket file but never a live socket.
func listenProxy(public, upstream string, drops *dropSet, onCall func(Call), log *slog.Logger) (*proxy, error) {
	if fi, err := os.Lstat(public); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen on %s: a file that is not a socket is there", public)
		}
		if c, err := net.DialTimeout("unix", public, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another process serves it", public)
		}
		if err := os.Remove(public); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: public, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", public, err)
	}
	return &proxy{
		public: public, upstream: upstream, ln: ln, drops: drops, onCall: onCall,
		log: log.With("monitor", public), conns: map[*proxyConn]struct{}{},
	}, nil
}

// serve starts accepting clients.
func (p *proxy) serve() {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := p.ln.AcceptUnix()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					p.log.Warn("qmp proxy stopped accepting", "err", err)
				}
				return
			}
			p.handle(c)
		}
	}()
}

// close stops accepting, ends every connection and waits for their goroutines. Closing the
// listener also removes the socket file.
func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range conns {
		c.close()
	}
	p.wg.Wait()
}

func (p *proxy) handle(client *net.UnixConn) {
	up, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: p.upstream, Net: "unix"})
	if err != nil {
		p.log.Warn("qmp proxy cannot reach qemu", "err", err)
		client.Close()
		return
	}
	c := &proxyConn{client: client, up: up, drops: p.drops, onCall: p.onCall, log: p.log}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()

	var dirs sync.WaitGroup
	dirs.Add(2)
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		defer dirs.Done()
		c.toQEMU()
	}()
	go func() {
		defer p.wg.Done()
		defer dirs.Done()
		c.toClient()
	}()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		dirs.Wait()
		c.close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
}

// proxyConn is one client connection and its connection to QEMU.
type proxyConn struct {
	client, up *net.UnixConn
	drops      *dropSet
	onCall     func(Call)
	log        *slog.Logger
	closeOnce  sync.Once

	mu      sync.Mutex     // guards pending
	pending []pendingReply // commands sent to QEMU and not yet answered, in order
}

// pendingReply is a command waiting for QEMU's reply.
type pendingReply struct {
	command string
	id      string // the compact JSON of the command's id; "" without one
	drive   string // the drive its "id" or "device" argument names; "" without one
}

func (c *proxyConn) close() {
	c.closeOnce.Do(func() {
		c.client.Close()
		c.up.Close()
	})
}

// toQEMU copies the client's bytes and fds to QEMU and notes each command it sends.
func (c *proxyConn) toQEMU() {
	var cmds splitter
	err := copyMsgs(c.up, c.client, func(data []byte) int {
		cmds.feed(data, func(obj []byte, _, _ int) bool {
			c.noteCommand(obj)
			return false
		})
		return len(data)
	})
	c.finish(c.up, err, "client")
}

// toClient copies QEMU's bytes and fds to the client, and ends the connection right after
// (or instead of) a reply that an armed drop matches.
func (c *proxyConn) toClient() {
	var replies splitter
	dropped := false
	err := copyMsgs(c.client, c.up, func(data []byte) int {
		end := len(data)
		replies.feed(data, func(obj []byte, objStart, objEnd int) bool {
			call, ok := c.matchReply(obj)
			if !ok {
				return false
			}
			if c.onCall != nil {
				c.onCall(call)
			}
			command := call.Command
			kind, ok := c.drops.take(command)
			if !ok {
				return false
			}
			dropped = true
			if kind == dropAfterReply {
				c.log.Info("dropping qmp connection after the reply, as asked", "command", command)
				end = objEnd
				return true
			}
			// A reply that began in an earlier read was partly sent: the client gets a
			// truncated line, which is as good as none.
			c.log.Info("dropping qmp connection instead of the reply, as asked", "command", command)
			end = max(objStart, 0)
			return true
		})
		return end
	})
	if dropped {
		c.close()
		return
	}
	c.finish(c.client, err, "qemu")
}

// finish ends one direction: a clean end of input is passed on as a half close, so that a
// client that shuts its write side still gets its replies; anything else ends both.
func (c *proxyConn) finish(dst *net.UnixConn, err error, from string) {
	if err == nil {
		if cerr := dst.CloseWrite(); cerr == nil {
			return
		}
	} else if !errors.Is(err, net.ErrClosed) {
		c.log.Debug("qmp proxy connection ended", "from", from, "err", err)
	}
	c.close()
}

// noteCommand queues a command sent to QEMU, to match its reply later. Every JSON object
// QEMU reads gets exactly one reply, so anything that does not parse as a command is queued
// too, without a name.
func (c *proxyConn) noteCommand(obj []byte) {
	var cmd struct {
		Execute   string          `json:"execute"`
		ExecOOB   string          `json:"exec-oob"`
		ID        json.RawMessage `json:"id"`
		Arguments struct {
			ID     string `json:"id"`
			Device string `json:"device"`
		} `json:"arguments"`
	}
	_ = json.Unmarshal(obj, &cmd) // a bad command is still answered (with an error)
	name := cmd.Execute
	if name == "" {
		name = cmd.ExecOOB
	}
	drive := cmd.Arguments.ID
	if drive == "" {
		drive = cmd.Arguments.Device
	}
	c.mu.Lock()
	c.pending = append(c.pending, pendingReply{command: name, id: compactJSON(cmd.ID), drive: drive})
	c.mu.Unlock()
}

// matchReply reports which command a message from QEMU answers, and whether it succeeded;
// events and the greeting answer none. A reply is matched by its id, else it answers the
// oldest command without one (QEMU answers in order, apart from out-of-band commands, which
// need an id).
func (c *proxyConn) matchReply(obj []byte) (Call, bool) {
	var msg map[string]json.RawMessage
	if obj == nil || json.Unmarshal(obj, &msg) != nil {
		return Call{}, false
	}
	_, isReturn := msg["return"]
	_, isError := msg["error"]
	if !isReturn && !isError {
		return Call{}, false
	}
	id := compactJSON(msg["id"])
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, p := range c.pending {
		if p.id == id {
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			return Call{Command: p.command, Drive: p.drive, OK: isReturn}, true
		}
	}
	if len(c.pending) > 0 && id == "" { // an early error, sent before QEMU read the id
		p := c.pending[0]
		c.pending = c.pending[1:]
		return Call{Command: p.command, Drive: p.drive, OK: isReturn}, true
	}
	return Call{}, false
}

func compactJSON(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// copyMsgs copies from src to dst until src ends, keeping each SCM_RIGHTS message with the
// bytes it came with: QEMU takes the fds of a command from the read that carried them.
// inspect sees every chunk before it is written and returns how much of it to write; less
// than all stops the copy after that part, with the line ended ("\r\n") as QEMU ends every
// message when the part ends with one. It returns nil when src ended cleanly or the copy
// was stopped.
func copyMsgs(dst, src *net.UnixConn, inspect func([]byte) int) error {
	buf := make([]byte, proxyBufSize)
	oob := make([]byte, syscall.CmsgSpace(maxFDs*4))
	for {
		// Go asks for MSG_CMSG_CLOEXEC, so fds in transit never leak into a QEMU we fork.
		n, oobn, flags, _, err := src.ReadMsgUnix(buf, oob)
		n, oobn = max(n, 0), max(oobn, 0) // a failed read may report -1
		var fds []int
		if oobn > 0 {
			var perr error
			fds, perr = parseRights(oob[:oobn])
			if perr != nil {
				closeFDs(fds)
				return perr
			}
		}
		if flags&syscall.MSG_CTRUNC != 0 {
			closeFDs(fds)
			return errors.New("control message truncated: more fds than one message may carry")
		}
		if n == 0 { // end of stream: ReadMsgUnix reports it as 0 bytes, not io.EOF
			closeFDs(fds)
			if err == nil || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		data := buf[:n]
		keep := inspect(data)
		stop := keep < len(data)
		if stop {
			data = endLine(data, keep)
			if len(data) == 0 {
				closeFDs(fds)
				return nil
			}
		}
		werr := writeMsg(dst, data, fds)
		closeFDs(fds) // the receiver has its own copies now
		if werr != nil {
			return werr
		}
		if stop {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// endLine returns data cut after the message that ends at end, with the "\r\n" QEMU puts
// after it, taken from data or added; a cut between messages adds nothing.
func endLine(data []byte, end int) []byte {
	if end == 0 || data[end-1] != '}' {
		return data[:end]
	}
	rest := data[end:]
	switch {
	case bytes.HasPrefix(rest, []byte("\r\n")):
		return data[:end+2]
	case bytes.HasPrefix(rest, []byte("\n")):
		return data[:end+1]
	}
	return append(data[:end:end], '\r', '\n')
}

// writeMsg writes data to dst, the fds riding on the first write.
func writeMsg(dst *net.UnixConn, data []byte, fds []int) error {
	if len(fds) > 0 {
		n, _, err := dst.WriteMsgUnix(data, syscall.UnixRights(fds...), nil)
		if err != nil {
			return err
		}
		data = data[n:]
	}
	for len(data) > 0 {
		n, err := dst.Write(data)
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// parseRights returns the fds of the SCM_RIGHTS messages in oob.
func parseRights(oob []byte) ([]int, error) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != syscall.SOL_SOCKET || m.Header.Type != syscall.SCM_RIGHTS {
			continue
		}
		got, err := syscall.ParseUnixRights(&m)
		if err != nil {
			closeFDs(fds)
			return nil, fmt.Errorf("parse SCM_RIGHTS: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

// splitter finds the top-level JSON objects in a byte stream that arrives in chunks, by
// counting braces outside strings, as QEMU's JSON streamer does. It does not validate; the
// objects it finds are parsed by the caller.
type splitter struct {
	obj    []byte // the object so far; nil once it outgrew maxTrackedObject
	depth  int
	inStr  bool
	escape bool
	big    bool
}

// feed scans data. For each object that ends in it, emit gets the object (nil if too big to
// keep), the offset in data of its opening brace (-1 if it began in an earlier chunk) and
// the offset just past its closing brace; emit returns true to stop.
func (s *splitter) feed(data []byte, emit func(obj []byte, start, end int) bool) {
	start := -1
	for i, b := range data {
		if s.depth == 0 {
			if b == '{' {
				s.depth, s.inStr, s.escape, s.big = 1, false, false, false
				s.obj = append(s.obj[:0], b)
				start = i
			}
			continue // whitespace between messages, or bytes QEMU would reject
		}
		if !s.big {
			if len(s.obj) >= maxTrackedObject {
				s.big, s.obj = true, nil
			} else {
				s.obj = append(s.obj, b)
			}
		}
		if s.inStr {
			switch {
			case s.escape:
				s.escape = false
			case b == '\\':
				s.escape = true
			case b == '"':
				s.inStr = false
			}
			continue
		}
		switch b {
		case '"':
			s.inStr = true
		case '{', '[':
			s.depth++
		case '}', ']':
			s.depth--
			if s.depth == 0 {
				var obj []byte
				if !s.big {
					obj = s.obj
				}
				if emit(obj, start, i+1) {
					return
				}
				start = -1
			}
		}
	}
}

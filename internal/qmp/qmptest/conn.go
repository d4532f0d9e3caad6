package qmptest

import (
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// maxRecvFDs is how many descriptors one recvmsg takes, QEMU's TCP_MAX_FDS.
const maxRecvFDs = 16

// flushTimeout bounds the flush of a closing connection's output.
const flushTimeout = 10 * time.Second

// conn is one client of a monitor. Its reader runs on the monitor's accept goroutine (one
// connection at a time, like a chardev socket server); its writer has a goroutine of its own
// draining an unbounded queue, so that events broadcast with s.mu held never block on a
// client that does not read, as QEMU buffers monitor output instead of blocking.
type conn struct {
	s   *Server
	mon *monitor
	uc  *net.UnixConn

	// negotiated is set by qmp_capabilities; guarded by s.mu, because event broadcasts read
	// it. oob and pending are used by the reader goroutine only.
	negotiated bool
	oob        bool
	pending    []recvFD // descriptors from the last SCM_RIGHTS, not yet used by add-fd

	qmu     sync.Mutex // guards queue, closing and dead
	cond    *sync.Cond
	queue   [][]byte
	closing bool // close once the queue is written
	dead    bool // a write failed; drop everything

	writerDone chan struct{}
}

func (s *Server) serve(m *monitor, uc *net.UnixConn) {
	c := &conn{s: s, mon: m, uc: uc, writerDone: make(chan struct{})}
	c.cond = sync.NewCond(&c.qmu)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		uc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.refcount++ // CHR_EVENT_OPENED
	s.mu.Unlock()
	s.log.Debug("qmptest connection opened", "monitor", m.path)

	go c.writeLoop()
	c.send(encode(nil, s.greeting()))
	c.readLoop()

	for _, r := range c.pending {
		r.f.Close()
	}
	c.pending = nil
	s.mu.Lock()
	delete(s.conns, c)
	s.refcount-- // CHR_EVENT_CLOSED
	if !s.newFdsetRules {
		// monitor_qmp_event → monitor_fdsets_cleanup: with no monitor left, fds that are not
		// in use are closed (QEMU before 9.1).
		for _, set := range slices.Clone(s.fdsets) {
			s.cleanupFdset(set)
		}
	}
	s.mu.Unlock()

	// Flush what is queued (a dropped connection's last reply), but do not let a client
	// that stopped reading hold the monitor forever.
	_ = uc.SetWriteDeadline(time.Now().Add(flushTimeout)) // a failed deadline only means no bound
	c.qmu.Lock()
	c.closing = true
	c.cond.Signal()
	c.qmu.Unlock()
	<-c.writerDone
	uc.Close()
	s.log.Debug("qmptest connection closed", "monitor", m.path)
}

func (c *conn) readLoop() {
	buf := make([]byte, 64<<10)
	oob := make([]byte, syscall.CmsgSpace(maxRecvFDs*4))
	st := &streamer{emit: c.handle}
	for {
		n, oobn, _, _, err := c.uc.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			c.takeFDs(oob[:oobn])
		}
		if n > 0 && !st.feed(buf[:n]) {
			return
		}
		if err != nil || n == 0 {
			return
		}
	}
}

// takeFDs keeps the descriptors of an SCM_RIGHTS message, replacing (and closing) any kept
// from an earlier one, as QEMU's tcp_chr_recv does.
func (c *conn) takeFDs(oob []byte) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	var fresh []recvFD
	for i := range msgs {
		fds, err := syscall.ParseUnixRights(&msgs[i])
		if err != nil {
			continue
		}
		for _, fd := range fds {
			syscall.CloseOnExec(fd)
			fresh = append(fresh, recvFD{os.NewFile(uintptr(fd), "scm-rights"), fd})
		}
	}
	if len(fresh) == 0 {
		return
	}
	for _, r := range c.pending {
		r.f.Close()
	}
	c.pending = fresh
}

// recvFD is a received descriptor. The number is kept apart because (*os.File).Fd would put
// the descriptor, whose open file description the client shares, into blocking mode.
type recvFD struct {
	f  *os.File
	fd int
}

// takeFD hands the first kept descriptor to a command and closes the others
// (qemu_chr_fe_get_msgfd → tcp_get_msgfds).
func (c *conn) takeFD() (*os.File, int) {
	if len(c.pending) == 0 {
		return nil, -1
	}
	r := c.pending[0]
	for _, g := range c.pending[1:] {
		g.f.Close()
	}
	c.pending = nil
	return r.f, r.fd
}

// send queues one message; the writer adds the CRLF.
func (c *conn) send(msg []byte) {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.closing || c.dead {
		return
	}
	c.queue = append(c.queue, append(msg, '\r', '\n'))
	c.cond.Signal()
}

func (c *conn) writeLoop() {
	defer close(c.writerDone)
	for {
		c.qmu.Lock()
		for len(c.queue) == 0 && !c.closing {
			c.cond.Wait()
		}
		batch := c.queue
		c.queue = nil
		closing := c.closing
		c.qmu.Unlock()
		for _, b := range batch {
			if _, err := c.uc.Write(b); err != nil {
				c.qmu.Lock()
				c.dead, c.queue = true, nil
				c.qmu.Unlock()
				c.uc.Close() // wakes the reader
				return
			}
		}
		if closing && len(batch) == 0 {
			return
		}
	}
}

// handle runs one message from the streamer; false stops reading (a dropped connection).
func (c *conn) handle(v any, parseErr string) bool {
	s := c.s
	if parseErr != "" {
		c.reply(nil, nil, genericErr("%s", parseErr))
		return true
	}
	d, ok := v.(*qdict)
	if !ok {
		c.reply(nil, nil, genericErr("QMP input must be a JSON object"))
		return true
	}
	id, _ := d.get("id")
	name, oob, qe := checkRequest(d, c.oob)
	if qe != nil {
		c.reply(id, nil, qe)
		return true
	}

	s.mu.Lock()
	s.cmdLog = append(s.cmdLog, name)
	negotiated := c.negotiated
	var delay time.Duration
	var fail *qerror
	var dropAfter, dropBefore bool
	if negotiated || name == "qmp_capabilities" {
		f := &s.faults
		delay = f.delay[name]
		if q := f.failNext[name]; len(q) > 0 {
			fail, f.failNext[name] = q[0], q[1:]
		}
		if f.dropAfter[name] > 0 {
			f.dropAfter[name]--
			dropAfter = true
		}
		if f.dropBefore[name] > 0 {
			f.dropBefore[name]--
			dropBefore = true
		}
	}
	s.mu.Unlock()
	s.log.Debug("qmptest command", "monitor", c.mon.path, "command", name)

	if !negotiated && name != "qmp_capabilities" {
		c.reply(id, nil, &qerror{classCommandNotFound, "Expecting capabilities negotiation with 'qmp_capabilities'"})
		return true
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.done:
			t.Stop()
			return false
		}
	}

	var ret any
	switch cmd, found := s.cmds[name]; {
	case fail != nil:
		qe = fail
		s.log.Debug("qmptest fault: failing", "command", name, "class", fail.class)
	case !found:
		qe = &qerror{classCommandNotFound, "The command " + name + " has not been found"}
	case oob:
		qe = genericErr("The command %s does not support OOB", name)
	default:
		var a args
		if a, qe = checkArgs(argsOf(d), cmd.fields); qe == nil {
			s.mu.Lock()
			ret, qe = cmd.run(c, a)
			s.mu.Unlock()
		}
	}

	if s.opts.OnCall != nil {
		call := Call{Command: name, Drive: driveArg(argsOf(d))}
		if qe != nil {
			call.Err = qe
		}
		s.opts.OnCall(call)
	}
	if dropBefore {
		s.log.Debug("qmptest fault: dropping before the reply", "command", name)
		return false
	}
	c.reply(id, ret, qe)
	if dropAfter {
		s.log.Debug("qmptest fault: dropping after the reply", "command", name)
		return false
	}
	return true
}

// driveArg is the drive a command names: its "id" argument, else its "device" one.
func driveArg(a *qdict) string {
	for _, k := range []string{"id", "device"} {
		if v, ok := a.get(k); ok {
			if s, ok := v.(string); ok {
				return s
			}
		}
	}
	return ""
}

func argsOf(d *qdict) *qdict {
	if a, ok := d.get("arguments"); ok {
		return a.(*qdict) // checkRequest made sure
	}
	return newQDict()
}

// checkRequest is qmp-dispatch.c's qmp_dispatch_check_obj: members are checked in QEMU's
// hash order, so the first complaint is the one QEMU makes.
func checkRequest(d *qdict, allowOOB bool) (name string, oob bool, qe *qerror) {
	execKey := ""
	for _, k := range d.ordered() {
		v := d.vals[k]
		switch {
		case k == "execute" || (k == "exec-oob" && allowOOB):
			s, ok := v.(string)
			if !ok {
				return "", false, genericErr("QMP input member '%s' must be a string", k)
			}
			if execKey != "" {
				return "", false, genericErr("QMP input member '%s' clashes with '%s'", k, execKey)
			}
			execKey, name = k, s
		case k == "arguments":
			if _, ok := v.(*qdict); !ok {
				return "", false, genericErr("QMP input member 'arguments' must be an object")
			}
		case k == "id":
		default:
			return "", false, genericErr("QMP input member '%s' is unexpected", k)
		}
	}
	if execKey == "" {
		return "", false, genericErr("QMP input lacks member 'execute'")
	}
	return name, execKey == "exec-oob", nil
}

// reply sends {"return": ret} or {"error": ...}, echoing the request's id when it had one.
func (c *conn) reply(id, ret any, qe *qerror) {
	var r *qdict
	if qe != nil {
		r = obj("error", obj("class", qe.class, "desc", qe.desc))
	} else {
		if ret == nil {
			ret = newQDict()
		}
		r = obj("return", ret)
	}
	if id != nil {
		r.put("id", id)
	}
	c.send(encode(nil, r))
}

package xenstored

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/cdswap/cdswap/internal/xs"
)

// handler answers one request, called with Server.mu held. t is the request's transaction,
// nil outside one. It returns the reply payload or an error wrapping an xs errno sentinel.
type handler func(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error)

// opSpec says how a message type is handled.
type opSpec struct {
	fn handler
	// noTx: the tx_id is ignored (WATCH, UNWATCH), as in cxenstored's XS_FLAG_NOTID.
	noTx bool
}

// ops lists the message types this server answers; any other gets ENOSYS.
var ops = map[xs.Op]opSpec{
	xs.OpControl:            {fn: opControl},
	xs.OpDirectory:          {fn: opDirectory},
	xs.OpRead:               {fn: opRead},
	xs.OpGetPerms:           {fn: opGetPerms},
	xs.OpWatch:              {fn: opWatch, noTx: true},
	xs.OpUnwatch:            {fn: opUnwatch, noTx: true},
	xs.OpTransactionStart:   {fn: opTransactionStart},
	xs.OpTransactionEnd:     {fn: opTransactionEnd},
	xs.OpGetDomainPath:      {fn: opGetDomainPath},
	xs.OpWrite:              {fn: opWrite},
	xs.OpMkdir:              {fn: opMkdir},
	xs.OpRm:                 {fn: opRm},
	xs.OpSetPerms:           {fn: opSetPerms},
	xs.OpIsDomainIntroduced: {fn: opIsDomainIntroduced},
	xs.OpResetWatches:       {fn: opResetWatches},
	xs.OpDirectoryPart:      {fn: opDirectoryPart},
	xs.OpGetFeature:         {fn: opGetFeature},
}

// okReply is the payload of every reply that carries no data ("OK" and its NUL, send_ack).
var okReply = []byte("OK\x00")

// handle answers one request and queues the reply.
func (s *Server) handle(c *conn, m xs.Msg) {
	s.requests.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	payload, err := s.dispatch(c, m)
	if err == nil && len(payload) > xs.PayloadMax {
		err = fmt.Errorf("%w: a %d-byte reply", xs.ErrTooBig, len(payload))
	}
	reply := xs.Msg{Op: m.Op, ReqID: m.ReqID, TxID: m.TxID, Payload: payload}
	if err != nil {
		reply.Op, reply.Payload = xs.OpError, xs.JoinStrings(xs.ErrnoName(err))
	}
	frame, ferr := xs.AppendMsg(nil, reply)
	if ferr != nil { // cannot happen: the length was checked above
		return
	}
	c.enqueue(frame)
	if m.Op == xs.OpWatch && err == nil {
		// "When a watch is first set up it is triggered once straight away", after the
		// reply (do_watch in cxenstored).
		w := c.watches[len(c.watches)-1]
		s.sendEvent(c, w.given, w.token)
	}
}

func (s *Server) dispatch(c *conn, m xs.Msg) ([]byte, error) {
	spec, known := ops[m.Op]
	if !known {
		return nil, fmt.Errorf("%w: message type %d", xs.ErrNoSys, uint32(m.Op))
	}
	var t *tx
	if !spec.noTx && m.TxID != 0 {
		t = c.txs[m.TxID]
		if t == nil {
			return nil, fmt.Errorf("%w: no transaction %d on this connection", xs.ErrNotFound, m.TxID)
		}
	}
	return spec.fn(s, c, t, m)
}

// viewOf is where a request reads and writes.
func (s *Server) viewOf(t *tx) view {
	if t != nil {
		return t
	}
	return &direct{st: s.st}
}

// finish fires the events of a change made outside a transaction; inside one they wait for
// the commit.
func (s *Server) finish(v view) {
	if d, isDirect := v.(*direct); isDirect {
		s.fireLocked(d.events)
	}
}

// oneArg is cxenstored's onearg: the payload is one string and its NUL, nothing else.
func oneArg(p []byte) (string, error) {
	if len(p) == 0 || bytes.IndexByte(p, 0) != len(p)-1 {
		return "", fmt.Errorf("%w: want one NUL-terminated string", xs.ErrInvalid)
	}
	return string(p[:len(p)-1]), nil
}

// strs returns the NUL-terminated strings at the start of p (cxenstored's get_strings: bytes
// after the last NUL are not a string).
func strs(p []byte) []string {
	var out []string
	for {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			return out
		}
		out = append(out, string(p[:i]))
		p = p[i+1:]
	}
}

// pathArg parses a one-path payload.
func pathArg(m xs.Msg, special bool) (string, error) {
	a, err := oneArg(m.Payload)
	if err != nil {
		return "", err
	}
	return canonical(a, special)
}

func opRead(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	p, err := pathArg(m, false)
	if err != nil {
		return nil, err
	}
	v, err := read(s.viewOf(t), p)
	return bytes.Clone(v), err
}

func opWrite(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	i := bytes.IndexByte(m.Payload, 0)
	if i < 0 {
		return nil, fmt.Errorf("%w: WRITE wants <path>|<value>", xs.ErrInvalid)
	}
	p, err := canonical(string(m.Payload[:i]), false)
	if err != nil {
		return nil, err
	}
	v := s.viewOf(t)
	write(v, p, bytes.Clone(m.Payload[i+1:]))
	s.finish(v)
	return okReply, nil
}

func opMkdir(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	p, err := pathArg(m, false)
	if err != nil {
		return nil, err
	}
	v := s.viewOf(t)
	mkdir(v, p)
	s.finish(v)
	return okReply, nil
}

func opRm(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	p, err := pathArg(m, false)
	if err != nil {
		return nil, err
	}
	v := s.viewOf(t)
	if err := rm(v, p); err != nil {
		return nil, err
	}
	s.finish(v)
	return okReply, nil
}

func opDirectory(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	p, err := pathArg(m, false)
	if err != nil {
		return nil, err
	}
	n := lookup(s.viewOf(t), p)
	if n == nil {
		return nil, xs.ErrNotFound
	}
	return n.childBytes(), nil
}

// opDirectoryPart answers <path>|<offset>| with <gencnt>|<child>|*: the children from byte
// <offset> of the child list that fit in a frame, and an extra empty string once the list
// is complete (send_directory_part in cxenstored).
func opDirectoryPart(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	if bytes.Count(m.Payload, []byte{0}) != 2 {
		return nil, fmt.Errorf("%w: DIRECTORY_PART wants <path>|<offset>|", xs.ErrInvalid)
	}
	args := strs(m.Payload)
	p, err := canonical(args[0], false)
	if err != nil {
		return nil, err
	}
	n := lookup(s.viewOf(t), p)
	if n == nil {
		return nil, xs.ErrNotFound
	}
	off := atoi(args[1])
	out := append(strconv.AppendUint(nil, n.gen, 10), 0)
	list := n.childBytes()
	if off < 0 || off >= len(list) {
		return append(out, 0), nil
	}
	maxLen := xs.PayloadMax - len(out) - 1
	l := 0
	for {
		child := list[off+l:]
		child = child[:bytes.IndexByte(child, 0)]
		if l+len(child) >= maxLen {
			break
		}
		l += len(child) + 1
		if off+l == len(list) {
			break
		}
	}
	out = append(out, list[off:off+l]...)
	if off+l == len(list) {
		out = append(out, 0)
	}
	return out, nil
}

// atoi parses like C's atoi: leading digits with an optional sign; anything else is 0.
func atoi(s string) int {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	n := 0
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		if n > 1<<40 {
			break // far beyond any child list
		}
		n = n*10 + int(s[i]-'0')
	}
	if neg {
		return -n
	}
	return n
}

func opGetPerms(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	p, err := pathArg(m, true)
	if err != nil {
		return nil, err
	}
	ps, err := getPerms(s.viewOf(t), p)
	if err != nil {
		return nil, err
	}
	var out []byte
	for _, pe := range ps {
		out = append(out, pe.String()...)
		out = append(out, 0)
	}
	return out, nil
}

// opSetPerms: <path>|<perm>|+ ; like cxenstored, only NUL-terminated permission strings
// count.
func opSetPerms(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	args := strs(m.Payload)
	if len(args) < 2 {
		return nil, fmt.Errorf("%w: SET_PERMS wants <path>|<perm>|+", xs.ErrInvalid)
	}
	p, err := canonical(args[0], true)
	if err != nil {
		return nil, err
	}
	perms := make([]xs.Perm, 0, len(args)-1)
	for _, a := range args[1:] {
		pe, err := xs.ParsePerm(a)
		if err != nil {
			return nil, err
		}
		perms = append(perms, pe)
	}
	v := s.viewOf(t)
	if err := setPerms(v, p, perms); err != nil {
		return nil, err
	}
	s.finish(v)
	return okReply, nil
}

func opGetDomainPath(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	id, err := domidArg(m)
	if err != nil {
		return nil, err
	}
	return xs.JoinStrings(domainPath(id)), nil
}

func domidArg(m xs.Msg) (uint64, error) {
	a, err := oneArg(m.Payload)
	if err != nil {
		return 0, err
	}
	id, err := strconv.ParseUint(a, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%w: domid %q is not a number 0..65535", xs.ErrInvalid, a)
	}
	return id, nil
}

func opIsDomainIntroduced(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	id, err := domidArg(m)
	if err != nil {
		return nil, err
	}
	if s.introduced[uint32(id)] {
		return []byte("T\x00"), nil
	}
	return []byte("F\x00"), nil
}

// opGetFeature: this server offers no optional features (no watch depth).
func opGetFeature(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	return []byte("0\x00"), nil
}

// opControl answers the few CONTROL (formerly DEBUG) commands that make sense here.
func opControl(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	args := strs(m.Payload)
	if len(args) == 0 {
		return nil, fmt.Errorf("%w: CONTROL wants <command>|", xs.ErrInvalid)
	}
	switch args[0] {
	case "help":
		return []byte("check\nhelp\nlog\nprint\n\x00"), nil
	case "check", "log":
		return okReply, nil
	case "print":
		if len(args) > 1 {
			s.log.Info("xenstored: control print", "conn", c.id, "msg", args[1])
		}
		return okReply, nil
	}
	return nil, fmt.Errorf("%w: unknown CONTROL command %q", xs.ErrInvalid, args[0])
}

func opWatch(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	args := strs(m.Payload)
	if len(args) != 2 || bytes.Count(m.Payload, []byte{0}) != 2 {
		return nil, fmt.Errorf("%w: WATCH wants <path>|<token>|", xs.ErrInvalid)
	}
	p, err := canonical(args[0], true)
	if err != nil {
		return nil, err
	}
	for _, w := range c.watches {
		if w.path == p && w.token == args[1] {
			return nil, fmt.Errorf("%w: watch %s %s is set already", xs.ErrExist, args[0], args[1])
		}
	}
	w := &watch{path: p, given: args[0], token: args[1], relative: args[0][0] != '/' && args[0][0] != '@'}
	c.watches = append(c.watches, w)
	// handle sends the initial event after this reply.
	return okReply, nil
}

func opUnwatch(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	args := strs(m.Payload)
	if len(args) != 2 || bytes.Count(m.Payload, []byte{0}) != 2 {
		return nil, fmt.Errorf("%w: UNWATCH wants <path>|<token>|", xs.ErrInvalid)
	}
	p, err := canonical(args[0], true)
	if err != nil {
		return nil, err
	}
	for i, w := range c.watches {
		if w.path == p && w.token == args[1] {
			c.watches = append(c.watches[:i:i], c.watches[i+1:]...)
			return okReply, nil
		}
	}
	return nil, fmt.Errorf("%w: no watch %s %s", xs.ErrNotFound, args[0], args[1])
}

func opResetWatches(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	c.watches = nil
	clear(c.txs)
	return okReply, nil
}

func opTransactionStart(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	if t != nil {
		return nil, fmt.Errorf("%w: transactions do not nest", xs.ErrBusy)
	}
	id := c.nextTx
	for id == 0 || c.txs[id] != nil {
		id++
	}
	c.nextTx = id + 1
	c.txs[id] = s.st.begin(id)
	return xs.JoinStrings(strconv.FormatUint(uint64(id), 10)), nil
}

func opTransactionEnd(s *Server, c *conn, t *tx, m xs.Msg) ([]byte, error) {
	a, err := oneArg(m.Payload)
	if err != nil || (a != "T" && a != "F") {
		return nil, fmt.Errorf("%w: TRANSACTION_END wants T| or F|", xs.ErrInvalid)
	}
	if t == nil {
		return nil, fmt.Errorf("%w: TRANSACTION_END outside a transaction", xs.ErrNotFound)
	}
	// The transaction ends here whatever the outcome, as in cxenstored.
	delete(c.txs, t.id)
	if a == "F" {
		s.aborts.Add(1)
		return okReply, nil
	}
	if t.conflict() {
		s.conflicts.Add(1)
		return nil, fmt.Errorf("%w: transaction %d", xs.ErrAgain, t.id)
	}
	if s.injectAgain() {
		s.conflicts.Add(1)
		s.injected.Add(1)
		return nil, fmt.Errorf("%w: transaction %d (injected)", xs.ErrAgain, t.id)
	}
	evs := t.apply()
	s.commits.Add(1)
	s.fireLocked(evs)
	return okReply, nil
}

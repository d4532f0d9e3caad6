package xenstored

import (
	"bufio"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xs"
)

// testDeadline bounds every blocking socket operation of a test.
const testDeadline = 10 * time.Second

// start runs a server on a fresh unix socket and stops it when the test ends.
func start(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	path := filepath.Join(testenv.SocketDir(t), "xs.sock")
	ln, err := Listen(path)
	require.NoError(t, err)
	s := New(cfg)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, s.Close())
		select {
		case err := <-done:
			require.NoError(t, err, "Serve after Close")
		case <-time.After(testDeadline):
			t.Error("Serve did not return after Close")
		}
	})
	return s, path
}

// raw is a minimal xenstore client that shows the frames as they are.
type raw struct {
	t      testing.TB
	c      net.Conn
	r      *bufio.Reader
	nextID uint32
	events []string // WATCH_EVENT payloads received while waiting for replies, as "path|token"
}

func dialRaw(t testing.TB, path string) *raw {
	t.Helper()
	c, err := net.Dial("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &raw{t: t, c: c, r: bufio.NewReader(c), nextID: 100}
}

func (r *raw) send(op xs.Op, txID uint32, payload []byte) uint32 {
	r.t.Helper()
	r.nextID++
	require.NoError(r.t, r.c.SetDeadline(time.Now().Add(testDeadline)))
	b, err := xs.AppendMsg(nil, xs.Msg{Op: op, ReqID: r.nextID, TxID: txID, Payload: payload})
	require.NoError(r.t, err)
	_, err = r.c.Write(b)
	require.NoError(r.t, err)
	return r.nextID
}

// recv returns the next frame, whatever it is.
func (r *raw) recv() xs.Msg {
	r.t.Helper()
	require.NoError(r.t, r.c.SetReadDeadline(time.Now().Add(testDeadline)))
	m, err := xs.ReadMsg(r.r)
	require.NoError(r.t, err)
	return m
}

// call sends a request and returns its reply; watch events that arrive first are kept in
// r.events. It checks the reply echoes req_id and tx_id.
func (r *raw) call(op xs.Op, txID uint32, payload []byte) xs.Msg {
	r.t.Helper()
	id := r.send(op, txID, payload)
	for {
		m := r.recv()
		if m.Op == xs.OpWatchEvent {
			require.Zero(r.t, m.ReqID, "WATCH_EVENT req_id")
			require.Zero(r.t, m.TxID, "WATCH_EVENT tx_id")
			r.events = append(r.events, showPayload(m.Payload))
			continue
		}
		require.Equal(r.t, id, m.ReqID, "reply req_id to %s", op)
		require.Equal(r.t, txID, m.TxID, "reply tx_id to %s", op)
		if m.Op != xs.OpError {
			require.Equal(r.t, op, m.Op, "reply type to %s", op)
		}
		return m
	}
}

// takeEvents returns and forgets the events seen so far.
func (r *raw) takeEvents() []string {
	e := r.events
	r.events = nil
	return e
}

// sync makes a round trip, so every event queued for r before now is in r.events.
func (r *raw) sync() {
	r.t.Helper()
	m := r.call(xs.OpGetDomainPath, 0, z("0"))
	require.Equal(r.t, xs.OpGetDomainPath, m.Op)
}

// ok calls and requires a non-error reply; it returns the payload.
func (r *raw) ok(op xs.Op, txID uint32, payload []byte) string {
	r.t.Helper()
	m := r.call(op, txID, payload)
	require.NotEqual(r.t, xs.OpError, m.Op, "%s %q = error %q", op, payload, m.Payload)
	return string(m.Payload)
}

// fail calls and requires an error reply; it returns the errno name.
func (r *raw) fail(op xs.Op, txID uint32, payload []byte) string {
	r.t.Helper()
	m := r.call(op, txID, payload)
	require.Equal(r.t, xs.OpError, m.Op, "%s %q = %q, want an error", op, payload, m.Payload)
	return strings.TrimSuffix(string(m.Payload), "\x00")
}

// z joins strings NUL-terminated, like a request payload.
func z(s ...string) []byte { return xs.JoinStrings(s...) }

// showPayload renders NULs as '|' like docs/misc/xenstore.txt.
func showPayload(p []byte) string { return strings.ReplaceAll(string(p), "\x00", "|") }

package xenstored

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xs"
)

// header builds a raw 16-byte header, so tests can announce lengths AppendMsg refuses.
func header(op xs.Op, reqID, txID, length uint32) []byte {
	b := make([]byte, xs.HeaderSize)
	binary.LittleEndian.PutUint32(b[0:], uint32(op))
	binary.LittleEndian.PutUint32(b[4:], reqID)
	binary.LittleEndian.PutUint32(b[8:], txID)
	binary.LittleEndian.PutUint32(b[12:], length)
	return b
}

func TestOversizedHeaderDisconnects(t *testing.T) {
	var logs testenv.Buffer
	s, path := start(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	other := dialRaw(t, path)
	r := dialRaw(t, path)
	assert.Equal(t, "Domain-0", r.ok(xs.OpRead, 0, z("/local/domain/0/name")), "before the bad frame")

	// Exactly 4096 is allowed.
	_, err := r.c.Write(append(header(xs.OpWrite, 1, 0, xs.PayloadMax), append([]byte("/max\x00"), bytes.Repeat([]byte{'v'}, xs.PayloadMax-5)...)...))
	require.NoError(t, err)
	m := r.recv()
	assert.Equal(t, "OK|", showPayload(m.Payload), "a 4096-byte WRITE")

	_, err = r.c.Write(header(xs.OpRead, 2, 0, xs.PayloadMax+1))
	require.NoError(t, err)
	n, err := io.Copy(io.Discard, r.r)
	assert.NoError(t, err, "the server closes the connection")
	assert.Zero(t, n, "no reply to an oversized frame")

	assert.Equal(t, "Domain-0", other.ok(xs.OpRead, 0, z("/local/domain/0/name")), "other clients go on")
	assert.Equal(t, uint64(1), s.Stats().Dropped, "Stats.Dropped")
	assert.Contains(t, logs.String(), "oversized frame", "the drop is logged")
}

func TestReplyTooBig(t *testing.T) {
	s, path := start(t, Config{})
	r := dialRaw(t, path)
	require.NoError(t, s.Write("/big", strings.Repeat("v", 4000)))
	// READ replies with the value alone, so 4000 bytes fit; GET_PERMS of many perms would not.
	perms := []xs.Perm{{Access: xs.AccessNone}}
	for i := range 600 {
		perms = append(perms, xs.Perm{DomID: uint32(10000 + i), Access: xs.AccessRead})
	}
	require.NoError(t, s.SetPerms("/big", perms))
	assert.Equal(t, "E2BIG", r.fail(xs.OpGetPerms, 0, z("/big")), "GET_PERMS of a list over 4096 bytes")
	assert.Len(t, r.ok(xs.OpRead, 0, z("/big")), 4000, "the connection stays usable")
}

// TestRandomFrames sends thousands of well-framed but random requests on one connection and
// checks every one gets exactly one reply and the server still works afterwards.
func TestRandomFrames(t *testing.T) {
	_, path := start(t, Config{})
	r := dialRaw(t, path)
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"/", "/a", "/a/b", "a", "@releaseDomain", "@x", "", "//", "/a/", "T", "F", "0", "5",
		"r0", "n5", "b", "tok", "/local/domain/0", "x y", "\xff", strings.Repeat("p", 3100)}
	for i := range 3000 {
		op := xs.Op(rng.IntN(30))
		if op == xs.OpWatchEvent || op == xs.OpError {
			op = xs.OpRead
		}
		var payload []byte
		for range rng.IntN(4) {
			payload = append(payload, pieces[rng.IntN(len(pieces))]...)
			if rng.IntN(5) > 0 {
				payload = append(payload, 0)
			}
		}
		if len(payload) > xs.PayloadMax {
			payload = payload[:xs.PayloadMax]
		}
		txID := []uint32{0, 0, 1, 2, 3, 1 << 31}[rng.IntN(6)]
		id := uint32(i + 1)
		b, err := xs.AppendMsg(nil, xs.Msg{Op: op, ReqID: id, TxID: txID, Payload: payload})
		require.NoError(t, err)
		_, err = r.c.Write(b)
		require.NoError(t, err)
		for {
			m := r.recv()
			if m.Op == xs.OpWatchEvent {
				continue
			}
			require.Equal(t, id, m.ReqID, "reply to frame %d (%s %q)", i, op, payload)
			require.LessOrEqual(t, len(m.Payload), xs.PayloadMax)
			break
		}
	}
	r.ok(xs.OpResetWatches, 0, z(""))
	r.ok(xs.OpWrite, 0, []byte("/after\x00ok"))
	assert.Equal(t, "ok", r.ok(xs.OpRead, 0, z("/after")), "the server still works")
}

// FuzzConn feeds arbitrary bytes to one connection: the server must not panic, and what it
// sends back must be well-formed frames.
func FuzzConn(f *testing.F) {
	seed := func(ms ...xs.Msg) []byte {
		var b []byte
		for _, m := range ms {
			b, _ = xs.AppendMsg(b, m)
		}
		return b
	}
	f.Add(seed(xs.Msg{Op: xs.OpRead, Payload: z("/local/domain/0/name")}))
	f.Add(seed(xs.Msg{Op: xs.OpWrite, Payload: []byte("/a/b\x00v")}, xs.Msg{Op: xs.OpRm, Payload: z("/a")}))
	f.Add(seed(xs.Msg{Op: xs.OpTransactionStart, Payload: z("")},
		xs.Msg{Op: xs.OpWrite, TxID: 1, Payload: []byte("/t\x00v")},
		xs.Msg{Op: xs.OpTransactionEnd, TxID: 1, Payload: z("T")}))
	f.Add(seed(xs.Msg{Op: xs.OpWatch, Payload: z("/", "t")}, xs.Msg{Op: xs.OpWrite, Payload: []byte("/w\x00")},
		xs.Msg{Op: xs.OpUnwatch, Payload: z("/", "t")}))
	f.Add(seed(xs.Msg{Op: xs.OpDirectoryPart, Payload: z("/", "-1")}, xs.Msg{Op: xs.OpSetPerms, Payload: z("/", "x")}))
	f.Add(header(xs.OpRead, 1, 0, xs.PayloadMax+1))
	f.Add(header(xs.OpRead, 1, 0, 10))
	f.Add([]byte{1, 2, 3})

	s := New(Config{})
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := socketPair(t)
		s.serveConn(server)
		defer client.Close()
		require.NoError(t, client.SetDeadline(time.Now().Add(testDeadline)))
		replies := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(client)
			replies <- b
		}()
		// Write errors are expected: the server hangs up on an oversized frame.
		client.Write(data)
		// Closing our side for writing ends the server's reading; it then writes what is
		// left and closes, which ends ReadAll.
		client.CloseWrite()
		out := <-replies
		for len(out) > 0 {
			m, n, err := xs.DecodeMsg(out)
			if errors.Is(err, xs.ErrShortFrame) {
				break // the pipe closed mid-frame
			}
			require.NoError(t, err, "server output %x", out)
			require.LessOrEqual(t, len(m.Payload), xs.PayloadMax)
			out = out[n:]
		}
	})
}

// socketPair returns two connected unix stream sockets (net.Pipe cannot half-close).
func socketPair(t *testing.T) (*net.UnixConn, net.Conn) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		conns[i], err = net.FileConn(f)
		f.Close()
		require.NoError(t, err)
	}
	return conns[0].(*net.UnixConn), conns[1]
}

func TestListenStaleSocket(t *testing.T) {
	dir := testenv.SocketDir(t)
	path := filepath.Join(dir, "xs.sock")

	// A socket file with nobody behind it is replaced.
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln, err = Listen(path)
	require.NoError(t, err, "Listen over a stale socket")

	// A live one is not.
	_, err = Listen(path)
	assert.ErrorContains(t, err, "already answering", "Listen over a live socket")
	ln.Close()

	// Nor a regular file.
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err = Listen(file)
	assert.ErrorContains(t, err, "not a socket", "Listen over a regular file")
}

func TestCloseEndsConnections(t *testing.T) {
	dir := testenv.SocketDir(t)
	ln, err := Listen(filepath.Join(dir, "xs.sock"))
	require.NoError(t, err)
	s := New(Config{})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()

	r := dialRaw(t, ln.Addr().String())
	r.ok(xs.OpWatch, 0, z("/", "t"))
	r.begin() // an open transaction must not keep Close waiting
	require.NoError(t, s.Close())
	select {
	case err := <-done:
		assert.NoError(t, err, "Serve after Close")
	case <-time.After(testDeadline):
		t.Fatal("Serve did not return after Close")
	}
	_, err = io.Copy(io.Discard, r.r)
	assert.NoError(t, err, "the client sees its connection end")
	assert.Zero(t, s.Stats().OpenConnections, "open connections after Close")
	assert.ErrorIs(t, s.Serve(ln), ErrServerClosed, "Serve after Close")

	// The store is still there for the in-process helpers.
	v, err := s.Read("/local/domain/0/name")
	require.NoError(t, err)
	assert.Equal(t, "Domain-0", v)
}

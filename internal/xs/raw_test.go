package xs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xs"
)

// The tests in this file drive the client against a scripted peer that speaks raw frames, to
// reach what a well-behaved xenstored never does: replies out of order, late, malformed, for
// unknown requests, or a connection dropped in the middle of a call.

// testTimeout bounds every test here, so that a bug hangs nothing.
const testTimeout = 20 * time.Second

// peer is the server's end of one connection.
type peer struct {
	rw io.ReadWriter
}

func (p peer) recv() (xs.Msg, error) { return xs.ReadMsg(p.rw) }

func (p peer) send(m xs.Msg) error {
	b, err := xs.AppendMsg(nil, m)
	if err != nil {
		return err
	}
	_, err = p.rw.Write(b)
	return err
}

// waitHangup reads until the client closes the connection; anything but a hang-up is an
// error.
func (p peer) waitHangup() error {
	m, err := p.recv()
	if isHangup(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("got %s %q, want the client to hang up", m.Op, m.Payload)
}

func isHangup(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE)
}

// reply answers req with op and the given strings, NUL-joined.
func (p peer) reply(req xs.Msg, payload []byte) error {
	return p.send(xs.Msg{Op: req.Op, ReqID: req.ReqID, TxID: req.TxID, Payload: payload})
}

func (p peer) fail(req xs.Msg, errno string) error {
	return p.send(xs.Msg{Op: xs.OpError, ReqID: req.ReqID, TxID: req.TxID, Payload: xs.JoinStrings(errno)})
}

// expect reads one request and checks its type.
func (p peer) expect(op xs.Op) (xs.Msg, error) {
	m, err := p.recv()
	if err != nil {
		return m, fmt.Errorf("waiting for %s: %w", op, err)
	}
	if m.Op != op {
		return m, fmt.Errorf("got %s %q, want %s", m.Op, m.Payload, op)
	}
	return m, nil
}

// ack reads one request, checks its type and answers OK.
func (p peer) ack(op xs.Op) error {
	m, err := p.expect(op)
	if err != nil {
		return err
	}
	return p.reply(m, []byte("OK\x00"))
}

// scripted starts a unix socket server that runs script on its first connection and
// returns the socket path and a function that waits for the script's result.
func scripted(t *testing.T, script func(p peer) error) (string, func() error) {
	t.Helper()
	path := filepath.Join(testenv.SocketDir(t), "xs.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		done <- script(peer{rw: c})
	}()
	wait := func() error {
		select {
		case err := <-done:
			return err
		case <-time.After(testTimeout):
			return errors.New("script did not finish")
		}
	}
	return path, wait
}

func dial(t *testing.T, path string) *xs.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := xs.Dial(ctx, path)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// testCtx ends with the test, or after testTimeout.
func testCtx(t *testing.T) context.Context { return testenv.Context(t, testTimeout) }

func TestRawRepliesOutOfOrderReachTheirCallers(t *testing.T) {
	const n = 8
	path, wait := scripted(t, func(p peer) error {
		var reqs []xs.Msg
		for range n {
			m, err := p.expect(xs.OpRead)
			if err != nil {
				return err
			}
			reqs = append(reqs, m)
		}
		for i := len(reqs) - 1; i >= 0; i-- { // newest first
			key := strings.TrimRight(string(reqs[i].Payload), "\x00")
			if err := p.reply(reqs[i], []byte("value of "+key)); err != nil {
				return err
			}
		}
		return nil
	})
	c := dial(t, path)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	got := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { got[i], errs[i] = c.Read(ctx, fmt.Sprintf("/k%d", i)) })
	}
	wg.Wait()
	require.NoError(t, wait())
	for i := range n {
		require.NoError(t, errs[i])
		assert.Equal(t, fmt.Sprintf("value of /k%d", i), got[i], "Read(/k%d)", i)
	}
}

func TestRawErrorReplies(t *testing.T) {
	tests := []struct {
		name  string
		errno string
		want  error
	}{
		{name: "ENOENT", errno: "ENOENT", want: xs.ErrNotFound},
		{name: "EACCES", errno: "EACCES", want: xs.ErrAccess},
		{name: "EQUOTA from oxenstored", errno: "EQUOTA", want: xs.ErrQuota},
		{name: "unknown name is EINVAL", errno: "EWHATEVER", want: xs.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, wait := scripted(t, func(p peer) error {
				m, err := p.expect(xs.OpRead)
				if err != nil {
					return err
				}
				return p.fail(m, tt.errno)
			})
			c := dial(t, path)
			_, err := c.Read(testCtx(t), "/a/b")
			require.NoError(t, wait())
			require.ErrorIs(t, err, tt.want, "Read = %v, want %v", err, tt.want)
			var xe *xs.Error
			require.ErrorAs(t, err, &xe)
			assert.Equal(t, xs.OpRead, xe.Op)
			assert.Equal(t, "/a/b", xe.Path)
			// The connection is still good after an error reply.
			assert.NotErrorIs(t, err, xs.ErrClosed)
		})
	}
}

// TestRawProtocolErrors: whatever the server does wrong, the pending call fails with an error
// wrapping ErrProtocol (or only ErrClosed for a plain hang-up), nothing panics, and every later
// call fails with ErrClosed.
func TestRawProtocolErrors(t *testing.T) {
	tests := []struct {
		name     string
		answer   func(p peer, req xs.Msg) error
		protocol bool // want ErrProtocol as well as ErrClosed
	}{
		{
			name: "reply with an unknown req_id",
			answer: func(p peer, req xs.Msg) error {
				return p.send(xs.Msg{Op: xs.OpRead, ReqID: req.ReqID + 1000, Payload: []byte("x")})
			},
			protocol: true,
		},
		{
			name: "reply with req_id 0 on a socket",
			answer: func(p peer, req xs.Msg) error {
				return p.send(xs.Msg{Op: xs.OpRead, ReqID: 0, Payload: []byte("x")})
			},
			protocol: true,
		},
		{
			name: "reply of the wrong type",
			answer: func(p peer, req xs.Msg) error {
				return p.send(xs.Msg{Op: xs.OpWrite, ReqID: req.ReqID, Payload: []byte("OK\x00")})
			},
			protocol: true,
		},
		{
			name: "header announcing 4097 bytes",
			answer: func(p peer, req xs.Msg) error {
				h := []byte{
					0x02, 0x00, 0x00, 0x00, // READ
					0x00, 0x00, 0x00, 0x00, // req_id, patched below
					0x00, 0x00, 0x00, 0x00, // tx_id
					0x01, 0x10, 0x00, 0x00, // len: 4097
				}
				h[4] = byte(req.ReqID)
				_, err := p.rw.Write(append(h, make([]byte, 4097)...))
				return err
			},
			protocol: true,
		},
		{
			name: "header announcing 4 GiB",
			answer: func(p peer, req xs.Msg) error {
				_, err := p.rw.Write(bytes.Repeat([]byte{0xff}, 64))
				return err
			},
			protocol: true,
		},
		{
			name: "watch event without a token",
			answer: func(p peer, req xs.Msg) error {
				return p.send(xs.Msg{Op: xs.OpWatchEvent, Payload: []byte("/a")})
			},
			protocol: true,
		},
		{
			name: "connection dropped mid-call",
			answer: func(p peer, req xs.Msg) error {
				return nil // the script returns and the connection is closed
			},
		},
		{
			name: "connection dropped mid-frame",
			answer: func(p peer, req xs.Msg) error {
				_, err := p.rw.Write([]byte{0x02, 0x00, 0x00, 0x00, 0x01})
				return err
			},
		},
		{
			name: "payload cut short by a hang-up",
			answer: func(p peer, req xs.Msg) error {
				h := []byte{0x02, 0, 0, 0, byte(req.ReqID), 0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 'a', 'b'}
				_, err := p.rw.Write(h)
				return err
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const waiting = 5
			path, wait := scripted(t, func(p peer) error {
				var first xs.Msg
				for i := range waiting {
					m, err := p.expect(xs.OpRead)
					if err != nil {
						return err
					}
					if i == 0 {
						first = m
					}
				}
				return tt.answer(p, first)
			})
			c := dial(t, path)
			ctx := testCtx(t)
			var wg sync.WaitGroup
			errs := make([]error, waiting)
			for i := range waiting {
				wg.Go(func() { _, errs[i] = c.Read(ctx, fmt.Sprintf("/k%d", i)) })
			}
			wg.Wait()
			require.NoError(t, wait())
			for i, err := range errs {
				require.ErrorIs(t, err, xs.ErrClosed, "call %d: Read = %v, want ErrClosed", i, err)
				if tt.protocol {
					assert.ErrorIs(t, err, xs.ErrProtocol, "call %d: Read = %v, want ErrProtocol", i, err)
				} else {
					assert.NotErrorIs(t, err, xs.ErrProtocol, "call %d: Read = %v, a hang-up is no protocol error", i, err)
				}
			}
			_, err := c.Read(ctx, "/later")
			assert.ErrorIs(t, err, xs.ErrClosed, "Read after the connection ended = %v, want ErrClosed", err)
			assert.ErrorIs(t, c.Close(), xs.ErrClosed, "Close of a dead client")
		})
	}
}

func TestRawCanceledCallDiscardsItsLateReply(t *testing.T) {
	got := make(chan struct{})
	release := make(chan struct{})
	path, wait := scripted(t, func(p peer) error {
		slow, err := p.expect(xs.OpRead)
		if err != nil {
			return err
		}
		close(got)
		<-release
		// The slow call's caller is gone; its reply must not reach the next caller.
		if err := p.reply(slow, []byte("late value")); err != nil {
			return err
		}
		next, err := p.expect(xs.OpRead)
		if err != nil {
			return err
		}
		return p.reply(next, []byte("right value"))
	})
	c := dial(t, path)
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(ctx, "/slow")
		errc <- err
	}()
	<-got
	cancel()
	err := <-errc
	require.ErrorIs(t, err, context.Canceled, "Read with a canceled context = %v", err)
	var xe *xs.Error
	require.ErrorAs(t, err, &xe)
	assert.Equal(t, "/slow", xe.Path)
	close(release)

	v, err := c.Read(testCtx(t), "/next")
	require.NoError(t, err)
	assert.Equal(t, "right value", v)
	require.NoError(t, wait())
	assert.Equal(t, uint64(1), c.Stats().LateReplies, "Stats().LateReplies")
}

func TestRawDeadlineBeforeSendSendsNothing(t *testing.T) {
	path, wait := scripted(t, func(p peer) error {
		m, err := p.expect(xs.OpRead)
		if err != nil {
			return err
		}
		if got := string(m.Payload); got != "/real\x00" {
			return fmt.Errorf("first request is READ %q, want /real", got)
		}
		return p.reply(m, []byte("v"))
	})
	c := dial(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Read(ctx, "/never")
	require.ErrorIs(t, err, context.Canceled)
	_, err = c.Read(testCtx(t), "/real")
	require.NoError(t, err)
	require.NoError(t, wait())
}

// TestRawRefusedBeforeSending: bad input is refused by the client, nothing reaches the wire.
func TestRawRefusedBeforeSending(t *testing.T) {
	path, wait := scripted(t, func(p peer) error {
		m, err := p.expect(xs.OpRead)
		if err != nil {
			return err
		}
		if got := string(m.Payload); got != "/sync\x00" {
			return fmt.Errorf("first request is %q, want READ /sync: something invalid was sent", got)
		}
		return p.reply(m, nil)
	})
	c := dial(t, path)
	ctx := testCtx(t)
	tests := []struct {
		name string
		call func() error
		want []error
	}{
		{"empty path", func() error { _, err := c.Read(ctx, ""); return err }, []error{xs.ErrBadPath}},
		{"bad character", func() error { return c.Write(ctx, "/a b", "v") }, []error{xs.ErrBadPath}},
		{"path too long", func() error { return c.Mkdir(ctx, "/"+strings.Repeat("a", xs.AbsPathMax)) }, []error{xs.ErrBadPath}},
		{"NUL in value", func() error { return c.Write(ctx, "/a", "x\x00y") }, []error{xs.ErrBadValue}},
		{"value over the payload limit", func() error { return c.Write(ctx, "/a", strings.Repeat("v", xs.PayloadMax-2)) }, []error{xs.ErrBadValue, xs.ErrTooBig}},
		{"no permissions", func() error { return c.SetPerms(ctx, "/a", nil) }, []error{xs.ErrBadValue}},
		{"bad access letter", func() error { return c.SetPerms(ctx, "/a", []xs.Perm{{DomID: 0, Access: 'x'}}) }, []error{xs.ErrBadValue}},
		{"NUL in token", func() error { _, err := c.Watch(ctx, "/a", "t\x00"); return err }, []error{xs.ErrBadValue}},
		{"bad watch path", func() error { _, err := c.Watch(ctx, "/a/", "t"); return err }, []error{xs.ErrBadPath}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var xe *xs.Error
			require.ErrorAs(t, err, &xe, "error %v is not an *xs.Error", err)
			for _, w := range tt.want {
				assert.ErrorIs(t, err, w, "%s: got %v, want %v", tt.name, err, w)
			}
		})
	}
	// The largest value that fits is accepted: path "/a" NUL value = PayloadMax.
	_, err := c.Read(ctx, "/sync")
	require.NoError(t, err)
	require.NoError(t, wait())
}

func TestRawWatchEventBeforeReplyAndDropOldest(t *testing.T) {
	const events = xs.WatchBuffer + 36
	path, wait := scripted(t, func(p peer) error {
		m, err := p.expect(xs.OpWatch)
		if err != nil {
			return err
		}
		parts := xs.SplitStrings(m.Payload)
		if len(parts) != 2 || parts[0] != "/w" || parts[1] != "tok" {
			return fmt.Errorf("WATCH payload %q, want /w NUL tok NUL", m.Payload)
		}
		// As through the xenbus device: the first event overtakes the reply.
		for i := range events {
			if err := p.send(xs.Msg{Op: xs.OpWatchEvent, Payload: xs.JoinStrings(fmt.Sprintf("/w/%d", i), "tok")}); err != nil {
				return err
			}
		}
		// An event for a token nobody holds is ignored.
		if err := p.send(xs.Msg{Op: xs.OpWatchEvent, Payload: xs.JoinStrings("/w", "other")}); err != nil {
			return err
		}
		if err := p.reply(m, []byte("OK\x00")); err != nil {
			return err
		}
		if err := p.ack(xs.OpUnwatch); err != nil {
			return err
		}
		return p.waitHangup()
	})
	c := dial(t, path)
	ctx := testCtx(t)
	w, err := c.Watch(ctx, "/w", "tok")
	require.NoError(t, err)
	assert.Equal(t, "/w", w.Path())
	assert.Equal(t, "tok", w.Token())

	// Nothing read yet: the client kept the newest WatchBuffer events.
	var got []string
	for range xs.WatchBuffer {
		ev := <-w.Events()
		assert.Equal(t, "tok", ev.Token)
		got = append(got, ev.Path)
	}
	assert.Equal(t, fmt.Sprintf("/w/%d", events-xs.WatchBuffer), got[0], "oldest kept event")
	assert.Equal(t, fmt.Sprintf("/w/%d", events-1), got[len(got)-1], "newest event")
	assert.Equal(t, uint64(events-xs.WatchBuffer), w.Dropped(), "Dropped()")
	assert.Equal(t, uint64(events-xs.WatchBuffer), c.Stats().EventsDropped, "Stats().EventsDropped")
	assert.Equal(t, uint64(1), c.Stats().EventsUnknown, "Stats().EventsUnknown")

	require.NoError(t, w.Close(ctx))
	_, open := <-w.Events()
	assert.False(t, open, "Events() still open after Close")
	assert.NoError(t, w.Err())
	assert.NoError(t, w.Close(ctx), "second Close")
	c.Close()
	require.NoError(t, wait())
}

func TestRawCloseFailsPendingAndClosesWatches(t *testing.T) {
	got := make(chan struct{})
	path, wait := scripted(t, func(p peer) error {
		if err := p.ack(xs.OpWatch); err != nil {
			return err
		}
		if _, err := p.expect(xs.OpRead); err != nil {
			return err
		}
		close(got)
		return p.waitHangup()
	})
	c := dial(t, path)
	ctx := testCtx(t)
	w, err := c.Watch(ctx, "/w", "")
	require.NoError(t, err)
	assert.NotEmpty(t, w.Token(), "made-up token")
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(ctx, "/pending")
		errc <- err
	}()
	<-got
	require.NoError(t, c.Close())
	err = <-errc
	require.ErrorIs(t, err, xs.ErrClosed)
	_, open := <-w.Events()
	assert.False(t, open, "Events() open after Client.Close")
	assert.ErrorIs(t, w.Err(), xs.ErrClosed)
	assert.NoError(t, w.Close(ctx), "Close of a watch whose client is closed")
	_, err = c.Begin(ctx)
	assert.ErrorIs(t, err, xs.ErrClosed)
	require.NoError(t, wait())
}

func TestRawDuplicateToken(t *testing.T) {
	path, wait := scripted(t, func(p peer) error {
		if err := p.ack(xs.OpWatch); err != nil {
			return err
		}
		return p.waitHangup()
	})
	c := dial(t, path)
	ctx := testCtx(t)
	_, err := c.Watch(ctx, "/a", "t")
	require.NoError(t, err)
	_, err = c.Watch(ctx, "/b", "t")
	require.ErrorIs(t, err, xs.ErrExist)
	c.Close()
	require.NoError(t, wait())
}

// TestRawUpdateRetries: Update reruns fn after an EAGAIN commit, aborts on an fn error, and
// gives up after UpdateAttempts conflicts.
func TestRawUpdateRetries(t *testing.T) {
	// txServer answers transactions: commit number i (from 1) fails with EAGAIN if again(i).
	txServer := func(again func(i int) bool, ends chan<- string) func(p peer) error {
		return func(p peer) error {
			nextTx, commits := uint32(100), 0
			for {
				m, err := p.recv()
				if isHangup(err) {
					return nil
				}
				if err != nil {
					return err
				}
				switch m.Op {
				case xs.OpTransactionStart:
					if m.TxID != 0 {
						return fmt.Errorf("TRANSACTION_START with tx_id %d", m.TxID)
					}
					nextTx++
					err = p.reply(m, xs.JoinStrings(fmt.Sprint(nextTx)))
				case xs.OpRead:
					if m.TxID != nextTx {
						return fmt.Errorf("READ in tx %d, want %d", m.TxID, nextTx)
					}
					err = p.reply(m, []byte("1"))
				case xs.OpWrite:
					err = p.reply(m, []byte("OK\x00"))
				case xs.OpTransactionEnd:
					how := strings.TrimRight(string(m.Payload), "\x00")
					ends <- fmt.Sprintf("%d:%s", m.TxID, how)
					if how == "T" {
						commits++
						if again(commits) {
							err = p.fail(m, "EAGAIN")
							break
						}
					}
					err = p.reply(m, []byte("OK\x00"))
				default:
					return fmt.Errorf("unexpected %s", m.Op)
				}
				if isHangup(err) {
					return nil // the client closed while the reply was on its way
				}
				if err != nil {
					return err
				}
			}
		}
	}
	incr := func(ctx context.Context, calls *int) func(tx *xs.Tx) error {
		return func(tx *xs.Tx) error {
			*calls++
			v, err := tx.Read(ctx, "/n")
			if err != nil {
				return err
			}
			return tx.Write(ctx, "/n", v+"1")
		}
	}

	t.Run("conflict then success", func(t *testing.T) {
		ends := make(chan string, 16)
		path, wait := scripted(t, txServer(func(i int) bool { return i == 1 }, ends))
		c := dial(t, path)
		calls := 0
		require.NoError(t, c.Update(testCtx(t), incr(testCtx(t), &calls)))
		assert.Equal(t, 2, calls, "fn runs")
		assert.Equal(t, uint64(1), c.Stats().Retries, "Stats().Retries")
		assert.Equal(t, "101:T", <-ends)
		assert.Equal(t, "102:T", <-ends)
		c.Close()
		require.NoError(t, wait())
	})
	t.Run("fn error aborts", func(t *testing.T) {
		ends := make(chan string, 16)
		path, wait := scripted(t, txServer(func(int) bool { return false }, ends))
		c := dial(t, path)
		boom := errors.New("boom")
		var seen *xs.Tx
		err := c.Update(testCtx(t), func(tx *xs.Tx) error { seen = tx; return boom })
		require.ErrorIs(t, err, boom)
		assert.Equal(t, "101:F", <-ends, "transaction end")
		_, err = seen.Read(testCtx(t), "/n")
		assert.ErrorIs(t, err, xs.ErrTxDone, "Read on an aborted transaction")
		c.Close()
		require.NoError(t, wait())
	})
	t.Run("gives up", func(t *testing.T) {
		ends := make(chan string, 2*xs.UpdateAttempts)
		path, wait := scripted(t, txServer(func(int) bool { return true }, ends))
		c := dial(t, path)
		calls := 0
		err := c.Update(testCtx(t), incr(testCtx(t), &calls))
		require.ErrorIs(t, err, xs.ErrAgain)
		assert.Equal(t, xs.UpdateAttempts, calls, "fn runs")
		c.Close()
		require.NoError(t, wait())
	})
}

func TestRawCanceledBeginEndsTheLateTransaction(t *testing.T) {
	got := make(chan struct{})
	release := make(chan struct{})
	ended := make(chan string, 1)
	path, wait := scripted(t, func(p peer) error {
		m, err := p.expect(xs.OpTransactionStart)
		if err != nil {
			return err
		}
		close(got)
		<-release
		if err := p.reply(m, xs.JoinStrings("77")); err != nil {
			return err
		}
		m, err = p.expect(xs.OpTransactionEnd)
		if err != nil {
			return err
		}
		ended <- fmt.Sprintf("%d:%s", m.TxID, strings.TrimRight(string(m.Payload), "\x00"))
		return p.reply(m, []byte("OK\x00"))
	})
	c := dial(t, path)
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Begin(ctx)
		errc <- err
	}()
	<-got
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	close(release)
	require.NoError(t, wait())
	assert.Equal(t, "77:F", <-ended, "the late transaction is aborted")
}

func TestRawMalformedTransactionID(t *testing.T) {
	path, wait := scripted(t, func(p peer) error {
		m, err := p.expect(xs.OpTransactionStart)
		if err != nil {
			return err
		}
		return p.reply(m, xs.JoinStrings("not-a-number"))
	})
	c := dial(t, path)
	_, err := c.Begin(testCtx(t))
	require.ErrorIs(t, err, xs.ErrProtocol)
	require.ErrorIs(t, err, xs.ErrClosed)
	require.NoError(t, wait())
}

func TestDialErrors(t *testing.T) {
	ctx := testCtx(t)
	missing := filepath.Join(testenv.SocketDir(t), "nothing-here")
	_, err := xs.Dial(ctx, missing)
	require.ErrorIs(t, err, fs.ErrNotExist)
	assert.Contains(t, err.Error(), "XENSTORED_PATH", "the error says how to point elsewhere")

	// A socket nobody listens on.
	path := filepath.Join(testenv.SocketDir(t), "dead.sock")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	_, err = xs.Dial(ctx, path)
	require.Error(t, err)
}

func TestDefaultPath(t *testing.T) {
	t.Setenv("XENSTORED_PATH", "/tmp/some/socket")
	assert.Equal(t, "/tmp/some/socket", xs.DefaultPath())
	t.Setenv("XENSTORED_PATH", "")
	want := xs.DefaultDevicePath
	if _, err := os.Stat(xs.DefaultSocketPath); err == nil {
		want = xs.DefaultSocketPath
	}
	assert.Equal(t, want, xs.DefaultPath())
}

// openPTY returns the master of a new pseudo-terminal in raw mode and the slave's path. A
// slave is a character device, not a socket, so Dial opens it the way it opens
// /dev/xen/xenbus.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	rc, err := m.SyscallConn()
	require.NoError(t, err)
	var n int
	var ioErr error
	require.NoError(t, rc.Control(func(fd uintptr) {
		if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr != nil {
			return
		}
		if n, ioErr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN); ioErr != nil {
			return
		}
		// Raw mode, set through the master: bytes pass unchanged, NULs included.
		var tio *unix.Termios
		if tio, ioErr = unix.IoctlGetTermios(int(fd), unix.TCGETS); ioErr != nil {
			return
		}
		tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		tio.Oflag &^= unix.OPOST
		tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		tio.Cflag &^= unix.CSIZE | unix.PARENB
		tio.Cflag |= unix.CS8
		tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
		ioErr = unix.IoctlSetTermios(int(fd), unix.TCSETS, tio)
	}))
	require.NoError(t, ioErr)
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

// TestDeviceInOrderReplies: through a character device, replies with req_id 0 (what Linux
// before 4.11 sends for WATCH and UNWATCH) go to the oldest pending call, and an event that
// overtakes the WATCH reply is delivered.
func TestDeviceInOrderReplies(t *testing.T) {
	master, slave := openPTY(t)
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			p := peer{rw: master}
			if _, err := p.expect(xs.OpWatch); err != nil {
				return err
			}
			if err := p.send(xs.Msg{Op: xs.OpWatchEvent, Payload: xs.JoinStrings("/w", "tok")}); err != nil {
				return err
			}
			if err := p.send(xs.Msg{Op: xs.OpWatch, ReqID: 0, Payload: []byte("OK\x00")}); err != nil {
				return err
			}
			m, err := p.expect(xs.OpRead)
			if err != nil {
				return err
			}
			return p.reply(m, []byte("v")) // a kernel from 4.11 on echoes the req_id
		}()
	}()
	c := dial(t, slave)
	ctx := testCtx(t)
	w, err := c.Watch(ctx, "/w", "tok")
	require.NoError(t, err)
	assert.Equal(t, xs.WatchEvent{Path: "/w", Token: "tok"}, <-w.Events())
	v, err := c.Read(ctx, "/r")
	require.NoError(t, err)
	assert.Equal(t, "v", v)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatal("device script did not finish")
	}
}

// TestRawContextInterruptsBlockedWrite: a server that stops reading fills the socket; calls
// blocked writing or waiting return when their context ends instead of hanging.
func TestRawContextInterruptsBlockedWrite(t *testing.T) {
	stop := make(chan struct{})
	path, wait := scripted(t, func(p peer) error {
		<-stop // never read
		return nil
	})
	c := dial(t, path)
	ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
	defer cancel()
	value := strings.Repeat("v", 4000)
	const callers = 200 // 800 KB: more than a unix socket buffers
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() { errs[i] = c.Write(ctx, fmt.Sprintf("/big/%d", i), value) })
	}
	wg.Wait()
	close(stop)
	require.NoError(t, wait())
	for i, err := range errs {
		ok := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, xs.ErrClosed)
		assert.True(t, ok, "call %d: Write = %v, want DeadlineExceeded or ErrClosed", i, err)
	}
}

package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
)

// testCtx bounds a test so that it always stops by itself.
func testCtx(t *testing.T) context.Context { return testenv.Context(t, 10*time.Second) }

// dial connects to path and closes the client at the end of the test.
func dial(t *testing.T, ctx context.Context, path string) *Client {
	t.Helper()
	c, err := Dial(ctx, path)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestDialEventBeforeCapabilitiesReply(t *testing.T) {
	ctx := testCtx(t)
	path := startScript(t, func(p *peer) error {
		if err := p.send(greeting72); err != nil {
			return err
		}
		r, err := p.expect("qmp_capabilities")
		if err != nil {
			return err
		}
		// QEMU does not send events before negotiation ends, but a proxy (vchan-socket-proxy)
		// or another server might; the client must not take it for the reply.
		if err := p.send(`{"timestamp": {"seconds": 1795830926, "microseconds": 406670}, "event": "DEVICE_TRAY_MOVED", "data": {"device": "ide-5632", "tray-open": true, "id": "ide-5632"}}`); err != nil {
			return err
		}
		if err := p.reply(r, `{}`); err != nil {
			return err
		}
		r, err = p.expect("query-version")
		if err != nil {
			return err
		}
		return p.reply(r, `{"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}`)
	})
	c := dial(t, ctx, path)
	assert.Equal(t, Version{Major: 7, Minor: 2, Micro: 0, Package: "Debian 1:7.2+dfsg-7"}, c.Version())
	assert.Equal(t, []string{"oob"}, c.Capabilities())

	v, err := c.QueryVersion(ctx)
	require.NoError(t, err)
	assert.Equal(t, c.Version(), v)

	select {
	case ev := <-c.Events():
		assert.Equal(t, EventDeviceTrayMoved, ev.Name)
		assert.Equal(t, time.Unix(1795830926, 406670000), ev.Time)
		var tm TrayMoved
		require.NoError(t, ev.DecodeData(&tm))
		assert.Equal(t, TrayMoved{Device: "ide-5632", ID: "ide-5632", TrayOpen: true}, tm)
	default:
		t.Fatal("Events() is empty, want the DEVICE_TRAY_MOVED sent before the capabilities reply")
	}
}

func TestDialErrors(t *testing.T) {
	tests := []struct {
		name    string
		script  func(p *peer) error
		timeout time.Duration
		want    []error // errors.Is must hold for each
		wantMsg string
	}{
		{
			name: "event before greeting",
			script: func(p *peer) error {
				return p.send(`{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 0}}`)
			},
			want:    []error{ErrProtocol},
			wantMsg: "expected a greeting, got event",
		},
		{
			name:    "greeting not JSON",
			script:  func(p *peer) error { return p.send(`QEMU 7.2.0 monitor - type 'help' for more information`) },
			want:    []error{ErrProtocol},
			wantMsg: "not JSON",
		},
		{
			name:    "greeting without version",
			script:  func(p *peer) error { return p.send(`{"QMP": {"capabilities": []}}`) },
			want:    []error{ErrProtocol},
			wantMsg: "lacks version",
		},
		{
			name:   "closed before greeting",
			script: func(p *peer) error { return p.conn.Close() },
			want:   []error{io.EOF},
		},
		{
			name: "no greeting before the deadline",
			script: func(p *peer) error {
				return p.expectHangUp() // the client gives up
			},
			timeout: 50 * time.Millisecond,
			want:    []error{context.DeadlineExceeded},
		},
		{
			name: "capabilities refused",
			script: func(p *peer) error {
				if err := p.send(greeting72); err != nil {
					return err
				}
				r, err := p.expect("qmp_capabilities")
				if err != nil {
					return err
				}
				return p.replyError(r, "CommandNotFound", "Capabilities negotiation is already complete, command ignored")
			},
			want:    []error{ErrCommandNotFound},
			wantMsg: "qmp_capabilities: CommandNotFound: Capabilities negotiation is already complete",
		},
		{
			name: "closed during negotiation",
			script: func(p *peer) error {
				if err := p.send(greeting72); err != nil {
					return err
				}
				if _, err := p.expect("qmp_capabilities"); err != nil {
					return err
				}
				return p.conn.Close()
			},
			want: []error{ErrClosed, io.EOF},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := startScript(t, tt.script)
			ctx := testCtx(t)
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			c, err := Dial(ctx, path)
			if err == nil {
				c.Close()
				t.Fatalf("Dial(%s) = nil error, want %v", tt.name, tt.want)
			}
			for _, w := range tt.want {
				assert.ErrorIs(t, err, w, "Dial() = %v, want errors.Is %v", err, w)
			}
			assert.Contains(t, err.Error(), tt.wantMsg)
			assert.Contains(t, err.Error(), path, "the error names the socket")
		})
	}
}

// TestBrokenStream sends, in answer to a command, something the client cannot route. The call
// and every later one must fail with ErrClosed wrapping ErrProtocol, and the events channel
// must close.
func TestBrokenStream(t *testing.T) {
	tests := []struct {
		name    string
		answer  func(r req) string
		wantMsg string
	}{
		{"unknown id", func(req) string { return `{"return": {}, "id": "cdswap-999"}` }, `id "cdswap-999", which is not pending`},
		{"numeric id", func(req) string { return `{"return": {}, "id": 7}` }, "id 7, which this client never sent"},
		{"not JSON", func(req) string { return `{"return": {}, "id": ` }, "not JSON"},
		{"garbage", func(req) string { return "\x00\xff garbage" }, "not JSON"},
		{"JSON array", func(req) string { return `[1, 2]` }, "not a JSON object"},
		{"JSON null", func(req) string { return `null` }, "not a JSON object"},
		{"JSON string", func(req) string { return `"hello"` }, "not a JSON object"},
		{"trailing data", func(r req) string { return fmt.Sprintf(`{"return": {}, "id": %s} {}`, r.ID) }, "not JSON"},
		{"unknown message", func(r req) string { return fmt.Sprintf(`{"id": %s}`, r.ID) }, `none of "QMP", "return", "error", "event"`},
		{"return and error", func(r req) string {
			return fmt.Sprintf(`{"return": {}, "error": {"class": "GenericError", "desc": "x"}, "id": %s}`, r.ID)
		}, "more than one"},
		{"error without class", func(r req) string { return fmt.Sprintf(`{"error": {"desc": "x"}, "id": %s}`, r.ID) }, `lacks "class"`},
		{"event name not a string", func(req) string { return `{"event": 1}` }, "event name"},
		// What QEMU sends when it cannot parse a request: no id, so no call to give it to.
		{"parse error without id", func(req) string {
			return `{"error": {"class": "GenericError", "desc": "JSON parse error, invalid keyword 'garbage'"}}`
		}, "error reply (GenericError: JSON parse error, invalid keyword 'garbage') without an id"},
		{"return without id", func(req) string { return `{"return": {}}` }, "reply without an id"},
		{"second greeting", func(req) string { return greeting72 }, "greeting after negotiation"},
		{"unterminated line at EOF", func(req) string { return `{"return": {}` }, "connection ended inside a message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			path := startScript(t, func(p *peer) error {
				r, err := p.handshakeThen("query-status")
				if err != nil {
					return err
				}
				a := tt.answer(r)
				if tt.name == "unterminated line at EOF" {
					if _, err := p.conn.Write([]byte(a)); err != nil {
						return err
					}
					return p.conn.Close()
				}
				if err := p.send(a); err != nil {
					return err
				}
				return p.expectHangUp()
			})
			c := dial(t, ctx, path)
			_, err := c.QueryStatus(ctx)
			require.Error(t, err, "QueryStatus() after %s", tt.name)
			assert.ErrorIs(t, err, ErrClosed)
			assert.ErrorIs(t, err, ErrProtocol)
			assert.Contains(t, err.Error(), tt.wantMsg)
			assert.False(t, errors.Is(err, ErrGenericError), "a protocol error must not look like a QEMU error reply: %v", err)

			_, err = c.QueryStatus(ctx)
			assert.ErrorIs(t, err, ErrClosed, "a call after the connection broke")
			select {
			case <-c.Done():
			case <-ctx.Done():
				t.Fatal("Done() not closed after the connection broke")
			}
			_, open := <-c.Events()
			assert.False(t, open, "Events() still open after the connection ended")
		})
	}
}

func TestLongLine(t *testing.T) {
	ctx := testCtx(t)
	big := strings.Repeat("x", 1<<20) // 1 MiB, well past bufio.Scanner's 64 KiB default
	path := startScript(t, func(p *peer) error {
		r, err := p.handshakeThen("query-block")
		if err != nil {
			return err
		}
		if err := p.reply(r, fmt.Sprintf(`[{"device": "ide-5632", "inserted": {"file": %q, "drv": "raw", "ro": true}}]`, big)); err != nil {
			return err
		}
		r, err = p.expect("query-status")
		if err != nil {
			return err
		}
		return p.reply(r, `{"status": "running", "singlestep": false, "running": true}`)
	})
	c := dial(t, ctx, path)
	b, err := c.QueryBlock(ctx)
	require.NoError(t, err)
	require.Len(t, b, 1)
	require.NotNil(t, b[0].Inserted)
	assert.Equal(t, len(big), len(b[0].Inserted.File), "len(QueryBlock()[0].Inserted.File)")
	s, err := c.QueryStatus(ctx)
	require.NoError(t, err, "the stream must still be in step after the long line")
	assert.Equal(t, StatusInfo{Running: true, Status: "running"}, s)
}

func TestConnectionDropFailsPending(t *testing.T) {
	const n = 8
	ctx := testCtx(t)
	path := startScript(t, func(p *peer) error {
		if err := p.handshake(); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if _, err := p.expect("query-status"); err != nil {
				return err
			}
		}
		return p.conn.Close() // QEMU died with n commands unanswered
	})
	c := dial(t, ctx, path)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = c.QueryStatus(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		assert.ErrorIs(t, err, ErrClosed, "call %d", i)
		assert.ErrorIs(t, err, io.EOF, "call %d: the cause is kept", i)
		assert.NotErrorIs(t, err, ErrProtocol, "call %d", i)
	}
	_, err := c.QueryStatus(ctx)
	assert.ErrorIs(t, err, ErrClosed, "a call after the drop")
	assert.ErrorIs(t, c.Err(), ErrClosed)
	_, open := <-c.Events()
	assert.False(t, open, "Events() still open after the drop")
	assert.NoError(t, c.Close())
}

func TestLateReplyDiscarded(t *testing.T) {
	ctx := testCtx(t)
	path := startScript(t, func(p *peer) error {
		slow, err := p.handshakeThen("query-block")
		if err != nil {
			return err
		}
		// The client gives up on query-block and sends query-status; only then does the
		// late query-block reply come, followed by an event and the query-status reply.
		fast, err := p.expect("query-status")
		if err != nil {
			return err
		}
		if err := p.reply(slow, `[]`); err != nil {
			return err
		}
		if err := p.send(`{"event": "RESUME", "timestamp": {"seconds": 2, "microseconds": 5}}`); err != nil {
			return err
		}
		return p.reply(fast, `{"status": "paused", "singlestep": false, "running": false}`)
	})
	c := dial(t, ctx, path)

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err := c.QueryBlock(short)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "QueryBlock() with a deadline the server misses")

	s, err := c.QueryStatus(ctx)
	require.NoError(t, err)
	assert.Equal(t, StatusInfo{Running: false, Status: "paused"}, s, "QueryStatus() got another call's reply")
	assert.Equal(t, Stats{LateReplies: 1}, c.Stats())
	ev := <-c.Events()
	assert.Equal(t, "RESUME", ev.Name)
	assert.Nil(t, c.Err())
}

func TestErrorClasses(t *testing.T) {
	sentinels := []error{ErrGenericError, ErrCommandNotFound, ErrDeviceNotActive, ErrDeviceNotFound, ErrKVMMissingCap}
	tests := []struct {
		name  string
		class string
		desc  string
		want  error // nil: no sentinel matches
	}{
		{"generic", "GenericError", "File descriptor named 'fdset-id:77' not found", ErrGenericError},
		{"command not found", "CommandNotFound", "The command no-such-cmd has not been found", ErrCommandNotFound},
		{"device not active", "DeviceNotActive", "No balloon device has been activated", ErrDeviceNotActive},
		{"device not found", "DeviceNotFound", "Device 'nope' not found", ErrDeviceNotFound},
		{"kvm missing cap", "KVMMissingCap", "Using KVM without synic", ErrKVMMissingCap},
		{"unknown class", "FutureClass", "something new", nil},
		{"case differs", "devicenotfound", "x", nil},
	}
	ctx := testCtx(t)
	path := startScript(t, func(p *peer) error {
		if err := p.handshake(); err != nil {
			return err
		}
		for _, tt := range tests {
			r, err := p.expect("eject")
			if err != nil {
				return err
			}
			if err := p.replyError(r, tt.class, tt.desc); err != nil {
				return err
			}
		}
		return nil
	})
	c := dial(t, ctx, path)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Eject(ctx, "nope", false)
			var qe *Error
			require.ErrorAs(t, err, &qe)
			assert.Equal(t, Error{Class: tt.class, Desc: tt.desc}, *qe)
			assert.Equal(t, fmt.Sprintf("qmp eject: %s: %s", tt.class, tt.desc), err.Error())
			for _, s := range sentinels {
				assert.Equal(t, errors.Is(s, tt.want), errors.Is(err, s), "errors.Is(%v, %v)", err, s)
			}
			assert.NotErrorIs(t, err, ErrClosed)
		})
	}
	assert.Nil(t, c.Err(), "error replies must not end the connection")
}

func TestExecuteWithFile(t *testing.T) {
	ctx := testCtx(t)
	medium := filepath.Join(t.TempDir(), "medium.raw")
	require.NoError(t, os.WriteFile(medium, make([]byte, 4096), 0o644))
	f, err := os.Open(medium)
	require.NoError(t, err)
	defer f.Close()
	var want syscall.Stat_t
	require.NoError(t, syscall.Fstat(int(f.Fd()), &want))

	path := startScript(t, func(p *peer) error {
		r, err := p.handshakeThen("add-fd")
		if err != nil {
			return err
		}
		defer closeFDs(r.fds)
		if len(r.fds) != 1 {
			return p.replyError(r, "GenericError", "No file descriptor supplied via SCM_RIGHTS")
		}
		var got syscall.Stat_t
		if err := syscall.Fstat(r.fds[0], &got); err != nil {
			return err
		}
		if got.Ino != want.Ino || got.Dev != want.Dev {
			return p.replyError(r, "GenericError", "wrong file")
		}
		if string(r.Arguments) != `{"fdset-id":3,"opaque":"raw:`+medium+`"}` {
			return p.replyError(r, "GenericError", "arguments "+string(r.Arguments))
		}
		return p.reply(r, `{"fd": 12, "fdset-id": 3}`)
	})
	c := dial(t, ctx, path)
	set := int64(3)
	info, err := c.AddFD(ctx, f, &set, "raw:"+medium)
	require.NoError(t, err)
	assert.Equal(t, AddFDInfo{FdsetID: 3, FD: 12}, info)

	_, err = c.AddFD(ctx, nil, nil, "")
	assert.ErrorContains(t, err, "no file to pass")
}

// TestFileCommandsSerialised checks that a second fd-carrying command waits for the reply to
// the first (QEMU keeps one passed fd per connection), while other commands go on.
func TestFileCommandsSerialised(t *testing.T) {
	ctx := testCtx(t)
	f, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer f.Close()
	received := make(chan string, 8)
	gotFirst := make(chan struct{})
	path := startScript(t, func(p *peer) error {
		first, err := p.handshakeThen("add-fd")
		close(gotFirst)
		if err != nil {
			return err
		}
		closeFDs(first.fds)
		// Until first is answered, only commands without a file may arrive.
		for {
			r, err := p.recv()
			if err != nil {
				return err
			}
			closeFDs(r.fds)
			received <- r.Execute
			if r.Execute == "query-status" {
				if err := p.reply(r, `{"status": "running", "singlestep": false, "running": true}`); err != nil {
					return err
				}
				continue
			}
			if r.Execute != "stop" {
				return fmt.Errorf("got %s while add-fd was unanswered: %w", r.Execute, errScript)
			}
			if err := p.reply(first, `{"fd": 12, "fdset-id": 0}`); err != nil {
				return err
			}
			if err := p.reply(r, `{}`); err != nil {
				return err
			}
			break
		}
		second, err := p.expect("add-fd")
		if err != nil {
			return err
		}
		closeFDs(second.fds)
		return p.reply(second, `{"fd": 13, "fdset-id": 1}`)
	})
	c := dial(t, ctx, path)

	firstDone := make(chan error, 1)
	go func() {
		_, err := c.AddFD(ctx, f, nil, "")
		firstDone <- err
	}()
	<-gotFirst
	_, err = c.QueryStatus(ctx)
	require.NoError(t, err, "a command without a file while add-fd is unanswered")

	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = c.AddFD(short, f, nil, "")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "second AddFD while the first is unanswered")

	require.NoError(t, c.Execute(ctx, "stop", nil, nil), "stop releases the first add-fd")
	require.NoError(t, <-firstDone)
	info, err := c.AddFD(ctx, f, nil, "")
	require.NoError(t, err)
	assert.Equal(t, AddFDInfo{FdsetID: 1, FD: 13}, info)
	close(received)
	var got []string
	for s := range received {
		got = append(got, s)
	}
	assert.Equal(t, []string{"query-status", "stop"}, got, "commands seen while add-fd was unanswered")
}

func TestEventsDropOldest(t *testing.T) {
	const sent, buffer = 10, 4
	ctx := testCtx(t)
	path := startScript(t, func(p *peer) error {
		r, err := p.handshakeThen("query-status")
		if err != nil {
			return err
		}
		for i := range sent {
			if err := p.send(fmt.Sprintf(`{"event": "E%d", "data": {"n": %d}, "timestamp": {"seconds": 1, "microseconds": %d}}`, i, i, i)); err != nil {
				return err
			}
		}
		return p.reply(r, `{"status": "running", "singlestep": false, "running": true}`)
	})
	c, err := Dialer{EventBuffer: buffer}.Dial(ctx, path)
	require.NoError(t, err)
	defer c.Close()
	// The reader handles messages in order, so every event is queued before the reply.
	_, err = c.QueryStatus(ctx)
	require.NoError(t, err)
	assert.Equal(t, Stats{EventsDropped: sent - buffer}, c.Stats())
	for i := sent - buffer; i < sent; i++ {
		ev := <-c.Events()
		assert.Equal(t, fmt.Sprintf("E%d", i), ev.Name, "the newest events are kept")
		assert.JSONEq(t, fmt.Sprintf(`{"n": %d}`, i), string(ev.Data))
	}
}

func TestCloseFailsPending(t *testing.T) {
	ctx := testCtx(t)
	got := make(chan struct{})
	path := startScript(t, func(p *peer) error {
		if _, err := p.handshakeThen("query-block"); err != nil {
			return err
		}
		close(got)
		return p.expectHangUp() // at Close
	})
	c := dial(t, ctx, path)
	errc := make(chan error, 1)
	go func() {
		_, err := c.QueryBlock(ctx)
		errc <- err
	}()
	<-got
	require.NoError(t, c.Close())
	err := <-errc
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorContains(t, err, "closed by Close")
	assert.NoError(t, c.Close(), "second Close")
	err = c.Execute(ctx, "query-block", nil, nil)
	assert.ErrorIs(t, err, ErrClosed)
}

// TestConcurrentCalls answers many concurrent calls in reverse order; each must get its own.
func TestConcurrentCalls(t *testing.T) {
	const n = 50
	ctx := testCtx(t)
	path := startScript(t, func(p *peer) error {
		if err := p.handshake(); err != nil {
			return err
		}
		var reqs []req
		for range n {
			r, err := p.expect("echo")
			if err != nil {
				return err
			}
			reqs = append(reqs, r)
		}
		for i := len(reqs) - 1; i >= 0; i-- {
			if err := p.reply(reqs[i], string(reqs[i].Arguments)); err != nil {
				return err
			}
		}
		return nil
	})
	c := dial(t, ctx, path)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var got struct{ N int }
			err := c.Execute(ctx, "echo", map[string]int{"N": i}, &got)
			assert.NoError(t, err)
			assert.Equal(t, i, got.N, "Execute(echo %d) got another call's reply", i)
		})
	}
	wg.Wait()
}

// TestArguments checks what the typed helpers put on the wire, by QEMU version.
func TestArguments(t *testing.T) {
	fdset, fd := int64(4), int64(12)
	tests := []struct {
		name    string
		version Version
		call    func(ctx context.Context, c *Client) error
		command string
		args    string // "" = no arguments member
	}{
		{"eject 7.2", Version{Major: 7, Minor: 2}, func(ctx context.Context, c *Client) error { return c.Eject(ctx, "ide-5632", false) }, "eject", `{"id":"ide-5632"}`},
		{"eject force", Version{Major: 2, Minor: 8}, func(ctx context.Context, c *Client) error { return c.Eject(ctx, "ide-5632", true) }, "eject", `{"force":true,"id":"ide-5632"}`},
		{"eject 2.7", Version{Major: 2, Minor: 7, Micro: 1}, func(ctx context.Context, c *Client) error { return c.Eject(ctx, "ide-5632", false) }, "eject", `{"device":"ide-5632"}`},
		{"change medium 7.2", Version{Major: 7, Minor: 2}, func(ctx context.Context, c *Client) error {
			return c.BlockdevChangeMedium(ctx, ChangeMediumArgs{ID: "ide-5632", Filename: "/dev/fdset/4", Format: "host_device"})
		}, "blockdev-change-medium", `{"filename":"/dev/fdset/4","format":"host_device","id":"ide-5632"}`},
		{"change medium all", Version{Major: 7, Minor: 1}, func(ctx context.Context, c *Client) error {
			return c.BlockdevChangeMedium(ctx, ChangeMediumArgs{ID: "ide-5632", Filename: "/x.iso", Format: "raw", ReadOnlyMode: "retain", Force: true})
		}, "blockdev-change-medium", `{"filename":"/x.iso","force":true,"format":"raw","id":"ide-5632","read-only-mode":"retain"}`},
		{"change medium 2.5", Version{Major: 2, Minor: 5}, func(ctx context.Context, c *Client) error {
			return c.BlockdevChangeMedium(ctx, ChangeMediumArgs{ID: "ide-5632", Filename: "/x.iso"})
		}, "blockdev-change-medium", `{"device":"ide-5632","filename":"/x.iso"}`},
		{"remove-fd set", Version{Major: 7, Minor: 2}, func(ctx context.Context, c *Client) error { return c.RemoveFD(ctx, fdset, nil) }, "remove-fd", `{"fdset-id":4}`},
		{"remove-fd one", Version{Major: 7, Minor: 2}, func(ctx context.Context, c *Client) error { return c.RemoveFD(ctx, fdset, &fd) }, "remove-fd", `{"fd":12,"fdset-id":4}`},
		{"query-fdsets", Version{Major: 7, Minor: 2}, func(ctx context.Context, c *Client) error { _, err := c.QueryFdsets(ctx); return err }, "query-fdsets", ""},
		{"struct args", Version{Major: 7, Minor: 2}, func(ctx context.Context, c *Client) error {
			return c.Execute(ctx, "x", struct {
				A string `json:"a"`
			}{"b"}, nil)
		}, "x", `{"a":"b"}`},
		{"nil map args", Version{Major: 7, Minor: 2}, func(ctx context.Context, c *Client) error { return c.Execute(ctx, "x", map[string]int(nil), nil) }, "x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			path := startScript(t, func(p *peer) error {
				if err := p.handshakeAs(greetingFor(tt.version)); err != nil {
					return err
				}
				r, err := p.expect(tt.command)
				if err != nil {
					return err
				}
				if string(r.Arguments) != tt.args {
					return fmt.Errorf("%s arguments = %s, want %s: %w", tt.command, r.Arguments, tt.args, errScript)
				}
				if !strings.HasSuffix(string(r.raw), "}\r\n") {
					return fmt.Errorf("command line %q does not end in CRLF: %w", r.raw, errScript)
				}
				var id string
				if err := json.Unmarshal(r.ID, &id); err != nil || !strings.HasPrefix(id, idPrefix) {
					return fmt.Errorf("command id %s, want a string starting %q: %w", r.ID, idPrefix, errScript)
				}
				ret := `{}`
				if tt.command == "query-fdsets" {
					ret = `[]`
				}
				return p.reply(r, ret)
			})
			c := dial(t, ctx, path)
			assert.NoError(t, tt.call(ctx, c))
		})
	}
}

func TestClientSideRefusals(t *testing.T) {
	ctx := testCtx(t)
	path := startScript(t, func(p *peer) error {
		if err := p.handshakeAs(greetingFor(Version{Major: 7, Minor: 0})); err != nil {
			return err
		}
		return p.expectHangUp() // every call is refused before it is sent
	})
	c := dial(t, ctx, path)
	err := c.BlockdevChangeMedium(ctx, ChangeMediumArgs{ID: "ide-5632", Filename: "/x", Format: "raw", Force: true})
	assert.ErrorContains(t, err, "force needs QEMU 7.1 or newer, this is 7.0.0")
	err = c.Execute(ctx, "x", []int{1}, nil)
	assert.ErrorContains(t, err, "[]int is not a JSON object")
	err = c.Execute(ctx, "x", map[string]any{"f": func() {}}, nil)
	assert.ErrorContains(t, err, "encode arguments")
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	assert.ErrorIs(t, c.Execute(cancelled, "x", nil, nil), context.Canceled)
	f, err := os.Open(os.DevNull)
	require.NoError(t, err)
	f.Close()
	_, err = c.AddFD(ctx, f, nil, "")
	assert.ErrorContains(t, err, "file /dev/null: use of closed file", "AddFD of a closed file")
	assert.Nil(t, c.Err(), "a refused call must leave the connection up")
}

func TestVersionAtLeast(t *testing.T) {
	tests := []struct {
		name                string
		v                   Version
		major, minor, micro int
		want                bool
	}{
		{"equal", Version{Major: 2, Minor: 8}, 2, 8, 0, true},
		{"older micro", Version{Major: 2, Minor: 8}, 2, 8, 1, false},
		{"newer minor", Version{Major: 2, Minor: 12}, 2, 8, 0, true},
		{"older minor, newer micro", Version{Major: 2, Minor: 7, Micro: 9}, 2, 8, 0, false},
		{"newer major", Version{Major: 7, Minor: 2, Micro: 22}, 2, 8, 0, true},
		{"older major", Version{Major: 1, Minor: 9, Micro: 9}, 2, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.v.AtLeast(tt.major, tt.minor, tt.micro); got != tt.want {
				t.Errorf("%v.AtLeast(%d, %d, %d) = %v, want %v", tt.v, tt.major, tt.minor, tt.micro, got, tt.want)
			}
		})
	}
	assert.Equal(t, "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)", Version{7, 2, 22, "Debian 1:7.2+dfsg-7+deb12u18+b3"}.String())
}

// TestAbandonedFileCommand checks that a late reply to an abandoned fd-carrying command frees
// the way for the next one.
func TestAbandonedFileCommand(t *testing.T) {
	ctx := testCtx(t)
	f, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer f.Close()
	gaveUp := make(chan struct{})
	path := startScript(t, func(p *peer) error {
		first, err := p.handshakeThen("add-fd")
		if err != nil {
			return err
		}
		closeFDs(first.fds)
		<-gaveUp
		if err := p.reply(first, `{"fd": 12, "fdset-id": 0}`); err != nil {
			return err
		}
		second, err := p.expect("add-fd")
		if err != nil {
			return err
		}
		defer closeFDs(second.fds)
		if len(second.fds) != 1 {
			return fmt.Errorf("second add-fd carried %d fds, want 1: %w", len(second.fds), errScript)
		}
		return p.reply(second, `{"fd": 13, "fdset-id": 1}`)
	})
	c := dial(t, ctx, path)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	_, err = c.AddFD(short, f, nil, "")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	close(gaveUp)
	info, err := c.AddFD(ctx, f, nil, "")
	require.NoError(t, err)
	assert.Equal(t, AddFDInfo{FdsetID: 1, FD: 13}, info)
	assert.Equal(t, Stats{LateReplies: 1}, c.Stats())
}

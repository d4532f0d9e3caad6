package qmptest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/testenv"
)

// rawClient is a deliberately small QMP client for these tests: it writes raw text (with an
// optional descriptor in SCM_RIGHTS) and reads CRLF-terminated lines, so the tests see the
// fake's bytes exactly and do not depend on package qmp.
type rawClient struct {
	t      testing.TB
	ctx    context.Context
	uc     *net.UnixConn
	br     *bufio.Reader
	nextID int
	// events collects the events read while waiting for replies.
	events []map[string]any
}

// testCtx is the deadline of one test: generous, so that only a hang trips it.
func testCtx(t testing.TB) context.Context { return testenv.Context(t, 30*time.Second) }

// dialRaw connects and reads the greeting, without negotiating.
func dialRaw(ctx context.Context, t testing.TB, path string) (*rawClient, string) {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	c := &rawClient{t: t, ctx: ctx, uc: conn.(*net.UnixConn), br: bufio.NewReader(conn)}
	t.Cleanup(func() { c.uc.Close() })
	greeting, err := c.readLine()
	if err != nil {
		t.Fatalf("read greeting: %v", err)
	}
	return c, greeting
}

// negotiate dials, reads the greeting and sends qmp_capabilities.
func negotiate(ctx context.Context, t testing.TB, path string) *rawClient {
	t.Helper()
	c, _ := dialRaw(ctx, t, path)
	if r := c.exec("qmp_capabilities", nil); r.Error != nil {
		t.Fatalf("qmp_capabilities: %s", r.Line)
	}
	return c
}

// readLine returns one line with its CRLF, or an error (io.EOF when the fake hung up).
func (c *rawClient) readLine() (string, error) {
	if dl, ok := c.ctx.Deadline(); ok {
		c.uc.SetReadDeadline(dl)
	}
	line, err := c.br.ReadString('\n')
	if err != nil {
		if line == "" {
			return "", err
		}
		return line, fmt.Errorf("partial line %q: %w", line, err)
	}
	if !strings.HasSuffix(line, "\r\n") {
		return line, fmt.Errorf("line %q does not end with CRLF", line)
	}
	return line, nil
}

// write sends raw bytes, with f's descriptor attached when f is not nil.
func (c *rawClient) write(b []byte, f *os.File) error {
	var oob []byte
	if f != nil {
		oob = syscall.UnixRights(int(f.Fd()))
	}
	_, _, err := c.uc.WriteMsgUnix(b, oob, nil)
	return err
}

// reply is one parsed reply line.
type reply struct {
	Line   string
	ID     any             `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// exec sends a command with a fresh numeric id and returns its reply; events read meanwhile
// go to c.events. A dropped connection fails the test; use execErr to expect one.
func (c *rawClient) exec(name string, args map[string]any) reply {
	c.t.Helper()
	r, err := c.execFile(name, args, nil)
	if err != nil {
		c.t.Fatalf("%s: %v", name, err)
	}
	return r
}

func (c *rawClient) execFile(name string, args map[string]any, f *os.File) (reply, error) {
	c.nextID++
	id := c.nextID
	req := map[string]any{"execute": name, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return reply{}, err
	}
	if err := c.write(append(b, '\r', '\n'), f); err != nil {
		return reply{}, fmt.Errorf("write: %w", err)
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return reply{}, err
		}
		if ev, ok := parseEvent(line); ok {
			c.events = append(c.events, ev)
			continue
		}
		var r reply
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return reply{}, fmt.Errorf("decode %q: %w", line, err)
		}
		r.Line = line
		if n, ok := r.ID.(float64); !ok || int(n) != id {
			return reply{}, fmt.Errorf("reply %q does not carry id %d", line, id)
		}
		return r, nil
	}
}

// rawLine sends text as is and returns the next line that is not an event.
func (c *rawClient) rawLine(text string) string {
	c.t.Helper()
	if err := c.write([]byte(text), nil); err != nil {
		c.t.Fatalf("write %q: %v", text, err)
	}
	return c.nextReply()
}

func (c *rawClient) nextReply() string {
	c.t.Helper()
	for {
		line, err := c.readLine()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if ev, ok := parseEvent(line); ok {
			c.events = append(c.events, ev)
			continue
		}
		return line
	}
}

// waitEvent returns the first event named name, reading more lines if needed.
func (c *rawClient) waitEvent(name string) map[string]any {
	c.t.Helper()
	for {
		for i, ev := range c.events {
			if ev["event"] == name {
				c.events = append(c.events[:i], c.events[i+1:]...)
				return ev
			}
		}
		line, err := c.readLine()
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", name, err)
		}
		ev, ok := parseEvent(line)
		if !ok {
			c.t.Fatalf("waiting for %s, got %q", name, line)
		}
		c.events = append(c.events, ev)
	}
}

// takeEvents returns and forgets the events read so far.
func (c *rawClient) takeEvents() []map[string]any {
	evs := c.events
	c.events = nil
	return evs
}

// expectEOF reads until the fake hangs up; other lines fail the test. A reset counts as a
// hang-up: the kernel reports one when the fake closes with input it has not read.
func (c *rawClient) expectEOF() {
	c.t.Helper()
	for {
		line, err := c.readLine()
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return
		}
		if err != nil {
			c.t.Fatalf("want EOF, got %v", err)
		}
		if _, ok := parseEvent(line); !ok {
			c.t.Fatalf("want EOF, got %q", line)
		}
	}
}

func parseEvent(line string) (map[string]any, bool) {
	if !strings.HasPrefix(line, `{"timestamp": `) {
		return nil, false
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader([]byte(line)))
	if err := d.Decode(&m); err != nil {
		return nil, false
	}
	_, ok := m["event"]
	return m, ok
}

// trayMoves returns the tray-open values of DEVICE_TRAY_MOVED events for id.
func trayMoves(evs []map[string]any, id string) []bool {
	var out []bool
	for _, ev := range evs {
		if ev["event"] != "DEVICE_TRAY_MOVED" {
			continue
		}
		data, _ := ev["data"].(map[string]any)
		if data["id"] != id {
			continue
		}
		out = append(out, data["tray-open"].(bool))
	}
	return out
}

// writeImage creates a raw image of size bytes and returns its path.
func writeImage(t testing.TB, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// openFile opens p with flag, closed at cleanup.
func openFile(t testing.TB, p string, flag int) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cdswap/cdswap/internal/testenv"
)

// greeting72 is the greeting Debian's QEMU 7.2 sends, byte for byte but for the package.
const greeting72 = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}`

// greetingFor is a greeting announcing v.
func greetingFor(v Version) string {
	return fmt.Sprintf(`{"QMP": {"version": {"qemu": {"micro": %d, "minor": %d, "major": %d}, "package": ""}, "capabilities": []}}`,
		v.Micro, v.Minor, v.Major)
}

// startScript serves one connection on a fresh socket with script, a scripted QMP server, and
// returns the socket path. A script error fails the test (from the script's goroutine, with
// t.Errorf); the test waits for the script to end before it finishes.
func startScript(t *testing.T, script func(p *peer) error) string {
	t.Helper()
	path := filepath.Join(testenv.SocketDir(t), "qmp.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.AcceptUnix()
		ln.Close()
		if err != nil {
			return // the test ended without dialling
		}
		defer conn.Close()
		p := &peer{conn: conn}
		if err := script(p); err != nil {
			t.Errorf("fake QMP server: %v", err)
			return
		}
		// Keep the connection until the client hangs up, so that the end of a script is not
		// taken for QEMU going away; a script that closed the connection reads an error here.
		if r, err := p.recv(); err == nil {
			t.Errorf("fake QMP server: command %q after the end of the script", r.raw)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return path
}

// peer is the server side of one scripted connection.
type peer struct {
	conn *net.UnixConn
	buf  []byte
	fds  []int // descriptors received with data not yet consumed by recv
}

// req is a command as the fake received it.
type req struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
	// fds are the descriptors that arrived with this command's bytes.
	fds []int
	raw []byte
}

func (p *peer) send(line string) error {
	_, err := p.conn.Write([]byte(line + "\r\n"))
	return err
}

// recv reads one command line, collecting descriptors passed with SCM_RIGHTS.
func (p *peer) recv() (req, error) {
	for {
		if i := bytes.IndexByte(p.buf, '\n'); i >= 0 {
			line := p.buf[:i+1]
			p.buf = append([]byte(nil), p.buf[i+1:]...)
			r := req{raw: line, fds: p.fds}
			p.fds = nil
			if err := json.Unmarshal(line, &r); err != nil {
				return r, fmt.Errorf("command %q: %w", line, err)
			}
			return r, nil
		}
		b := make([]byte, 64<<10)
		oob := make([]byte, syscall.CmsgSpace(4*4))
		n, oobn, _, _, err := p.conn.ReadMsgUnix(b, oob)
		if oobn > 0 {
			msgs, perr := syscall.ParseSocketControlMessage(oob[:oobn])
			if perr != nil {
				return req{}, perr
			}
			for _, m := range msgs {
				fds, perr := syscall.ParseUnixRights(&m)
				if perr != nil {
					return req{}, perr
				}
				p.fds = append(p.fds, fds...)
			}
		}
		p.buf = append(p.buf, b[:n]...)
		if err != nil {
			return req{}, err
		}
	}
}

// expect reads a command and checks its name.
func (p *peer) expect(command string) (req, error) {
	r, err := p.recv()
	if err != nil {
		return r, fmt.Errorf("waiting for %s: %w", command, err)
	}
	if r.Execute != command {
		return r, fmt.Errorf("got command %q, want %q", r.Execute, command)
	}
	return r, nil
}

// reply answers r with a success reply whose return value is the JSON ret.
func (p *peer) reply(r req, ret string) error {
	return p.send(fmt.Sprintf(`{"return": %s, "id": %s}`, ret, r.ID))
}

// replyError answers r with an error reply.
func (p *peer) replyError(r req, class, desc string) error {
	e, _ := json.Marshal(map[string]string{"class": class, "desc": desc})
	return p.send(fmt.Sprintf(`{"id": %s, "error": %s}`, r.ID, e))
}

// handshake greets as QEMU 7.2 and accepts qmp_capabilities.
func (p *peer) handshake() error {
	return p.handshakeAs(greeting72)
}

// handshakeThen is handshake, then expect of the first command.
func (p *peer) handshakeThen(command string) (req, error) {
	if err := p.handshake(); err != nil {
		return req{}, err
	}
	return p.expect(command)
}

func (p *peer) handshakeAs(greeting string) error {
	if err := p.send(greeting); err != nil {
		return err
	}
	r, err := p.expect("qmp_capabilities")
	if err != nil {
		return err
	}
	if r.Arguments != nil {
		return fmt.Errorf("qmp_capabilities with arguments %s, want none", r.Arguments)
	}
	return p.reply(r, `{}`)
}

// expectHangUp waits for the client to hang up; a command, or any other error, fails the
// script.
func (p *peer) expectHangUp() error {
	r, err := p.recv()
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return fmt.Errorf("recv() = %w, want EOF: %w", err, errScript)
	}
	return fmt.Errorf("got command %s, want the client to hang up: %w", r.raw, errScript)
}

// closeFDs closes descriptors the fake received.
func closeFDs(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

// errScript is returned by scripts to report an unexpected client behaviour.
var errScript = errors.New("unexpected client behaviour")

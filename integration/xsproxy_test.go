package integration

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/xs"
)

// xsProxy sits between a worker and the host's xenstored, forwarding both ways, and can
// hold one request from the worker until released: the way to keep a step that only
// talks to xenstore (AttachVBD) open long enough to kill the worker inside it.
type xsProxy struct {
	path     string
	upstream string
	ln       *net.UnixListener

	mu        sync.Mutex // guards the fields below
	match     func(xs.Msg) bool
	held      chan struct{}
	release   chan struct{}
	releaseFn func() // closes release once
	conns     map[net.Conn]struct{}
	closed    bool

	wg sync.WaitGroup
}

// startXSProxy listens on a new socket in dir and forwards to upstream; it is closed at
// cleanup.
func startXSProxy(t testing.TB, dir, upstream string) *xsProxy {
	t.Helper()
	p := &xsProxy{path: filepath.Join(dir, "xsproxy.sock"), upstream: upstream, conns: map[net.Conn]struct{}{}}
	os.Remove(p.path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.path, Net: "unix"})
	require.NoError(t, err)
	p.ln = ln
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// holdNext holds the next request match accepts, until release is called; held is closed
// when one is being held.
func (p *xsProxy) holdNext(match func(xs.Msg) bool) (held <-chan struct{}, release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.match = match
	p.held = make(chan struct{})
	p.release = make(chan struct{})
	rel := p.release
	var once sync.Once
	p.releaseFn = func() { once.Do(func() { close(rel) }) }
	return p.held, p.releaseFn
}

func (p *xsProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("unix", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(c, up) // replies and watch events
			c.Close()
		}()
		go func() {
			defer p.wg.Done()
			p.forward(c, up)
			up.Close()
		}()
	}
}

// forward copies requests from the worker, one frame at a time, holding the one that
// matches.
func (p *xsProxy) forward(c, up net.Conn) {
	for {
		m, err := xs.ReadMsg(c)
		if err != nil {
			return
		}
		p.mu.Lock()
		var release chan struct{}
		if p.match != nil && p.match(m) {
			p.match = nil
			close(p.held)
			release = p.release
		}
		p.mu.Unlock()
		if release != nil {
			<-release
		}
		b, err := xs.AppendMsg(nil, m)
		if err != nil {
			return
		}
		if _, err := up.Write(b); err != nil {
			return
		}
	}
}

func (p *xsProxy) close() {
	p.mu.Lock()
	p.closed = true
	if p.releaseFn != nil {
		p.releaseFn()
	}
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// isWrite matches a WRITE whose path satisfies ok.
func isWrite(ok func(path string) bool) func(xs.Msg) bool {
	return func(m xs.Msg) bool {
		if m.Op != xs.OpWrite {
			return false
		}
		parts := strings.SplitN(string(m.Payload), "\x00", 2)
		return ok(parts[0])
	}
}

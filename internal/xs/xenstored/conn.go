package xenstored

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/cdswap/cdswap/internal/xs"
)

// conn is one client connection. Its reader goroutine handles requests one at a time, in
// order; its writer goroutine drains the output queue, so replies and watch events are
// queued without ever waiting for the client.
type conn struct {
	s  *Server
	id uint64
	nc net.Conn

	// Guarded by Server.mu.
	txs     map[uint32]*tx
	nextTx  uint32
	watches []*watch

	// outMu guards out, outBytes, dead and draining.
	outMu    sync.Mutex
	out      [][]byte // encoded frames, oldest first
	outBytes int
	dead     bool
	draining bool // the client stopped sending: close once the queue is written

	wake      chan struct{} // capacity 1: the queue has something
	done      chan struct{} // closed by close
	closeOnce sync.Once
}

// serveConn registers nc and starts its goroutines.
func (s *Server) serveConn(nc net.Conn) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.nextConn++
	c := &conn{
		s:      s,
		id:     s.nextConn,
		nc:     nc,
		txs:    make(map[uint32]*tx),
		nextTx: 1,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	s.conns[c] = struct{}{}
	s.wg.Add(2)
	s.mu.Unlock()
	s.connections.Add(1)
	go c.writeLoop()
	go c.readLoop()
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.outMu.Lock()
		c.dead = true
		c.out = nil
		c.outMu.Unlock()
		close(c.done)
		c.nc.Close()
	})
}

// enqueue adds a frame to the output queue; false if the connection is gone. A client whose
// queue grows past the cap is dropped.
func (c *conn) enqueue(frame []byte) bool {
	c.outMu.Lock()
	if c.dead {
		c.outMu.Unlock()
		return false
	}
	if c.outBytes+len(frame) > c.s.maxQueued {
		c.outMu.Unlock()
		c.s.dropped.Add(1)
		c.s.log.Warn("xenstored: dropping a client that does not read its replies",
			"conn", c.id, "queued_bytes", c.outBytes)
		c.close()
		return false
	}
	c.out = append(c.out, frame)
	c.outBytes += len(frame)
	c.outMu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return true
}

func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		for {
			c.outMu.Lock()
			batch := c.out
			c.out, c.outBytes = nil, 0
			draining := c.draining
			c.outMu.Unlock()
			if len(batch) == 0 {
				if draining {
					c.close()
					return
				}
				break
			}
			bufs := net.Buffers(batch)
			if _, err := bufs.WriteTo(c.nc); err != nil {
				c.close()
				return
			}
		}
	}
}

// drain closes the connection once every queued frame has been written, so a client that
// half-closes its side after its last request still gets the replies.
func (c *conn) drain() {
	c.outMu.Lock()
	c.draining = true
	c.outMu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) readLoop() {
	defer c.s.wg.Done()
	r := bufio.NewReaderSize(c.nc, xs.HeaderSize+xs.PayloadMax)
	for {
		m, err := xs.ReadMsg(r)
		if err != nil {
			c.forget()
			switch {
			case errors.Is(err, xs.ErrPayloadTooLarge):
				// docs/misc/xenstore.txt: a client exceeding the limit is killed.
				c.s.dropped.Add(1)
				c.s.log.Warn("xenstored: dropping a client that sent an oversized frame",
					"conn", c.id, "err", err)
				c.close()
			case errors.Is(err, io.EOF):
				c.drain()
			default:
				if !errors.Is(err, net.ErrClosed) {
					c.s.log.Debug("xenstored: connection read failed", "conn", c.id, "err", err)
				}
				c.close()
			}
			return
		}
		c.s.handle(c, m)
	}
}

// forget unregisters the connection: its transactions are aborted and its watches go, so
// nothing more is queued for it.
func (c *conn) forget() {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	clear(c.txs)
	c.watches = nil
}

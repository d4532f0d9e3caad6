package xs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
)

// WatchBuffer is how many events a Watch holds for a consumer that is not reading. When it is
// full the oldest event is dropped (and counted in Watch.Dropped) so that the reader goroutine,
// which also delivers every reply, never waits for a consumer.
const WatchBuffer = 64

// WatchEvent is one firing of a watch: Path is the node that changed (the watched path
// itself or one below it), Token the watch's token.
type WatchEvent struct {
	Path, Token string
}

// Watch is a registered xenstore watch. Events may be spurious, and a slow consumer may lose
// the oldest ones, so treat an event as "something at or below Path changed" and read the
// state you care about again.
type Watch struct {
	c       *Client
	path    string
	token   string
	ch      chan WatchEvent
	dropped atomic.Uint64

	// Guarded by c.mu.
	closing bool  // Close was called
	closed  bool  // ch is closed
	err     error // why ch was closed; nil after Close
}

// Watch sets a watch on path (a node, or a special path such as "@releaseDomain"). As
// xenstored does for every new watch, the first event comes at once with Path equal to path,
// so a consumer can read the initial state on it without a race.
//
// Token is sent back in every event; it must be unique among this client's open watches
// (ErrExist otherwise) and must not contain a NUL byte. An empty token asks for one made up
// by the client.
func (c *Client) Watch(ctx context.Context, path, token string) (*Watch, error) {
	if err := ValidatePath(path); err != nil {
		return nil, &Error{Op: OpWatch, Path: path, Err: err}
	}
	if strings.IndexByte(token, 0) >= 0 {
		return nil, &Error{Op: OpWatch, Path: path, Err: fmt.Errorf("token %q has a NUL byte: %w", token, ErrBadValue)}
	}
	w := &Watch{c: c, path: path, ch: make(chan WatchEvent, WatchBuffer)}

	// Register before sending: the xenbus device may queue the first event ahead of the reply.
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, &Error{Op: OpWatch, Path: path, Err: err}
	}
	if token == "" {
		for token == "" || c.watches[token] != nil {
			c.tokenSeq++
			token = "xs-" + strconv.FormatUint(c.tokenSeq, 10)
		}
	}
	if c.watches[token] != nil {
		c.mu.Unlock()
		return nil, &Error{Op: OpWatch, Path: path, Err: fmt.Errorf("token %q is in use by another watch of this client: %w", token, ErrExist)}
	}
	w.token = token
	c.watches[token] = w
	c.mu.Unlock()

	payload := JoinStrings(path, token)
	// If ctx ends before the reply, a watch set late would fire into nothing: remove it.
	late := func(Msg) { c.post(OpUnwatch, 0, payload) }
	if _, err := c.roundTrip(ctx, OpWatch, 0, path, payload, late); err != nil {
		c.mu.Lock()
		if c.watches[token] == w {
			delete(c.watches, token)
		}
		w.finish(err)
		c.mu.Unlock()
		return nil, err
	}
	return w, nil
}

// Path is the watched path.
func (w *Watch) Path() string { return w.path }

// Token is the watch's token.
func (w *Watch) Token() string { return w.token }

// Events returns the channel of events. It holds up to WatchBuffer events and drops the
// oldest when full. It is closed by Close or when the connection is lost (see Err).
func (w *Watch) Events() <-chan WatchEvent { return w.ch }

// Dropped is how many events were dropped because the consumer fell WatchBuffer behind.
func (w *Watch) Dropped() uint64 { return w.dropped.Load() }

// Err says why the Events channel was closed: nil after Close, an error wrapping ErrClosed
// when the connection went away, or the WATCH request's error. It is nil while the watch is
// open.
func (w *Watch) Err() error {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	return w.err
}

// Close removes the watch (UNWATCH) and closes the Events channel. Closing a closed watch, or
// one whose connection is gone, does nothing and returns nil. If UNWATCH fails the channel is
// closed all the same; stray events for the token are discarded.
func (w *Watch) Close(ctx context.Context) error {
	c := w.c
	c.mu.Lock()
	if w.closing || w.closed {
		c.mu.Unlock()
		return nil
	}
	w.closing = true
	c.mu.Unlock()

	_, err := c.roundTrip(ctx, OpUnwatch, 0, w.path, JoinStrings(w.path, w.token), nil)

	c.mu.Lock()
	defer c.mu.Unlock()
	if w.closed {
		return nil // the connection went away meanwhile; the watch went with it
	}
	if c.watches[w.token] == w {
		delete(c.watches, w.token)
	}
	w.finish(nil)
	return err
}

// finish closes the channel once. c.mu must be held.
func (w *Watch) finish(err error) {
	if w.closed {
		return
	}
	if w.closing {
		err = nil // Close was called: however it ends, the watch ended as asked
	}
	w.closed = true
	w.err = err
	close(w.ch)
}

// push hands ev to the consumer without waiting, dropping the oldest event when the buffer is
// full. c.mu must be held: it keeps push and finish apart, and makes the reader the only
// sender.
func (w *Watch) push(ev WatchEvent) {
	for {
		select {
		case w.ch <- ev:
			return
		default:
		}
		select {
		case <-w.ch:
			w.dropped.Add(1)
			w.c.stats.dropped.Add(1)
		default:
		}
	}
}

// deliver routes a WATCH_EVENT frame (req_id 0) to its Watch. An event for an unknown token is
// not an error: one may be in flight as a watch is removed, and xenstored may fire spuriously.
func (c *Client) deliver(m Msg) error {
	parts := SplitStrings(m.Payload)
	if len(parts) < 2 {
		return fmt.Errorf("%w: WATCH_EVENT payload %q is not <path>NUL<token>NUL", ErrProtocol, m.Payload)
	}
	ev := WatchEvent{Path: parts[0], Token: parts[1]}
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.watches[ev.Token]
	if w == nil || w.closed {
		c.stats.unknownEvents.Add(1)
		return nil
	}
	w.push(ev)
	return nil
}

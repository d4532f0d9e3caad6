package xenstored

import (
	"strings"

	"github.com/cdswap/cdswap/internal/xs"
)

// watch is one WATCH of a connection.
type watch struct {
	path     string // canonical: absolute, or a special "@..." name
	given    string // as the client sent it; events for a relative watch are relative too
	token    string
	relative bool
}

// isChild reports whether child is parent or below it, at path component boundaries
// (docs/misc/xenstore.txt: "/" is the parent of every path).
func isChild(child, parent string) bool {
	if parent == "/" {
		return strings.HasPrefix(child, "/")
	}
	if !strings.HasPrefix(child, parent) {
		return false
	}
	return len(child) == len(parent) || child[len(parent)] == '/'
}

// eventPath is what a watch is told for a change at p, or "" if the watch does not match.
func (w *watch) eventPath(ev event) string {
	if ev.path[0] == '@' || w.path[0] == '@' {
		// Special events match only a watch on that very name.
		if ev.path == w.path {
			return w.given
		}
		return ""
	}
	switch {
	case isChild(ev.path, w.path):
		if w.relative {
			return strings.TrimPrefix(ev.path, dom0Path+"/")
		}
		return ev.path
	case ev.rm && isChild(w.path, ev.path):
		// A parent of the watched path went away: the event names the watched path.
		return w.given
	}
	return ""
}

// fireLocked queues a WATCH_EVENT for every watch that matches one of evs. Called with s.mu
// held, so events reach each connection in the order the changes were made.
func (s *Server) fireLocked(evs []event) {
	if len(evs) == 0 {
		return
	}
	for _, ev := range evs {
		for c := range s.conns {
			for _, w := range c.watches {
				if p := w.eventPath(ev); p != "" {
					s.sendEvent(c, p, w.token)
				}
			}
		}
	}
}

// sendEvent queues one WATCH_EVENT (req_id and tx_id 0). Events that would not fit in a
// frame are dropped, as cxenstored does.
func (s *Server) sendEvent(c *conn, path, token string) {
	payload := xs.JoinStrings(path, token)
	if len(payload) > xs.PayloadMax {
		return
	}
	frame, err := xs.AppendMsg(nil, xs.Msg{Op: xs.OpWatchEvent, Payload: payload})
	if err != nil {
		return
	}
	if c.enqueue(frame) {
		s.watchEvents.Add(1)
	}
}

package xenstored

import (
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/xs"
)

func TestWatchInitialEvent(t *testing.T) {
	_, path := start(t, Config{})
	r := dialRaw(t, path)
	id := r.send(xs.OpWatch, 77, z("/w", "tok")) // tx_id is ignored for WATCH
	m := r.recv()
	assert.Equal(t, xs.OpWatch, m.Op, "first frame after WATCH")
	assert.Equal(t, id, m.ReqID, "WATCH reply req_id")
	assert.Equal(t, uint32(77), m.TxID, "WATCH reply tx_id")
	assert.Equal(t, "OK|", showPayload(m.Payload), "WATCH reply")
	m = r.recv()
	assert.Equal(t, xs.OpWatchEvent, m.Op, "second frame after WATCH")
	assert.Zero(t, m.ReqID, "event req_id")
	assert.Zero(t, m.TxID, "event tx_id")
	assert.Equal(t, "/w|tok|", showPayload(m.Payload), "initial event")
}

func TestWatchEvents(t *testing.T) {
	s, path := start(t, Config{})
	w, c := dialRaw(t, path), dialRaw(t, path)
	require.NoError(t, s.Write("/p/watched/deep/leaf", "x"))
	w.ok(xs.OpWatch, 0, z("/w", "A"))
	w.ok(xs.OpWatch, 0, z("/p/watched/deep", "B"))
	w.ok(xs.OpWatch, 0, z("rel", "C"))
	w.ok(xs.OpWatch, 0, z("@releaseDomain", "D"))
	w.ok(xs.OpWatch, 0, z("/w", "A2")) // same path, other token: both fire
	w.sync()
	assert.Equal(t, []string{"/w|A|", "/p/watched/deep|B|", "rel|C|", "@releaseDomain|D|", "/w|A2|"},
		w.takeEvents(), "initial events")

	tests := []struct {
		name   string
		change func()
		want   []string
	}{
		{"write below", func() { c.ok(xs.OpWrite, 0, []byte("/w/x\x001")) }, []string{"/w/x|A|", "/w/x|A2|"}},
		{"write the watched node", func() { c.ok(xs.OpWrite, 0, []byte("/w\x00v")) }, []string{"/w|A|", "/w|A2|"}},
		{"same prefix, other component", func() { c.ok(xs.OpWrite, 0, []byte("/wx\x001")) }, nil},
		{"write above", func() { c.ok(xs.OpWrite, 0, []byte("/p\x00v")) }, nil},
		{"mkdir below", func() { c.ok(xs.OpMkdir, 0, z("/w/d")) }, []string{"/w/d|A|", "/w/d|A2|"}},
		{"mkdir of an existing node", func() { c.ok(xs.OpMkdir, 0, z("/w/d")) }, nil},
		{"set perms", func() { c.ok(xs.OpSetPerms, 0, z("/w/d", "r1")) }, []string{"/w/d|A|", "/w/d|A2|"}},
		{"rm below", func() { c.ok(xs.OpRm, 0, z("/w/x")) }, []string{"/w/x|A|", "/w/x|A2|"}},
		{"rm of an absent node", func() { c.ok(xs.OpRm, 0, z("/w/x")) }, nil},
		{"rm of a parent names the watched path", func() { c.ok(xs.OpRm, 0, z("/p")) }, []string{"/p/watched/deep|B|"}},
		{"relative watch gets relative paths", func() { c.ok(xs.OpWrite, 0, []byte("/local/domain/0/rel/k\x00v")) }, []string{"rel/k|C|"}},
		{"in-process write", func() { require.NoError(t, s.Write("/w/sim", "1")) }, []string{"/w/sim|A|", "/w/sim|A2|"}},
		{"special event", func() { s.ReleaseDomain(3) }, []string{"@releaseDomain|D|"}},
		{"unwatch", func() { w.ok(xs.OpUnwatch, 0, z("/w", "A2")); c.ok(xs.OpWrite, 0, []byte("/w/y\x001")) }, []string{"/w/y|A|"}},
	}
	for _, tt := range tests {
		tt.change()
		w.sync() // every event of the change is queued before this round trip's reply
		assert.Equal(t, tt.want, w.takeEvents(), tt.name)
	}
	assert.Equal(t, "EEXIST", w.fail(xs.OpWatch, 0, z("/w", "A")), "duplicate WATCH")
	assert.Equal(t, "ENOENT", w.fail(xs.OpUnwatch, 0, z("/w", "A2")), "UNWATCH of a removed watch")
	assert.Equal(t, "EINVAL", w.fail(xs.OpWatch, 0, z("/w")), "WATCH without token")
	assert.Equal(t, "EINVAL", w.fail(xs.OpWatch, 0, []byte("/w\x00tok")), "WATCH token without NUL")
	assert.Equal(t, "EINVAL", w.fail(xs.OpWatch, 0, z("/w//x", "t")), "WATCH of a bad path")
	assert.Empty(t, w.takeEvents(), "failed WATCHes fire nothing")

	w.ok(xs.OpResetWatches, 0, z(""))
	c.ok(xs.OpWrite, 0, []byte("/w/z\x001"))
	w.sync()
	assert.Empty(t, w.takeEvents(), "after RESET_WATCHES")
}

func TestWatchFiresOnlyOnCommit(t *testing.T) {
	s, path := start(t, Config{})
	w, c := dialRaw(t, path), dialRaw(t, path)
	w.ok(xs.OpWatch, 0, z("/tx", "T"))
	w.sync()
	w.takeEvents()

	tx := c.begin()
	c.ok(xs.OpWrite, tx, []byte("/tx/a\x001"))
	c.ok(xs.OpWrite, tx, []byte("/tx/a\x002")) // twice: one event
	c.ok(xs.OpRm, tx, z("/tx/b"))
	w.sync()
	assert.Empty(t, w.takeEvents(), "events before the commit")

	require.Equal(t, "OK", c.end(tx, true))
	w.sync()
	assert.Equal(t, []string{"/tx/a|T|"}, w.takeEvents(), "events after the commit")

	tx = c.begin()
	c.ok(xs.OpWrite, tx, []byte("/tx/c\x001"))
	require.Equal(t, "OK", c.end(tx, false))
	w.sync()
	assert.Empty(t, w.takeEvents(), "events after an abort")

	require.NoError(t, s.Write("/tx/d", "0"))
	tx = c.begin()
	c.ok(xs.OpWrite, tx, []byte("/tx/d\x001"))
	require.NoError(t, s.Write("/tx/d", "2"))
	w.sync()
	w.takeEvents()
	require.Equal(t, "EAGAIN", c.end(tx, true))
	w.sync()
	assert.Empty(t, w.takeEvents(), "events after a failed commit")
}

func TestWatchOwnWriteEventBeforeReply(t *testing.T) {
	_, path := start(t, Config{})
	r := dialRaw(t, path)
	r.ok(xs.OpWatch, 0, z("/own", "t")) // its initial event follows the reply
	r.ok(xs.OpWrite, 0, []byte("/own/x\x001"))
	// cxenstored queues the event while handling the write, before the reply.
	assert.Equal(t, []string{"/own|t|", "/own/x|t|"}, r.takeEvents(), "events received before the WRITE reply")
}

// A client that sets a watch and never reads must not hold up anyone else; once its queue
// passes the cap it is dropped.
func TestSlowWatcher(t *testing.T) {
	s, path := start(t, Config{MaxQueuedBytes: 64 << 10})
	slow := dialRaw(t, path)
	slow.send(xs.OpWatch, 0, z("/", strings.Repeat("t", 1000))) // never reads again
	fast := dialRaw(t, path)
	// 3000 events of about 1 KiB: far more than the socket buffers and the cap hold.
	for i := range 3000 {
		fast.ok(xs.OpWrite, 0, []byte("/slow/x\x00"+string(rune('a'+i%26))))
	}
	assert.Equal(t, uint64(1), s.Stats().Dropped, "Stats.Dropped")
	// The slow client finds what reached its socket, then the end of the connection.
	_, err := io.Copy(io.Discard, slow.r)
	assert.NoError(t, err, "reading the dropped connection to its end")
}

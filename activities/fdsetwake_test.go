package activities

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/cdswap/cdswap/internal/xensim"
)

// TestWaitFdsetWake waits for the stubdom's new set with a poll interval of an hour and the
// wake-up on: only the xenstore watch on the stubdom's vbd frontend and the fast polls once
// it connected can find the set, which the stubdom adds 100 ms after its vbd connects (a wait
// that polled every interval only would run into the test's timeout).
func TestWaitFdsetWake(t *testing.T) {
	s := startSim(t, xensim.Config{StubdomGuests: 1, AgentDelay: 100 * time.Millisecond})
	dom := s.domain(xensim.KindStubdom)
	tools := s.iso(xensim.ISOTools)
	const key = "wake"
	insp := s.inspect(dom, tools)
	d := insp.Drive
	must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: key})
	must(t, s.env, s.a.Eject, EjectInput{Drive: d, Key: key})
	rel := must(t, s.env, s.a.ReleaseFdset, ReleaseFdsetInput{Drive: d, Key: key})
	must(t, s.env, s.a.DetachVBD, DetachVBDInput{Drive: d, Key: key})
	must(t, s.env, s.a.AttachVBD, AttachVBDInput{Drive: d, Key: key, Params: tools})
	w := must(t, s.env, s.a.WaitFdset, WaitFdsetInput{Drive: d, KnownFdsets: rel.FdsetIDs, Interval: time.Hour, Timeout: 30 * time.Second, Wake: true})
	assert.Greater(t, w.Polls, 1, "the set appears 100 ms after the vbd connects, after the first poll")
	assert.Contains(t, setsWithOpaque(s.h.QEMU(dom.DomID).Fake().Fdsets(), dom.DevID.StubOpaque()), w.FdsetID)
	must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: key})
}

package activities

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/sys/unix"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/internal/xensim/isofs"
	"github.com/cdswap/cdswap/internal/xensim/loopdev"
)

// These tests attack the ISO roots as an outsider who can rename files inside a root would:
// an exchange loop (renameat2 RENAME_EXCHANGE) swaps a medium, or a folder on its path, with
// a symlink to a real ISO image outside the roots while inserts run. What counts is what the
// guest's QEMU and the stub domain's loop device really hold (/proc/<qemu>/fd, and
// LOOP_GET_STATUS64), not what the records say.

// raceTries is how many inserts of the raced medium each race test runs.
const raceTries = 100

// identity is the device and inode of the file at p.
func identity(t testing.TB, p string) FileIdentity {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(p, &st), "stat %s", p)
	return FileIdentity{Dev: uint64(st.Dev), Ino: st.Ino}
}

// heldIdentities returns the identity of every file process pid holds open, directly or
// through a loop device (the loop device's backing file).
func heldIdentities(t testing.TB, pid int) []FileIdentity {
	t.Helper()
	require.NotZero(t, pid, "no QEMU process")
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var ids []FileIdentity
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
			continue // closed meanwhile
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			ids = append(ids, FileIdentity{Dev: uint64(st.Dev), Ino: st.Ino})
		case unix.S_IFBLK:
			id, _, err := attachedFile(fmt.Sprintf("%x:%x", unix.Major(st.Rdev), unix.Minor(st.Rdev)), p)
			if err == nil {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// exchanger swaps two names in a loop until stopped.
type exchanger struct {
	stop  chan struct{}
	done  chan struct{}
	swaps atomic.Int64
	err   error // the first failed exchange; read after done
}

// exchange starts swapping a and b (renameat2 RENAME_EXCHANGE) as fast as it can; the
// returned stop function ends the loop and reports how many swaps it made.
func exchange(t testing.TB, a, b string) func() int64 {
	t.Helper()
	x := &exchanger{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(x.done)
		for {
			select {
			case <-x.stop:
				return
			default:
			}
			if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
				x.err = fmt.Errorf("renameat2(%s, %s, RENAME_EXCHANGE): %w", a, b, err)
				return
			}
			x.swaps.Add(1)
		}
	}()
	var once sync.Once
	stop := func() int64 {
		once.Do(func() { close(x.stop) })
		<-x.done
		require.NoError(t, x.err)
		return x.swaps.Load()
	}
	t.Cleanup(func() { stop() })
	return stop
}

// raceTally counts what became of the raced inserts.
type raceTally struct {
	tries, inserted, refused, swapped, escapes int
	refusals                                   map[string]int // by error type
}

func (r *raceTally) refuse(t testing.TB, err error, allowed ...string) {
	t.Helper()
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	require.Contains(t, allowed, appErr.Type(), "refusal %v", err)
	require.True(t, appErr.NonRetryable(), "refusal %v is permanent", err)
	if r.refusals == nil {
		r.refusals = map[string]int{}
	}
	r.refusals[appErr.Type()]++
	if appErr.Type() == ErrMediumSwapped {
		r.swapped++
	} else {
		r.refused++
	}
}

// raceFiles are a good ISO inside the root and a secret ISO outside it: the content check
// cannot tell them apart, only where they are.
type raceFiles struct {
	good, secret FileIdentity
}

func writeISO(t testing.TB, p, label string) {
	t.Helper()
	require.NoError(t, isofs.Write(p, label, map[string][]byte{"WHO.TXT": []byte(label + "\n")}))
}

// TestStubdomExchangeRace: the medium's name is swapped with a symlink to an outside ISO
// while a stub domain guest's medium is changed again and again. The worker checks the
// file, then Xen's block script (xensim's) resolves and losetups the name on its own: a
// loop device over the outside file must be caught before QEMU inserts it (ErrMediumSwapped),
// and the old medium put back.
func TestStubdomExchangeRace(t *testing.T) {
	needRealQEMU(t)
	s := startSim(t, xensim.Config{StubdomGuests: 1, QEMU: xensim.QEMUReal})
	dom := s.domain(xensim.KindStubdom)
	outside := filepath.Join(s.h.Dir(), "outside")
	require.NoError(t, os.Mkdir(outside, 0o755))
	race := s.iso("race")
	require.NoError(t, os.Mkdir(race, 0o755))
	medium, decoy := filepath.Join(race, "x.iso"), filepath.Join(race, "y.iso")
	writeISO(t, medium, "GOOD")
	writeISO(t, filepath.Join(outside, "secret.iso"), "SECRET")
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret.iso"), decoy))
	f := raceFiles{good: identity(t, medium), secret: identity(t, filepath.Join(outside, "secret.iso"))}
	stable := s.iso(xensim.ISOTools)
	key := "cdswap-race-" + dom.Name

	tally, swaps := s.runRace(dom, medium, decoy, medium, stable, key, f, func(insp InspectResult, tally *raceTally) {
		s.stubdomRacedInsert(dom, insp, stable, key, f, tally)
	})
	t.Logf("stubdom exchange race: %d inserts of %s, %d exchanges: %d inserted, %d refused %v, %d caught swapped by the loop device check, %d escapes",
		tally.tries, medium, swaps, tally.inserted, tally.refused, tally.refusals, tally.swapped, tally.escapes)
	assert.Zero(t, tally.escapes, "inserts that gave the guest's stub domain the outside file")
	assert.Positive(t, swaps, "exchanges")
	assert.Positive(t, tally.refused+tally.swapped, "the race was never seen: the test does not attack anything")
	assert.Equal(t, tally.tries, tally.inserted+tally.refused+tally.swapped)
}

// runRace puts stable in dom's drive (every raced insert falls back to it), then runs
// raceTries changes to medium while a and b are exchanged: each is inspected and, unless
// refused, locked, ejected and handed to insert; after each, QEMU must hold no outside file.
// It returns the tally and how many exchanges were made.
func (s *sim) runRace(dom xensim.DomainInfo, a, b, medium, stable, key string, f raceFiles, insert func(InspectResult, *raceTally)) (raceTally, int64) {
	s.swap(s.a, s.env, dom, stable, key)
	stop := exchange(s.t, a, b)
	var tally raceTally
	for tally.tries < raceTries {
		tally.tries++
		if insp, ok := s.racedStart(dom, medium, key, &tally); ok {
			insert(insp, &tally)
		}
		s.checkNoEscape(dom, f, &tally)
	}
	return tally, stop()
}

// racedStart inspects a change of dom to the raced medium and, unless that is refused
// (counted in tally), takes the lock and ejects the old medium.
func (s *sim) racedStart(dom xensim.DomainInfo, medium, key string, tally *raceTally) (InspectResult, bool) {
	t := s.t
	t.Helper()
	insp, err := run(t, s.env, s.a.Inspect, InspectInput{Host: s.h.Name(), DomID: dom.DomID, Vdev: dom.Vdev, Medium: medium})
	if err != nil {
		tally.refuse(t, err, ErrMediumOutsideRoots, ErrMediumNotFound)
		return InspectResult{}, false
	}
	must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: key})
	must(t, s.env, s.a.Eject, EjectInput{Drive: insp.Drive, Key: key})
	return insp, true
}

// racedFinish inserts the raced medium from fdset id, records and verifies it and unlocks.
func (s *sim) racedFinish(insp InspectResult, key string, id int64, format string, tally *raceTally) {
	t := s.t
	t.Helper()
	d := insp.Drive
	must(t, s.env, s.a.ChangeMedium, ChangeMediumInput{Drive: d, Key: key, FdsetID: id, Format: format})
	must(t, s.env, s.a.Record, RecordInput{Drive: d, Key: key, Medium: insp.Medium, Format: insp.Format, Params: insp.NewParams})
	must(t, s.env, s.a.Verify, VerifyInput{Drive: d, Filename: FdsetFilename(id)})
	must(t, s.env, s.a.Unlock, UnlockInput{DomID: d.DomID, Key: key})
	tally.inserted++
}

// stubdomRacedInsert changes dom's medium (stable now) to the raced medium step by step, as
// the workflow does; a refused step is followed by the workflow's restore of stable, which
// must work. After a raced insert, the medium goes back to stable.
func (s *sim) stubdomRacedInsert(dom xensim.DomainInfo, insp InspectResult, stable, key string, f raceFiles, tally *raceTally) {
	t := s.t
	t.Helper()
	d := insp.Drive
	rel := must(t, s.env, s.a.ReleaseFdset, ReleaseFdsetInput{Drive: d, Key: key})
	known := append(slices.Clone(insp.Fdsets), rel.FdsetIDs...)
	s.detach(d, key)
	att, err := run(t, s.env, s.a.AttachVBD, AttachVBDInput{Drive: d, Key: key, Params: insp.NewParams})
	if err != nil {
		// A refusal (the name is a symlink out now), a swap caught after the hotplug script, or
		// the script itself tripped by the race (readlink -f of a name exchanged under it).
		tally.refuse(t, err, ErrMediumSwapped, ErrMediumOutsideRoots, ErrMediumNotFound, ErrBadInput, ErrHotplugFailed)
		s.stubdomRestore(d, insp, key, known)
		return
	}
	require.Equal(t, f.good, att.Medium, "AttachVBD's checked identity")
	w := must(t, s.env, s.a.WaitFdset, WaitFdsetInput{Drive: d, KnownFdsets: known, Timeout: 10 * time.Second})
	s.racedFinish(insp, key, w.FdsetID, FormatHostDevice, tally)
	// What the stub domain really has: the loop device behind its vbd.
	backing := s.loopBacking(dom)
	if backing == f.secret {
		tally.escapes++
	}
	assert.Equal(t, f.good, backing, "the loop device of the stub domain's vbd after an insert")
	s.checkNoEscape(dom, f, tally)
	s.swap(s.a, s.env, dom, stable, key)
}

// stubdomRestore runs the workflow's restore (restoreOnce) of insp's old medium after a
// refused AttachVBD, and checks that the old medium is back.
func (s *sim) stubdomRestore(d Drive, insp InspectResult, key string, known []int64) {
	t := s.t
	t.Helper()
	must(t, s.env, s.a.Eject, EjectInput{Drive: d, Key: key, Force: true})
	rel := must(t, s.env, s.a.ReleaseFdset, ReleaseFdsetInput{Drive: d, Key: key})
	known = append(known, rel.FdsetIDs...)
	s.detach(d, key)
	must(t, s.env, s.a.AttachVBD, AttachVBDInput{Drive: d, Key: key, Params: insp.OldParams})
	w := must(t, s.env, s.a.WaitFdset, WaitFdsetInput{Drive: d, KnownFdsets: known, Timeout: 10 * time.Second})
	must(t, s.env, s.a.ChangeMedium, ChangeMediumInput{Drive: d, Key: key, FdsetID: w.FdsetID, Format: FormatHostDevice})
	must(t, s.env, s.a.Record, RecordInput{Drive: d, Key: key, Medium: insp.OldMedium, Format: insp.OldFormat, Params: insp.OldParams})
	must(t, s.env, s.a.Verify, VerifyInput{Drive: d, Filename: FdsetFilename(w.FdsetID)})
	must(t, s.env, s.a.Unlock, UnlockInput{DomID: d.DomID, Key: key})
	assert.Equal(t, identity(t, insp.OldMedium), s.loopBacking(s.domainByID(d.DomID)), "the old medium is back in the stub domain's loop device")
}

func (s *sim) domainByID(domid uint32) xensim.DomainInfo {
	for _, d := range s.h.Domains() {
		if d.DomID == domid {
			return d
		}
	}
	s.t.Fatalf("no domain %d", domid)
	return xensim.DomainInfo{}
}

// loopBacking is the identity of the file behind the loop device of dom's stub domain vbd,
// asked of the kernel.
func (s *sim) loopBacking(dom xensim.DomainInfo) FileIdentity {
	s.t.Helper()
	id, what, err := attachedFile(s.read(dom.BackendPath+"/physical-device"), s.read(dom.BackendPath+"/physical-device-path"))
	require.NoError(s.t, err)
	require.Contains(s.t, what, "/dev/loop", "a real loop device")
	return id
}

// checkNoEscape counts an escape if dom's QEMU holds the secret file, directly or through a
// loop device.
func (s *sim) checkNoEscape(dom xensim.DomainInfo, f raceFiles, tally *raceTally) {
	s.t.Helper()
	if slices.Contains(heldIdentities(s.t, dom.QEMUPID), f.secret) {
		tally.escapes++
		s.t.Errorf("try %d: QEMU of %s holds the outside file", tally.tries, dom.Name)
	}
}

// TestDom0ExchangeRace: a folder on the medium's path is swapped with a symlink to an
// outside folder holding an ISO of the same name while a dom0 guest's medium is changed
// again and again: the worker opens the medium beneath the root and passes that descriptor,
// so QEMU must never hold the outside file.
func TestDom0ExchangeRace(t *testing.T) {
	testenv.RequireQEMU(t)
	s := startSim(t, xensim.Config{Dom0Guests: 1, QEMU: xensim.QEMUReal})
	dom := s.domain(xensim.KindDom0)
	outside := filepath.Join(s.h.Dir(), "outside")
	require.NoError(t, os.Mkdir(outside, 0o755))
	race := s.iso("race")
	require.NoError(t, os.MkdirAll(filepath.Join(race, "dir"), 0o755))
	writeISO(t, filepath.Join(race, "dir", "x.iso"), "GOOD")
	writeISO(t, filepath.Join(outside, "x.iso"), "SECRET")
	require.NoError(t, os.Symlink(outside, filepath.Join(race, "dir-out")))
	f := raceFiles{good: identity(t, filepath.Join(race, "dir", "x.iso")), secret: identity(t, filepath.Join(outside, "x.iso"))}
	medium := filepath.Join(race, "dir", "x.iso")
	stable := s.iso(xensim.ISOTools)
	key := "cdswap-race-" + dom.Name

	tally, swaps := s.runRace(dom, filepath.Join(race, "dir"), filepath.Join(race, "dir-out"), medium, stable, key, f, func(insp InspectResult, tally *raceTally) {
		s.dom0RacedInsert(dom, insp, stable, key, f, tally)
	})
	t.Logf("dom0 exchange race: %d inserts of %s, %d exchanges: %d inserted, %d refused %v, %d escapes",
		tally.tries, medium, swaps, tally.inserted, tally.refused, tally.refusals, tally.escapes)
	assert.Zero(t, tally.escapes, "inserts that gave the guest's QEMU the outside file")
	assert.Positive(t, tally.refused, "the race was never seen: the test does not attack anything")
	assert.Positive(t, tally.inserted, "no insert went through")
}

// dom0RacedInsert changes dom's medium (stable now) to the raced medium as the workflow
// does; refused, the old medium is put back. A raced insert is followed by one of stable.
func (s *sim) dom0RacedInsert(dom xensim.DomainInfo, insp InspectResult, stable, key string, f raceFiles, tally *raceTally) {
	t := s.t
	t.Helper()
	d := insp.Drive
	add, err := run(t, s.env, s.a.AddFD, AddFDInput{Drive: d, Key: key, Medium: insp.Medium, Format: insp.Format})
	if err != nil {
		tally.refuse(t, err, ErrMediumOutsideRoots, ErrMediumNotFound)
		old := must(t, s.env, s.a.AddFD, AddFDInput{Drive: d, Key: key, Medium: insp.OldMedium, Format: insp.OldFormat})
		must(t, s.env, s.a.ChangeMedium, ChangeMediumInput{Drive: d, Key: key, FdsetID: old.FdsetID, Format: insp.OldFormat})
		must(t, s.env, s.a.Verify, VerifyInput{Drive: d, Filename: FdsetFilename(old.FdsetID)})
		must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: key})
		return
	}
	s.racedFinish(insp, key, add.FdsetID, insp.Format, tally)
	held := heldIdentities(t, dom.QEMUPID)
	assert.Contains(t, held, f.good, "QEMU holds the checked medium after an insert")
	s.checkNoEscape(dom, f, tally)
	s.swap(s.a, s.env, dom, stable, key)
}

// TestSymlinkedFolderSwaps: 20 changes of media reached through a symlinked folder that
// stays inside the root are all allowed, on a stub domain and a dom0 guest.
func TestSymlinkedFolderSwaps(t *testing.T) {
	needRealQEMU(t)
	s := startSim(t, xensim.Config{StubdomGuests: 1, Dom0Guests: 1, QEMU: xensim.QEMUReal})
	require.NoError(t, os.Mkdir(s.iso("shelf"), 0o755))
	writeISO(t, s.iso("shelf/a.iso"), "SHELF_A")
	writeISO(t, s.iso("shelf/b.iso"), "SHELF_B")
	require.NoError(t, os.Symlink("shelf", s.iso("linked")))
	for _, kind := range []xensim.Kind{xensim.KindStubdom, xensim.KindDom0} {
		t.Run(string(kind), func(t *testing.T) {
			dom := s.domain(kind)
			key := "cdswap-linked-" + dom.Name
			for i := range 20 {
				name := []string{"a.iso", "b.iso"}[i%2]
				r := s.swap(s.a, s.env, dom, s.iso(filepath.Join("linked", name)), key)
				require.False(t, r.skipped, "change %d was skipped", i)
				// Libxl's records name the file, with the folder's symlink resolved.
				s.checkState(s.a, dom, s.iso(filepath.Join("shelf", name)), r)
				want := identity(t, s.iso(filepath.Join("shelf", name)))
				if kind == xensim.KindStubdom {
					assert.Equal(t, want, s.loopBacking(dom), "change %d: the stub domain's loop device", i)
				} else {
					assert.Contains(t, heldIdentities(t, dom.QEMUPID), want, "change %d: QEMU holds the medium", i)
				}
			}
		})
	}
}

// TestCheckAttached: a backend whose loop device holds another file than the one checked is
// ErrMediumSwapped; the checked file itself passes.
func TestCheckAttached(t *testing.T) {
	testenv.Require(t, "read-only loop devices", loopdev.Available())
	ctx := testenv.Context(t, 30*time.Second)
	s := startSim(t, xensim.Config{StubdomGuests: 1})
	dir := testenv.SocketDir(t)
	good, other := filepath.Join(dir, "good.iso"), filepath.Join(dir, "other.iso")
	writeISO(t, good, "GOOD")
	writeISO(t, other, "OTHER")
	dev, err := loopdev.AttachReadOnly(ctx, other)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, loopdev.Detach(context.Background(), dev)) })
	var st unix.Stat_t
	require.NoError(t, unix.Stat(dev, &st))
	v := xen.VBD{BackendDom: 0, FrontendDom: 77, DevID: 5632, Type: xen.TypePhy, Params: good}
	be := v.BackendPath()
	require.NoError(t, s.x.Write(ctx, be+"/physical-device", fmt.Sprintf("%x:%x", unix.Major(st.Rdev), unix.Minor(st.Rdev))))
	require.NoError(t, s.x.Write(ctx, be+"/physical-device-path", dev))

	checked, err := os.Open(good)
	require.NoError(t, err)
	defer checked.Close()
	_, err = s.a.checkAttached(ctx, v, checked)
	requireType(t, err, ErrMediumSwapped, false, "loop device "+dev+" holds", "the old medium is put back")

	same, err := os.Open(other)
	require.NoError(t, err)
	defer same.Close()
	res, err := s.a.checkAttached(ctx, v, same)
	require.NoError(t, err)
	assert.Equal(t, identity(t, other), res.Medium)
	assert.Equal(t, "loop device "+dev, res.Device)

	// Without physical-device-path the device is found through sysfs.
	require.NoError(t, s.x.Rm(ctx, be+"/physical-device-path"))
	res, err = s.a.checkAttached(ctx, v, same)
	require.NoError(t, err)
	assert.Equal(t, "loop device "+dev, res.Device)
}

// detach runs DetachVBD as the workflow does: a vbd that has not closed in time
// (ErrVBDBusy, retryable: on a loaded machine the simulated stubdom may be slow to let go)
// is tried again, up to the step's three attempts.
func (s *sim) detach(d Drive, key string) {
	s.t.Helper()
	var err error
	for range 3 {
		if _, err = run(s.t, s.env, s.a.DetachVBD, DetachVBDInput{Drive: d, Key: key}); err == nil || !isType(err, ErrVBDBusy) {
			break
		}
	}
	require.NoError(s.t, err)
}

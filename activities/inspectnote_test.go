package activities

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim"
)

// TestInspectNote shows Inspect's note at work: asked again by the same run after the eject,
// Inspect gives the answer it gave before (the medium the drive held), where a fresh Inspect
// of the empty drive answers "no old medium"; the note is one of libxl's userdata files of
// the guest; Unlock deletes the note of its own run only; an unreadable note is an error, not
// a fresh answer; a change with nothing to do keeps no note.
func TestInspectNote(t *testing.T) {
	for _, kind := range []xensim.Kind{xensim.KindStubdom, xensim.KindDom0} {
		t.Run(string(kind), func(t *testing.T) {
			s := startSim(t, xensim.Config{Domains: []xensim.DomainSpec{{Kind: kind}}})
			dom := s.domain(kind)
			medium := s.iso(xensim.ISORescue)
			inspect := func(runID string) InspectResult {
				return must(t, s.env, s.a.Inspect, InspectInput{Host: s.h.Name(), DomID: dom.DomID, Vdev: dom.Vdev, Medium: medium, RunID: runID})
			}
			note := xen.UserdataPath(s.h.LibDir(), dom.DomID, dom.UUID, "d", "cdswap-inspect-"+dom.DevID.String())

			if kind == xensim.KindDom0 {
				// Nothing to do (the medium the drive holds already): no note. Only on the dom0
				// guest: xensim's fake QEMU names a stubdom guest's boot medium by its path in
				// dom0, where the stubdom's QEMU names its disk /dev/xvdX, so Inspect never
				// finds that drive in place.
				held := s.inspect(dom, medium).OldMedium
				same := must(t, s.env, s.a.Inspect, InspectInput{Host: s.h.Name(), DomID: dom.DomID, Vdev: dom.Vdev, Medium: held, RunID: "run-0"})
				require.True(t, same.InPlace, "an insert of the medium held has nothing to do")
				assert.NoFileExists(t, note)
			}

			first := inspect("run-1")
			require.NotEmpty(t, first.OldMedium, "the drive starts with a medium")
			require.FileExists(t, note)

			must(t, s.env, s.a.Lock, LockInput{DomID: dom.DomID, Key: "k"})
			must(t, s.env, s.a.Eject, EjectInput{Drive: first.Drive, Key: "k"})
			again := inspect("run-1")
			assert.True(t, again.FromNote, "the second answer says it comes from the note")
			first.Meta, again.Meta, again.FromNote = Meta{}, Meta{}, false
			assert.Equal(t, first, again, "Inspect asked again by the same run after the eject")

			// What the note stands in for: a fresh Inspect of the ejected drive knows no old medium.
			fresh := inspect("run-2")
			assert.Empty(t, fresh.OldMedium, "a fresh Inspect of the ejected drive")

			// run-2's Inspect replaced the note: run-1's Unlock leaves it, run-2's deletes it.
			must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: "k", Vdev: dom.Vdev, RunID: "run-1"})
			require.FileExists(t, note)
			must(t, s.env, s.a.Unlock, UnlockInput{DomID: dom.DomID, Key: "k", Vdev: dom.Vdev, RunID: "run-2"})
			assert.NoFileExists(t, note)

			require.NoError(t, os.WriteFile(note, []byte("not json"), 0o600))
			_, err := run(t, s.env, s.a.Inspect, InspectInput{Host: s.h.Name(), DomID: dom.DomID, Vdev: dom.Vdev, Medium: medium, RunID: "run-3"})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "is not a note")
		})
	}
}

// TestTakenFile: a resumed dom0 run's change took only when QEMU holds, tray closed, the
// fdset the run's AddFD made (as its note keeps it).
func TestTakenFile(t *testing.T) {
	closed, open := false, true
	res := InspectResult{Drive: Drive{Kind: KindDom0}, Medium: "/isos/new.iso", Format: "raw"}
	state := func(file string, tray *bool) qemuState {
		b := &qmp.BlockInfo{TrayOpen: tray}
		if file != "" {
			b.Inserted = &qmp.BlockInserted{File: file}
		}
		return qemuState{block: b}
	}
	stub := res
	stub.Drive.Kind = KindStubdom
	eject := res
	eject.Medium = ""
	for _, tc := range []struct {
		name string
		res  InspectResult
		q    qemuState
		want string
	}{
		{"taken", res, state("/dev/fdset/3", &closed), "/dev/fdset/3"},
		{"another set in the drive", res, state("/dev/fdset/2", &closed), ""},
		{"tray open", res, state("/dev/fdset/3", &open), ""},
		{"empty drive", res, state("", &open), ""},
		{"a medium by path", res, state("/isos/new.iso", &closed), ""},
		{"stubdom", stub, state("/dev/fdset/3", &closed), ""},
		{"eject", eject, state("", &open), ""},
		{"QEMU without the drive", res, qemuState{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, takenFile(tc.res, tc.q, 3))
		})
	}
}

// TestNoteAddedFdset: the run's note keeps the set AddFD made for the medium the run asked
// for; an AddFD of the old medium (a restore) clears it, so that the old medium back in the
// drive is never taken for the change; another run's note is left alone.
func TestNoteAddedFdset(t *testing.T) {
	path := t.TempDir() + "/note"
	res := InspectResult{Drive: Drive{Kind: KindDom0}, Medium: "/isos/new.iso", Format: "raw", OldMedium: "/isos/old.iso", OldFormat: "raw"}
	require.NoError(t, writeInspectNote(path, inspectNote{RunID: "run-1", Result: res}))
	added := func() *int64 {
		n, ok, err := readInspectNote(path, "run-1")
		require.NoError(t, err)
		require.True(t, ok)
		return n.AddedFdset
	}

	require.NoError(t, noteAddedFdset(path, "run-1", "/isos/new.iso", "raw", 3))
	require.NotNil(t, added())
	assert.EqualValues(t, 3, *added())
	require.NoError(t, noteAddedFdset(path, "run-1", "/isos/old.iso", "raw", 4), "the restore's AddFD")
	assert.Nil(t, added(), "the old medium's set is not the change's")
	require.NoError(t, noteAddedFdset(path, "run-1", "/isos/new.iso", "qcow2", 5))
	assert.Nil(t, added(), "the same path in another format is another medium")
	require.NoError(t, noteAddedFdset(path, "run-2", "/isos/new.iso", "raw", 6))
	assert.Nil(t, added(), "another run's AddFD leaves this run's note alone")
}

// TestFdsetOfFilename: only the names FdsetFilename makes are fdsets.
func TestFdsetOfFilename(t *testing.T) {
	for file, want := range map[string]int64{"/dev/fdset/0": 0, "/dev/fdset/17": 17} {
		id, ok := FdsetOfFilename(file)
		assert.True(t, ok, file)
		assert.Equal(t, want, id, file)
	}
	for _, file := range []string{"", "/isos/new.iso", "/dev/fdset/", "/dev/fdset/07", "/dev/fdset/3x", "/dev/fdset/-1 ", "/dev/xvdc"} {
		_, ok := FdsetOfFilename(file)
		assert.False(t, ok, "%q", file)
	}
}

package xensim

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/simqemu"
)

// QMP commands the medium counters follow: the two a medium change is made of, in libxl's
// cd-insert and in cdswap (qapi/block.json).
const (
	cmdEject        = "eject"
	cmdChangeMedium = "blockdev-change-medium"
)

// DriveMedia is what the host's QEMU saw happen to one drive's medium, counted from the QMP
// replies on the guest's monitors (see Host.Media).
type DriveMedia struct {
	Domain string `json:"domain"`
	DomID  uint32 `json:"domid"`
	Vdev   string `json:"vdev"`
	// Changes counts the blockdev-change-medium commands QEMU carried out on the drive.
	Changes int `json:"changes"`
	// Ejects counts the eject commands QEMU carried out on the drive.
	Ejects int `json:"ejects"`
	// Out reports a drive whose medium an eject took out and no change has put in since
	// (for good, after an eject that no change follows).
	Out bool `json:"out"`
}

// MediaCounts are the host's medium counters: since it started, or since ResetMedia. A
// command counts when QEMU carried it out, even if its reply was then lost (DropBeforeReply):
// the counts are QEMU's, not the client's.
type MediaCounts struct {
	// Drives lists every drive of a guest with QMP, in domid order.
	Drives []DriveMedia `json:"drives"`
	// Changes and Ejects add up the drives'.
	Changes int `json:"changes"`
	Ejects  int `json:"ejects"`
	// Out is the number of drives with their medium out now; MaxOut the most there were at
	// once, and MaxOutAt when that was first reached (zero if never).
	Out      int       `json:"out"`
	MaxOut   int       `json:"max_out"`
	MaxOutAt time.Time `json:"max_out_at,omitzero"`
}

// mediaLog keeps the medium counters of a host. Every guest's QEMU reports to it (see
// simqemu.Config.OnCall) before its reply leaves, so that a toolstack acting on a reply
// never runs ahead of the counts: Out rises when the reply to an eject is on its way and
// falls when the reply to the change that ends it is, which makes MaxOut a bound no
// interleaving of the host's drives can hide.
type mediaLog struct {
	mu       sync.Mutex // guards every field below
	drives   map[driveKey]*DriveMedia
	out      int
	maxOut   int
	maxOutAt time.Time
}

// driveKey names a drive: its guest's domid and QEMU's drive id ("ide-5632").
type driveKey struct {
	domid uint32
	qemu  string
}

func newMediaLog() *mediaLog {
	return &mediaLog{drives: map[driveKey]*DriveMedia{}}
}

// add registers the cdrom of d, so that a drive never touched is listed with zero counts.
func (m *mediaLog) add(d *domain) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := driveKey{d.info.DomID, d.info.DevID.QEMUID()}
	m.drives[k] = &DriveMedia{Domain: d.info.Name, DomID: d.info.DomID, Vdev: d.info.Vdev}
}

// observe is the OnCall of d's QEMU.
func (m *mediaLog) observe(d *domain, c simqemu.Call) {
	if !c.OK || (c.Command != cmdEject && c.Command != cmdChangeMedium) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := driveKey{d.info.DomID, c.Drive}
	dm := m.drives[k]
	if dm == nil {
		// A drive QEMU knows by a name we did not register (the deprecated "device" name
		// of another drive): count it under that name rather than lose it.
		dm = &DriveMedia{Domain: d.info.Name, DomID: d.info.DomID, Vdev: c.Drive}
		m.drives[k] = dm
	}
	switch c.Command {
	case cmdEject:
		dm.Ejects++
		if !dm.Out {
			dm.Out = true
			m.out++
			if m.out > m.maxOut {
				m.maxOut, m.maxOutAt = m.out, time.Now()
			}
		}
	case cmdChangeMedium:
		dm.Changes++
		if dm.Out {
			dm.Out = false
			m.out--
		}
	}
}

// counts returns a copy of the counters, the drives in domid order.
func (m *mediaLog) counts(order []*domain) MediaCounts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.countsLocked(order)
}

// countsLocked is counts; m.mu is held.
func (m *mediaLog) countsLocked(order []*domain) MediaCounts {
	c := MediaCounts{Drives: []DriveMedia{}, Out: m.out, MaxOut: m.maxOut, MaxOutAt: m.maxOutAt}
	// Drives counted under another name than the cdrom's follow their guest's cdrom.
	byDomain := map[uint32][]*DriveMedia{}
	cdrom := xen.DevID(CDROMDevID).QEMUID()
	for k, dm := range m.drives {
		if k.qemu != cdrom {
			byDomain[k.domid] = append(byDomain[k.domid], dm)
		}
	}
	for _, d := range order {
		list := byDomain[d.info.DomID]
		slices.SortFunc(list, func(a, b *DriveMedia) int { return strings.Compare(a.Vdev, b.Vdev) })
		if dm, ok := m.drives[driveKey{d.info.DomID, d.info.DevID.QEMUID()}]; ok {
			list = append([]*DriveMedia{dm}, list...)
		}
		for _, dm := range list {
			c.Drives = append(c.Drives, *dm)
			c.Changes += dm.Changes
			c.Ejects += dm.Ejects
		}
	}
	return c
}

// reset zeroes the counts and returns them as they were. The drives out stay out (their
// media are still out), and MaxOut starts again from their number.
func (m *mediaLog) reset(order []*domain) MediaCounts {
	m.mu.Lock()
	defer m.mu.Unlock()
	before := m.countsLocked(order)
	for _, dm := range m.drives {
		dm.Changes, dm.Ejects = 0, 0
	}
	m.maxOut, m.maxOutAt = m.out, time.Time{}
	if m.out > 0 {
		m.maxOutAt = time.Now()
	}
	return before
}

// Media returns the host's medium counters: for each drive, how many times its QEMU
// carried out eject and blockdev-change-medium, and how many drives had their medium out
// (ejected, not yet changed) now and at most at once. They are counted from QEMU's replies,
// real or fake, not from what any toolstack says it did.
func (h *Host) Media() MediaCounts {
	return h.media.counts(h.doms)
}

// ResetMedia zeroes the medium counters, for a test or a benchmark that runs several
// batches on one host, and returns them as they were just before; drives whose medium is
// out stay counted as out.
func (h *Host) ResetMedia() MediaCounts {
	return h.media.reset(h.doms)
}

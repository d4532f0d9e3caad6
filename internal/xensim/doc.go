// Package xensim is a simulated Xen dom0: one host with a name, whose xenstore, QEMUs,
// blkback and stub domains speak the real protocols, so that cdswap's worker, its tests and
// its benchmarks can change CD-ROM media end to end on a machine without Xen.
//
// Start brings up, under one folder DIR:
//
//   - DIR/xenstored.sock: our in-memory xenstored (package xenstored), the XENSTORED_PATH for
//     Debian's xenstore-utils and for the worker. The domains are laid out in it as libxl lays
//     them out (xen-cdrom-facts §2.1): Domain-0, each HVM guest's /local/domain/<domid>, /vm/<uuid>,
//     /libxl/<domid>/dm-version and its cdrom on hdc (devid 5632).
//   - DIR/run: libxl's run folder (XEN_RUN_DIR): qmp-libxl-<domid> for every qemu-xen guest,
//     empty-cdrom.<domid> (created 0400 as libxl creates it) for every stubdom guest, and the
//     private QMP monitor of each simulated stub domain.
//   - DIR/lib: libxl's userdata folder (XEN_LIB_DIR): each guest's
//     userdata-d.<domid>.<uuid>.libxl-json and its userdata-l.* lock files.
//   - DIR/isos: a few small ISO 9660 images (and a qcow2 file, for format-mismatch tests).
//   - DIR/control.sock: the fault knobs and the medium counters, as JSON over HTTP (see
//     Host.SetFault, Host.Media and the `xensim ctl` command).
//   - DIR/xensim.json: a summary of the host for scripts; DIR/xensim.lock: held while the host
//     runs, so that a second xensim on the same DIR fails clearly.
//
// Three kinds of guest exist (Kind): qemu-xen in a Linux stub domain, whose cdrom is a phy vbd
// of the stub domain (the shape of libxl's stubdom cd-insert, Xen 4.20); qemu-xen in dom0,
// whose cdrom is a qdisk backend; and qemu-xen-traditional, which has no QMP socket and which
// the job must refuse.
//
// Behind xenstore run the parts of dom0 and of the stub domains that cd-insert depends on:
//
//   - blkback (with the block hotplug script): a new vbd backend at Initialising gets its
//     physical device (a read-only loop device when the guest's QEMU is real, since QEMU
//     refuses format=host_device on a regular file), hotplug-status and InitWait, and a stub
//     domain's frontend then connects. On online=0 and Closing it closes, unless the stub
//     domain still holds the medium open, as blkfront refuses to close an open device.
//   - a stub domain agent per stubdom guest: when its cdrom vbd connects it opens the backing
//     device read-only and add-fd's it over its own QMP monitor with the opaque
//     "stub-devid:<devid>", also for the empty-cdrom file of an eject (facts §4).
//   - a QEMU per qemu-xen guest: a real qemu-system-x86_64 or the qmptest fake (simqemu).
//
// Fault knobs (Faults, DomainFaults) break each of these on purpose, at start or at run time.
//
// The medium counters (Host.Media) are what a test of many changes asserts on instead of
// trusting the toolstack: each guest's QEMU, real (through its monitor proxy) or fake,
// reports every eject and blockdev-change-medium it carried out before the client gets the
// reply, so the host knows how many times each drive was changed and how many drives had
// their medium out at once.
//
// Timing, for a toolstack that talks to the host: a new stub domain vbd gets its hotplug
// result and InitWait at once; the stub domain's blkfront connects 100 ms later (so that a
// toolstack waiting for exactly InitWait, as libxl does, sees it), and the agent add-fd's
// Config.AgentDelay (100 ms) after that. The vbds present at start are cold-plugged: QEMU
// opened them from its command line and there is no fdset for them, as on a real host after
// boot.
//
// One behaviour of QEMU before 9.1 that the real QEMU and the fake share, and that a
// toolstack must allow for: when the last QMP client disconnects, QEMU closes every fdset fd
// no drive uses. The agent connects only to add-fd; if no other client is connected when it
// hangs up, its fd is gone at once. libxl holds one QMP connection from the eject to
// blockdev-change-medium, which keeps the fd alive.
package xensim

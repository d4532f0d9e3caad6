// Package qmptest is a scriptable fake QEMU for tests: it serves QMP on unix sockets, models
// ide-cd drives with their trays and media and the fd sets that add-fd fills, and injects
// faults (a guest-locked tray, failed or slow commands, dropped connections).
//
// It answers as QEMU 7.2 (Debian 12) does, byte for byte where that was checked against the
// real binary: the greeting, CRLF after every message, the ", "/": " separators and QEMU's
// member order (its QDict hash order, not the schema's), the echo of any JSON "id", the error
// classes and texts, and DEVICE_TRAY_MOVED, STOP and RESUME events with timestamps, which
// reach only connections past qmp_capabilities and come before the reply of the command that
// caused them.
//
// # Commands
//
// qmp_capabilities, query-version, query-status, query-block, stop, cont, eject,
// blockdev-change-medium, add-fd, remove-fd and query-fdsets. Every other name is
// CommandNotFound "The command X has not been found"; before qmp_capabilities every name but
// qmp_capabilities is CommandNotFound "Expecting capabilities negotiation with
// 'qmp_capabilities'". Arguments are checked like QEMU's generated marshallers ("Parameter
// 'filename' is missing", "Invalid parameter type for 'force', expected: boolean", "Parameter
// 'x' is unexpected").
//
// # Monitors and connections
//
// Listen adds a monitor; call it once per socket (libxl's monitor and a stubdom agent's). All
// monitors share the drives, the run state and the fd sets, and events go to every
// negotiated connection. Each monitor serves one connection at a time, like a QEMU chardev
// socket server: a second client connects, but gets its greeting only after the first one
// has gone. Input is split into messages by brace counting, as QEMU's JSON streamer does,
// not by lines; a lexical error discards the message and skips to the next structural or
// control character.
//
// # Drives
//
// Each drive in Options.CDROMs is an ide-cd "ide-<devid>" with -drive readonly=on, as libxl
// starts them: query-block shows it with "device" and "qdev" both equal to the id. eject and
// blockdev-change-medium take "id" (or the deprecated "device"), open the tray (an unforced
// open of a locked tray fails with "Device 'ide-5632' is locked and force was not specified,
// wait for tray to open and try again" and sends the guest an eject request; a forced one
// unlocks it), remove the medium, and, for a change, insert the new one and close the tray.
// The new medium is opened before the tray is touched, so its errors come first, with
// QEMU's texts ("Could not open '...': No such file or directory", "Could not dup FD for
// /dev/fdset/N flags 0: Permission denied", "'file' driver requires '...' to be a regular
// file", "Image is not in qcow2 format", "Unknown driver 'x'"). The formats are raw, qcow2
// (probed when none is given), file, host_device and host_cdrom; QEMU's many others are
// refused as unknown.
//
// A medium is a descriptor the fake holds: its own dup of an fd set member for
// /dev/fdset/N (the newest member whose access mode matches, O_RDONLY for a read-only drive),
// or its own open of a path. Block and HeldFiles show what is held, so a test can check that
// the old medium was let go.
//
// # Fd sets
//
// add-fd keeps the descriptor that came with the command (SCM_RIGHTS; the last message that
// carried descriptors wins, extra descriptors are closed) and reports it by the fake's own
// descriptor number, as QEMU reports its own. Sets are listed highest id first. When a member
// is really closed follows QEMU 7.2's monitor_fdset_cleanup: remove-fd only marks members
// while the VM is paused (they stay listed, even after cont, until the next cleanup); a set
// whose dup is the inserted medium stays listed, with an empty "fds", until the medium goes;
// and when a connection closes and no monitor connection is left, every member of a set
// with no dup in use is closed (the "fd set lost on disconnect" of QEMU before 9.1). With
// Options.Version 9.1 or later, remove-fd closes at once whatever the run state and a
// disconnect closes nothing (QEMU commits 87d67fadb9db and 881172f3f9df).
//
// # Versions
//
// Options.Version changes what the greeting and query-version say and a few schema
// details: "id" in eject and blockdev-change-medium needs 2.8, "force" in
// blockdev-change-medium needs 7.1, the "oob" capability 3.0. Everything else is 7.2's
// behaviour whatever the version.
//
// # Known differences from QEMU
//
// Node names ("#block123") and descriptor numbers differ; image info covers the raw and
// qcow2 fields only; a message is limited to 1 MiB (QEMU: 64 MiB); file locking, block jobs,
// throttling and the other several hundred commands are not modelled.
package qmptest

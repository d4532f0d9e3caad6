package qmp_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/simqemu/qemuproc"
)

// cdromDevID is vdev hdc, whose drive libxl names cdromID, used as both the block backend
// name and the qdev id.
const (
	cdromDevID xen.DevID = 5632
	cdromID              = "ide-5632"
)

// startQEMU starts a real QEMU with one empty IDE CD-ROM named like libxl names hdc, and
// returns the path of its QMP socket once QEMU listens there. The VM runs (SeaBIOS finds
// nothing to boot), since QEMU closes removed fds only while the VM runs. Without
// qemu-system-x86_64 the test fails under CI=true and is skipped otherwise.
func startQEMU(tb testing.TB) string {
	tb.Helper()
	return startQEMUWith(tb, "")
}

// startQEMULockingGuest is startQEMU with a guest that keeps the CD-ROM's tray locked, as
// a Linux guest with the disc mounted does: it boots lockingGuest from an IDE disk.
func startQEMULockingGuest(tb testing.TB) string {
	tb.Helper()
	img := filepath.Join(tb.TempDir(), "boot.img")
	disk := make([]byte, 4096)
	copy(disk, lockingGuest)
	disk[510], disk[511] = 0x55, 0xaa // the MBR's boot signature, so SeaBIOS boots it
	if err := os.WriteFile(img, disk, 0o600); err != nil {
		tb.Fatal(err)
	}
	return startQEMUWith(tb, img)
}

// lockingGuest is a boot sector that keeps the tray of the master drive on the secondary
// IDE channel (cdromID) locked: at every timer tick it sends the drive a REQUEST SENSE of
// length 0, which clears a pending UNIT ATTENTION (after a medium change the drive refuses
// other commands until then), and a PREVENT ALLOW MEDIUM REMOVAL with Prevent set, each as
// an ATAPI PACKET command by PIO (hw/ide/atapi.c cmd_request_sense and
// cmd_prevent_allow_medium_removal). Its source, for GNU as:
//
//	.code16
//	_start: cli; xor %ax,%ax; mov %ax,%ds; mov %ax,%ss; mov $0x7c00,%sp
//	        mov $0x376,%dx; mov $0x02,%al; out %al,%dx  # nIEN: no IDE interrupts
//	        sti
//	again:  mov $0x7c00+(sense-_start),%si; call packet
//	        mov $0x7c00+(prevent-_start),%si; call packet
//	        hlt; jmp again                               # until the next timer tick
//	packet: mov $0x176,%dx; mov $0xa0,%al; out %al,%dx  # select the master
//	        mov $0x171,%dx; xor %al,%al; out %al,%dx     # features: PIO
//	        mov $0x174,%dx; out %al,%dx                  # byte count limit 0
//	        mov $0x175,%dx; out %al,%dx
//	        mov $0x177,%dx; mov $0xa0,%al; out %al,%dx   # PACKET
//	1:      in %dx,%al; test $0x80,%al; jnz 1b           # wait while BSY
//	        test $0x08,%al; jz 2f                        # no DRQ: refused
//	        mov $0x170,%dx; mov $6,%cx; cld; rep outsw   # the 12-byte packet
//	2:      ret
//	sense:   .byte 0x03,0,0,0,0,0,0,0,0,0,0,0            # REQUEST SENSE, length 0
//	prevent: .byte 0x1e,0,0,0,1,0,0,0,0,0,0,0            # PREVENT ALLOW MEDIUM REMOVAL, prevent
var lockingGuest = []byte{
	0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00, 0x7c, 0xba, 0x76,
	0x03, 0xb0, 0x02, 0xee, 0xfb, 0xbe, 0x4d, 0x7c, 0xe8, 0x09, 0x00, 0xbe,
	0x59, 0x7c, 0xe8, 0x03, 0x00, 0xf4, 0xeb, 0xf1, 0xba, 0x76, 0x01, 0xb0,
	0xa0, 0xee, 0xba, 0x71, 0x01, 0x30, 0xc0, 0xee, 0xba, 0x74, 0x01, 0xee,
	0xba, 0x75, 0x01, 0xee, 0xba, 0x77, 0x01, 0xb0, 0xa0, 0xee, 0xec, 0xa8,
	0x80, 0x75, 0xfb, 0xa8, 0x08, 0x74, 0x09, 0xba, 0x70, 0x01, 0xb9, 0x06,
	0x00, 0xfc, 0xf3, 0x6f, 0xc3, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00,
}

// startQEMUWith starts the QEMU of startQEMU, booting bootDisk (a raw image) if it is not "".
func startQEMUWith(tb testing.TB, bootDisk string) string {
	tb.Helper()
	bin := testenv.RequireQEMU(tb)
	sock := filepath.Join(testenv.SocketDir(tb), "qmp.sock")
	// No InitialMedium: the drive starts empty, like libxl's empty cdrom before a medium
	// is inserted.
	p, err := qemuproc.Start(testenv.Context(tb, 20*time.Second), qemuproc.Config{
		Binary: bin, CDROMs: []xen.DevID{cdromDevID}, BootDisk: bootDisk, Monitors: []string{sock}})
	if err != nil {
		tb.Fatalf("start %s: %v", bin, err)
	}
	tb.Cleanup(func() { p.Stop() })
	return sock
}

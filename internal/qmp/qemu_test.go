package qmp_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/testenv"
)

// cdromID is the drive libxl creates for vdev hdc (devid 5632), used as both the block
// backend name and the qdev id, as libxl does.
const cdromID = "ide-5632"

// startQEMU starts a real QEMU with one empty IDE CD-ROM named like libxl names hdc, and
// returns the path of its QMP socket. The VM runs (SeaBIOS finds nothing to boot), since
// QEMU closes removed fds only while the VM runs. Without qemu-system-x86_64 the test fails
// under CI=true and is skipped otherwise.
func startQEMU(tb testing.TB) string {
	tb.Helper()
	return startQEMUWith(tb)
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
	return startQEMUWith(tb,
		"-drive", "if=none,format=raw,id=boot,file="+img,
		"-device", "ide-hd,drive=boot,bus=ide.0,unit=0")
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

// startQEMUWith starts the QEMU of startQEMU with extra arguments.
func startQEMUWith(tb testing.TB, extra ...string) string {
	tb.Helper()
	bin := testenv.RequireQEMU(tb)
	sock := filepath.Join(testenv.SocketDir(tb), "qmp.sock")
	args := []string{
		"-machine", "pc", "-nodefaults", "-no-user-config", "-display", "none",
		"-accel", "tcg", "-m", "64",
		// No file=: the drive starts empty, like libxl's empty cdrom before a medium is
		// inserted.
		"-drive", "if=none,readonly=on,id=" + cdromID,
		"-device", "ide-cd,id=" + cdromID + ",drive=" + cdromID + ",bus=ide.1,unit=0",
		"-qmp", "unix:" + sock + ",server=on,wait=off",
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	out := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	// QEMU listens on the socket before the machine starts; wait for it. The file appears at
	// bind(), a moment before listen(), so look for the listening socket itself.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if listening(sock) {
			return sock
		}
		select {
		case <-exited:
			tb.Fatalf("%s exited before creating %s: %s", bin, sock, out)
		case <-ctx.Done():
			tb.Fatalf("%s did not create %s: %s", bin, sock, out)
		case <-tick.C:
		}
	}
}

// listening reports whether a unix socket is listening at path, from /proc/net/unix (whose
// Flags column is __SO_ACCEPTCON, 00010000, for a listener). Without /proc it falls back to
// the socket file existing and accepting a connection; QEMU serves the next client once that
// probe hangs up.
func listening(path string) bool {
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		if _, err := os.Stat(path); err != nil {
			return false
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		// Num RefCount Protocol Flags Type St Inode Path
		if len(f) == 8 && f[7] == path && f[3] == "00010000" {
			return true
		}
	}
	return false
}

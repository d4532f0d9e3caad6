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

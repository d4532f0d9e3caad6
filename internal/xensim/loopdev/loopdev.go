// Package loopdev attaches files to read-only loop devices with losetup(8).
//
// The simulated host uses them where a real dom0 hands a block device to QEMU: a stubdom's
// QEMU opens its cdrom as /dev/xvdc with format host_device, and QEMU refuses host_device on a
// regular file. A loop device over the ISO is the closest thing a machine without Xen has.
// Making one needs root, losetup and /dev/loop-control; Available says which is missing so
// that the simulator can say so and fall back to plain files.
package loopdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// ErrUnavailable is wrapped by every error that says loop devices cannot be made here.
var ErrUnavailable = errors.New("read-only loop devices are unavailable")

// ErrNotLoop reports a device name that is not /dev/loopN.
var ErrNotLoop = errors.New("not a loop device")

// loopControl is the kernel's loop allocation device (drivers/block/loop.c); losetup --find
// needs it to get a free device.
const loopControl = "/dev/loop-control"

// Available returns nil when read-only loop devices can be made here, or an error wrapping
// ErrUnavailable that says what is missing and how to get it.
func Available() error {
	if euid := os.Geteuid(); euid != 0 {
		return fmt.Errorf("not root (euid %d): run as root to make loop devices: %w", euid, ErrUnavailable)
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		return fmt.Errorf("no losetup in PATH: install util-linux (Debian: mount): %w", ErrUnavailable)
	}
	fi, err := os.Stat(loopControl)
	if err != nil {
		return fmt.Errorf("no %s (%w): load the loop module (modprobe loop) or give the container the loop devices (--privileged): %w",
			loopControl, err, ErrUnavailable)
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return fmt.Errorf("%s is not a character device: %w", loopControl, ErrUnavailable)
	}
	return nil
}

// AttachReadOnly attaches file to a free loop device, read-only, and returns the device's
// path (such as /dev/loop3). The caller must Detach it: loop devices outlive the process.
func AttachReadOnly(ctx context.Context, file string) (string, error) {
	if err := Available(); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return "", fmt.Errorf("attach %s: %w", file, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("attach %s: %w", file, err)
	}
	out, err := losetup(ctx, "--find", "--show", "--read-only", abs)
	if err != nil {
		return "", fmt.Errorf("attach %s: %w", file, err)
	}
	dev := strings.TrimSpace(out)
	if !loopName.MatchString(dev) {
		return "", fmt.Errorf("attach %s: losetup printed %q, want /dev/loopN", file, dev)
	}
	return dev, nil
}

// Detach detaches the loop device dev. A device that is not attached is not an error, so
// that cleanups can run twice. While something holds the device open the kernel only marks
// it to be freed on the last close (autoclear).
func Detach(ctx context.Context, dev string) error {
	if !loopName.MatchString(dev) {
		return fmt.Errorf("detach %q: %w", dev, ErrNotLoop)
	}
	if _, err := BackingFile(dev); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := losetup(ctx, "--detach", dev); err != nil {
		if _, serr := BackingFile(dev); errors.Is(serr, os.ErrNotExist) {
			return nil // detached meanwhile, by someone else
		}
		return fmt.Errorf("detach %s: %w", dev, err)
	}
	return nil
}

// BackingFile returns the file attached to the loop device dev, from sysfs. An error wrapping
// os.ErrNotExist means dev is not attached (or does not exist).
func BackingFile(dev string) (string, error) {
	if !loopName.MatchString(dev) {
		return "", fmt.Errorf("backing file of %q: %w", dev, ErrNotLoop)
	}
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	if err != nil {
		return "", fmt.Errorf("backing file of %s: %w", dev, err)
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// loopName matches the device paths losetup prints.
var loopName = regexp.MustCompile(`^/dev/loop[0-9]+$`)

func losetup(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "losetup", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("losetup %s: %s: %w", strings.Join(args, " "), strings.TrimSpace(stderr.String()), err)
	}
	return stdout.String(), nil
}

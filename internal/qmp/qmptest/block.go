package qmptest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// drive is an ide-cd device with its -drive backend (hw/ide/atapi.c and blockdev.c, as far
// as QMP can see them).
type drive struct {
	id       string
	trayOpen bool
	locked   bool // the guest's PREVENT ALLOW MEDIUM REMOVAL
	// rw is the backend's root state: -drive readonly=on makes it false; a medium inserted
	// with read-only-mode read-write turns it on for the following "retain" changes.
	rw  bool
	med *medium
	// ejectAsked is a pending eject request the simulated guest will answer; gen counts
	// medium insertions, which clear such a request (ide_cd_change_cb).
	ejectAsked bool
	gen        int
}

// medium is an inserted image: the descriptor the fake holds (a dup of an fd set member, or
// its own open of a path) and what query-block reports about it.
type medium struct {
	f         *os.File
	fd        int
	filename  string
	drv       string
	ro        bool
	fromFdset bool
	fdset     int64
	node      string
	image     *qdict
}

func (s *Server) drive(id string) *drive {
	for _, d := range s.drives {
		if d.id == id {
			return d
		}
	}
	return nil
}

// formatDrivers are the drivers the fake can open. QEMU has many more; any other name is
// refused as QEMU refuses a name it does not know.
var formatDrivers = []string{"raw", "qcow2", "file", "host_device", "host_cdrom"}

func knownDriver(name string) bool { return slices.Contains(formatDrivers, name) }

// qcow2Magic starts every qcow2 image ("QFI\xfb").
const qcow2Magic = 0x514649fb

// getDrive is blockdev.c's qmp_get_blk.
func (s *Server) getDrive(a args) (*drive, string, *qerror) {
	dev, hasDev := a.str("device")
	id, hasID := a.str("id")
	if hasDev == hasID {
		return nil, "", genericErr("Need exactly one of 'device' and 'id'")
	}
	name := dev
	if hasID {
		name = id
	}
	d := s.drive(name)
	if d == nil {
		return nil, "", &qerror{classDeviceNotFound, fmt.Sprintf("Device '%s' not found", name)}
	}
	return d, name, nil
}

func (s *Server) eject(_ *conn, a args) (any, *qerror) {
	d, name, qe := s.getDrive(a)
	if qe != nil {
		return nil, qe
	}
	if qe := s.openTray(d, name, a.bool("force")); qe != nil {
		return nil, qe
	}
	s.dropMedium(d) // "Ejecting a device with no media results in success"
	return nil, nil
}

// changeMedium is qmp_blockdev_change_medium: open the new image first (so its errors come
// before a locked tray's), then open the tray, swap the media and close the tray.
func (s *Server) changeMedium(_ *conn, a args) (any, *qerror) {
	d, name, qe := s.getDrive(a)
	if qe != nil {
		return nil, qe
	}
	rw := d.rw
	if mode, ok := a.str("read-only-mode"); ok {
		switch mode {
		case "read-only":
			rw = false
		case "read-write":
			rw = true
		}
	}
	filename, _ := a.str("filename")
	format, hasFormat := a.str("format")
	if hasFormat && format == "" {
		return nil, genericErr("Unknown driver ''")
	}
	m, qe := s.openMedium(filename, format, rw)
	if qe != nil {
		return nil, qe
	}
	if qe := s.openTray(d, name, a.bool("force")); qe != nil {
		s.closeMedium(m)
		return nil, qe
	}
	s.dropMedium(d)
	d.med, d.rw = m, rw
	d.trayOpen = false
	d.ejectAsked = false
	d.gen++
	s.emitTrayMoved(d)
	return nil, nil
}

// openTray is blockdev.c's do_open_tray for an ide-cd.
func (s *Server) openTray(d *drive, name string, force bool) *qerror {
	if d.trayOpen {
		return nil
	}
	locked := d.locked
	if locked {
		s.ejectRequest(d, force)
	}
	if !locked || force {
		d.trayOpen = true
		s.emitTrayMoved(d)
	}
	if locked && !force {
		return genericErr("Device '%s' is locked and force was not specified, wait for tray to open and try again", name)
	}
	return nil
}

// ejectRequest is ide_cd_eject_request_cb: a forced request unlocks the tray; an unforced
// one is left to the guest, which the fake simulates when GuestUnlocksOnEject is set.
func (s *Server) ejectRequest(d *drive, force bool) {
	if force {
		d.locked = false
		return
	}
	if s.opts.GuestUnlocksOnEject <= 0 || d.ejectAsked {
		return
	}
	d.ejectAsked = true
	gen := d.gen
	s.afterFunc(s.opts.GuestUnlocksOnEject, func() {
		if !d.ejectAsked || d.gen != gen {
			return
		}
		d.ejectAsked = false
		// The guest's START STOP UNIT with LoEj: unlock, then open the tray (blk_eject emits
		// the event); the medium stays in until the host removes it.
		d.locked = false
		if !d.trayOpen {
			d.trayOpen = true
			s.emitTrayMoved(d)
		}
		s.log.Debug("qmptest guest opened the tray", "id", d.id)
	})
}

// dropMedium removes the drive's medium, letting go of its descriptor.
func (s *Server) dropMedium(d *drive) {
	if d.med != nil {
		s.closeMedium(d.med)
		d.med = nil
	}
}

// closeMedium closes the medium's descriptor; for an fd set's dup this may let the set's own
// descriptors go (monitor_fdset_dup_fd_remove).
func (s *Server) closeMedium(m *medium) {
	m.f.Close()
	if m.fromFdset {
		s.releaseDup(m.fdset)
	}
}

func (s *Server) queryBlock(*conn, args) (any, *qerror) {
	out := qlist{}
	for _, d := range s.drives {
		info := obj("device", d.id, "qdev", d.id, "type", "unknown", "removable", true, "locked", d.locked)
		if m := d.med; m != nil {
			info.put("inserted", obj(
				"file", m.filename, "node-name", m.node, "ro", m.ro, "drv", m.drv,
				"backing_file_depth", 0, "encrypted", false, "detect_zeroes", "off",
				"bps", 0, "bps_rd", 0, "bps_wr", 0, "iops", 0, "iops_rd", 0, "iops_wr", 0,
				"image", m.image,
				"cache", obj("writeback", true, "direct", false, "no-flush", false),
				"write_threshold", 0))
		}
		info.put("tray_open", d.trayOpen)
		info.put("io-status", "ok")
		out = append(out, info)
	}
	return out, nil
}

// openMedium is bdrv_open of a new medium for blockdev-change-medium, reduced to the file
// protocols (file, host_device, host_cdrom) and the raw and qcow2 formats. format "" probes.
func (s *Server) openMedium(filename, format string, rw bool) (*medium, *qerror) {
	if format != "" && !knownDriver(format) {
		return nil, genericErr("Unknown driver '%s'", format)
	}
	fdsetPath := strings.HasPrefix(filename, "/dev/fdset/")
	// The protocol driver: named by the format, else probed from the name
	// (hdev_probe_device: a block or character device is a host_device).
	proto := "file"
	switch format {
	case "file", "host_device", "host_cdrom":
		proto = format
	default:
		if fi, err := os.Stat(filename); err == nil && !fdsetPath && fi.Mode()&os.ModeDevice != 0 {
			proto = "host_device"
		}
	}
	if filename == "" {
		return nil, genericErr("The '%s' block driver requires a file name", proto)
	}

	flags := os.O_RDONLY
	if rw {
		flags = os.O_RDWR
	}
	if proto == "host_cdrom" {
		flags |= syscall.O_NONBLOCK
	}
	m := &medium{filename: filename, ro: !rw}
	if fdsetPath {
		id, err := strconv.ParseInt(strings.TrimPrefix(filename, "/dev/fdset/"), 10, 64)
		if err != nil || id < 0 {
			return nil, genericErr("Could not parse fdset %s", filename)
		}
		f, fd, errno := s.dupFromFdset(id, flags)
		if errno != 0 {
			return nil, genericErr("Could not dup FD for %s flags %x: %s", filename, flags, strerror(errno))
		}
		m.f, m.fd, m.fromFdset, m.fdset = f, fd, true, id
	} else {
		fd, err := unix.Open(filename, flags|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, genericErr("Could not open '%s': %s", filename, strerror(errnoOf(err)))
		}
		m.f, m.fd = os.NewFile(uintptr(fd), filename), fd
	}

	fail := func(qe *qerror) (*medium, *qerror) {
		s.closeMedium(m)
		return nil, qe
	}
	var st unix.Stat_t
	if err := unix.Fstat(m.fd, &st); err != nil {
		return fail(genericErr("Could not stat '%s': %s", filename, strerror(errnoOf(err))))
	}
	isReg := st.Mode&unix.S_IFMT == unix.S_IFREG
	isDev := st.Mode&unix.S_IFMT == unix.S_IFBLK || st.Mode&unix.S_IFMT == unix.S_IFCHR
	switch {
	case proto == "file" && !isReg:
		return fail(genericErr("'file' driver requires '%s' to be a regular file", filename))
	case proto != "file" && !isDev && s.opts.StrictHostDevice:
		return fail(genericErr("'%s' driver requires '%s' to be either a character or block device", proto, filename))
	}

	size := st.Size
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		size = blockDevSize(m.fd)
	}
	drv := format
	if drv == "" {
		drv = "raw"
		var magic [4]byte
		if n, _ := m.f.ReadAt(magic[:], 0); n == 4 && binary.BigEndian.Uint32(magic[:]) == qcow2Magic {
			drv = "qcow2"
		}
	}
	image := obj("filename", filename, "format", drv, "dirty-flag", false,
		"actual-size", st.Blocks*512, "virtual-size", size)
	if drv == "qcow2" {
		var qe *qerror
		if image, qe = qcow2Info(m.f, filename); qe != nil {
			return fail(qe)
		}
		image.put("actual-size", st.Blocks*512)
	}
	m.drv, m.image = drv, image
	s.nodeSeq++
	m.node = fmt.Sprintf("#block%d", 100+17*s.nodeSeq)
	return m, nil
}

// qcow2Info reads a qcow2 header (docs/interop/qcow2.txt) into ImageInfo.
func qcow2Info(f *os.File, filename string) (*qdict, *qerror) {
	var h [105]byte
	n, _ := f.ReadAt(h[:], 0)
	if n < 72 || binary.BigEndian.Uint32(h[0:]) != qcow2Magic {
		return nil, genericErr("Image is not in qcow2 format")
	}
	version := binary.BigEndian.Uint32(h[4:])
	if version != 2 && version != 3 {
		return nil, genericErr("Unsupported qcow2 version %d", version)
	}
	clusterBits := binary.BigEndian.Uint32(h[20:])
	size := binary.BigEndian.Uint64(h[24:])
	data := obj("compat", "0.10")
	refcountBits := int64(16)
	if version == 3 && n >= 104 {
		incompat := binary.BigEndian.Uint64(h[72:])
		compat := binary.BigEndian.Uint64(h[80:])
		refcountBits = int64(1) << binary.BigEndian.Uint32(h[96:])
		compression := "zlib"
		if incompat&(1<<3) != 0 {
			compression = "zstd"
		}
		data = obj("compat", "1.1", "extended-l2", incompat&(1<<4) != 0,
			"lazy-refcounts", compat&1 != 0, "corrupt", incompat&(1<<1) != 0,
			"refcount-bits", refcountBits, "compression-type", compression)
	} else {
		data.put("refcount-bits", refcountBits)
		data.put("compression-type", "zlib")
	}
	return obj("filename", filename, "format", "qcow2", "dirty-flag", false,
		"actual-size", int64(0), "virtual-size", int64(size), "cluster-size", int64(1)<<clusterBits,
		"format-specific", obj("type", "qcow2", "data", data)), nil
}

// blockDevSize is the BLKGETSIZE64 ioctl, which is how QEMU sizes a host_device.
func blockDevSize(fd int) int64 {
	var size uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); e != 0 {
		return 0
	}
	return int64(size)
}

func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// strerror is glibc's wording of an errno: Go's, with the first letter in upper case
// ("No such file or directory").
func strerror(e syscall.Errno) string {
	s := e.Error()
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

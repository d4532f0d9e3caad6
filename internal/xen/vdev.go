package xen

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadVdev is returned by ParseVdev for a name libxl would not accept.
var ErrBadVdev = errors.New("invalid virtual device name: want xvd<letters>[partition], " +
	"hd[a-d][partition], sd[a-p][partition], d<disk>p<partition> or a device number")

// DevID is a virtual block device number, the <devid> of the xenstore paths
// .../device/vbd/<devid> and the suffix of QEMU's drive id "ide-<devid>".
type DevID int

// Limits of libxl__device_disk_dev_number.
const (
	xvdMaxDisk = 1<<20 - 1 // extended xvd numbering: 20 bits of disk
	xvdMaxPart = 255       // and 8 bits of partition
	hdMaxDisk  = 3         // hda..hdd
	hdMaxPart  = 63
	sdMaxDisk  = 15 // sda..sdp
	sdMaxPart  = 15

	xvdMajor    = 202     // the Xen virtual block device major number
	extendedBit = 1 << 28 // marks the extended xvd numbering (blkif.h)
)

// ParseVdev maps a virtual device name to its device number exactly as libxl's
// libxl__device_disk_dev_number does (tools/libs/light/libxl_device.c):
//
//	xvd<letters>[part], d<disk>p<part>   (disk < 2^20, part < 256)
//	    disk <= 15 && part <= 15 -> (202<<8) | (disk<<4) | part
//	    otherwise                -> (1<<28) | (disk<<8) | part
//	<number> (C base: 123, 0x7b, 0173; at most 2^31-1) -> that number
//	hd<letters>[part] (disk <= 3, part <= 63) -> ((disk<2 ? 3 : 22)<<8) | ((disk&1)<<6) | part
//	sd<letters>[part] (disk <= 15, part <= 15) -> (8<<8) | (disk<<4) | part
//
// Letters count in bijective base 26 (a=0 ... z=25, aa=26 ...); a partition number has no
// leading zero ("hdc0" and "xvda01" are refused, as in libxl).
//
// Where libxl's C parsing would accept nonsense by accident, ParseVdev refuses it: a
// prefix without a letter ("xvd", "hd"; libxl computes a disk of -1), signs and spaces
// (" 5", "d-1p0", "hda+1"), and the empty string (strtoul reads it as 0).
func ParseVdev(vdev string) (DevID, error) {
	bad := func(reason string) (DevID, error) {
		return -1, fmt.Errorf("vdev %q: %s: %w", vdev, reason, ErrBadVdev)
	}
	if vdev == "" {
		return bad("empty name")
	}

	// "d%ip%i": sscanf's %i reads a C integer (decimal, 0x hex or 0 octal).
	if rest, ok := strings.CutPrefix(vdev, "d"); ok {
		if ds, ps, ok := strings.Cut(rest, "p"); ok {
			disk, derr := parseCUint(ds)
			part, perr := parseCUint(ps)
			if derr == nil && perr == nil {
				if disk > xvdMaxDisk || part > xvdMaxPart {
					return bad(fmt.Sprintf("disk %d or partition %d out of range (disk < 2^20, partition < 256)", disk, part))
				}
				return xvdNumber(int(disk), int(part)), nil
			}
		}
		return bad("not of the form d<disk>p<partition>")
	}

	if strings.HasPrefix(vdev, "xvd") {
		disk, part, err := matchVirtdisk(vdev, "xvd", xvdMaxDisk, xvdMaxPart)
		if err != nil {
			return bad(err.Error())
		}
		return xvdNumber(disk, part), nil
	}

	if n, err := parseCUint(vdev); err == nil {
		if n > 1<<31-1 {
			return bad("device number above 2^31-1")
		}
		return DevID(n), nil
	}

	if strings.HasPrefix(vdev, "hd") {
		disk, part, err := matchVirtdisk(vdev, "hd", hdMaxDisk, hdMaxPart)
		if err != nil {
			return bad(err.Error())
		}
		major := 3 // the first IDE controller
		if disk >= 2 {
			major = 22 // the second
		}
		return DevID(major<<8 | (disk&1)<<6 | part), nil
	}

	if strings.HasPrefix(vdev, "sd") {
		disk, part, err := matchVirtdisk(vdev, "sd", sdMaxDisk, sdMaxPart)
		if err != nil {
			return bad(err.Error())
		}
		return DevID(8<<8 | disk<<4 | part), nil
	}
	return bad("unknown prefix")
}

// xvdNumber is the xvd numbering of libxl__device_disk_dev_number.
func xvdNumber(disk, part int) DevID {
	if disk <= 15 && part <= 15 {
		return DevID(xvdMajor<<8 | disk<<4 | part)
	}
	return DevID(extendedBit | disk<<8 | part)
}

// matchVirtdisk is libxl's device_virtdisk_matches: prefix, letters in bijective base 26
// up to maxDisk, then an optional partition number without leading zero up to maxPart.
func matchVirtdisk(s, prefix string, maxDisk, maxPart int) (disk, part int, err error) {
	p := s[len(prefix):]
	disk = -1
	i := 0
	for ; i < len(p) && p[i] >= 'a' && p[i] <= 'z'; i++ {
		disk = (disk+1)*26 + int(p[i]-'a')
		if disk > maxDisk {
			return 0, 0, fmt.Errorf("disk letters beyond %s (at most %d disks)", prefix+diskLetters(uint(maxDisk)), maxDisk+1)
		}
	}
	if i == 0 {
		return 0, 0, fmt.Errorf("no disk letter after %q", prefix)
	}
	p = p[i:]
	if p == "" {
		return disk, 0, nil
	}
	if p[0] == '0' {
		return 0, 0, errors.New("partition number with a leading zero")
	}
	for j := 0; j < len(p); j++ {
		if p[j] < '0' || p[j] > '9' {
			return 0, 0, fmt.Errorf("partition %q is not a number", p)
		}
	}
	n, err := strconv.Atoi(p)
	if err != nil || n > maxPart {
		return 0, 0, fmt.Errorf("partition %s above %d", p, maxPart)
	}
	return disk, n, nil
}

// parseCUint reads a non-negative C integer literal as strtoul(s, &end, 0) or sscanf's %i
// accept it when it fills the whole string: decimal, 0x/0X hex or 0 octal.
func parseCUint(s string) (uint64, error) {
	base := 10
	digits := s
	switch {
	case len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, digits = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, digits = 8, s[1:]
	}
	if digits == "" || digits[0] == '+' || digits[0] == '-' || digits[0] == '_' {
		return 0, errors.New("not a number")
	}
	return strconv.ParseUint(digits, base, 64)
}

// diskLetters is libxl's encode_disk_name: 0 -> "a", 25 -> "z", 26 -> "aa".
func diskLetters(n uint) string {
	var b []byte
	for {
		b = append(b, byte('a'+n%26))
		if n < 26 {
			break
		}
		n = n/26 - 1
	}
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// Vdev is the xvd name of d as libxl__devid_to_vdev computes it: "xvd" + disk letters +
// partition (if not 0), from the minor number only. It always answers in xvd form, so
// Vdev of an hd or sd number names the xvd disk with the same minor number (hdc, 5632, is
// "xvda"); only xvd numbers round-trip through ParseVdev. It returns "" for a negative d.
func (d DevID) Vdev() string {
	if d < 0 {
		return ""
	}
	var minor, nrParts uint
	if d&extendedBit == 0 {
		minor, nrParts = uint(d)&0xff, 16
	} else {
		minor, nrParts = uint(d)&^extendedBit, 256
	}
	name := "xvd" + diskLetters(minor/nrParts)
	if p := minor % nrParts; p != 0 {
		name += strconv.FormatUint(uint64(p), 10)
	}
	return name
}

// String is the decimal number, as it appears in xenstore paths.
func (d DevID) String() string { return strconv.Itoa(int(d)) }

// QEMUID is the id libxl gives the cdrom's -drive and -device in QEMU ("ide-5632"), which
// QMP eject and blockdev-change-medium address.
func (d DevID) QEMUID() string { return "ide-" + d.String() }

// StubOpaque is the opaque string a Linux stubdom puts on the fdset of this disk's PV
// device ("stub-devid:5632"), which libxl looks for in query-fdsets.
func (d DevID) StubOpaque() string { return "stub-devid:" + d.String() }

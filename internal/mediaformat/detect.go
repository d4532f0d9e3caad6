// Package mediaformat tells which image format a medium holds and names the formats cdswap
// can insert, as QEMU and libxl name them.
//
// Detect reads a file's magic numbers so that the worker can refuse a request whose format
// does not match the file (XSA-258: QEMU must never be left to guess, and a raw image must
// never be opened as something else). It also reports whether a raw image carries the
// signatures of a CD image (ISO 9660, UDF), for a rule on what a raw medium may be. The
// product and the simulated host's image builder both use it, so the images the simulator
// writes are checked by the same code that checks a real medium.
package mediaformat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Image formats Detect reports, named as QEMU's block drivers are (the names libxl passes as
// "format", libxl__qemu_disk_format_string).
const (
	Raw   = "raw"   // ISO 9660, UDF, an empty file, or anything without a known magic
	QCOW  = "qcow"  // "QFI\xfb", version 1
	QCOW2 = "qcow2" // "QFI\xfb", any other version (2 and 3 exist)
	VPC   = "vpc"   // VHD: "conectix" at offset 0 (dynamic) or in the last 512 bytes (fixed)
	QED   = "qed"   // "QED\0"
	VHDX  = "vhdx"  // "vhdxfile"
	VMDK  = "vmdk"  // "KDMV" (sparse extent)
	VDI   = "vdi"   // 0xbeda107f at offset 64
	LUKS  = "luks"  // "LUKS\xba\xbe"
)

// SectorSize is the logical sector size of a CD image: ISO 9660's (ECMA-119 6.1.2), and UDF's
// on CD and DVD media.
const SectorSize = 2048

// DescriptorSector is the first sector after the system area (sectors 0-15, ECMA-119 6.2.1):
// ISO 9660's volume descriptor set starts there, and so does the volume recognition sequence
// of UDF (ECMA-167 2/8.4) and of a bridge image holding both.
const DescriptorSector = 16

// ISO9660ID is the standard identifier of every ISO 9660 volume descriptor (ECMA-119 8.1.2).
const ISO9660ID = "CD001"

// Info is what Detect found in an image.
type Info struct {
	// Format is the image format, one of the constants above.
	Format string
	// ISO9660 reports an ISO 9660 volume descriptor at DescriptorSector, as every ISO 9660
	// image has, including a hybrid one (isohybrid, whose MBR comes first, or an ISO 9660/UDF
	// bridge). Only raw images are looked at; it is false for every other format.
	ISO9660 bool
	// UDF reports an NSR02 or NSR03 descriptor (UDF 1.x, 2.x) in the volume recognition
	// sequence (ECMA-167 2/9.1, 3/9.1), in a UDF-only or a bridge image. Raw images only.
	UDF bool
}

// headerLen is how much of the start of a file Detect reads: enough for every magic it knows.
const headerLen = 512

// vhdFooterLen is the size of the VHD footer at the end of every VHD file.
const vhdFooterLen = 512

// maxDescriptors bounds the volume recognition sequence Detect reads, as blkid's UDF probe
// does: a real one has a handful of descriptors.
const maxDescriptors = 64

// Detect reports the image format of the data r holds, from the magic numbers QEMU's format
// probes look at (block/qcow2.c, qcow.c, vpc.c, qed.c, vhdx.c, vmdk.c, vdi.c, crypto.c).
// Anything else, including ISO 9660 and UDF images and empty files, is Raw; for those it also
// reports the CD signatures it found.
//
// A QFI\xfb header whose version is not 1 is QCOW2 even when QEMU would refuse the version:
// such a file must never pass as raw. The VHD footer at the end is looked at only when r tells
// its size (a Size() int64 method as bytes.Reader and io.SectionReader have, or an *os.File);
// QEMU itself only probes the copy at offset 0, but it opens a fixed VHD as vpc when asked to.
func Detect(r io.ReaderAt) (Info, error) {
	format, err := magicFormat(r)
	if err != nil || format != Raw {
		return Info{Format: format}, err
	}
	info := Info{Format: Raw}
	info.ISO9660, info.UDF, err = cdSignatures(r)
	if err != nil {
		return Info{}, err
	}
	return info, nil
}

// magicFormat is Detect's format: the header's magic, then a VHD footer.
func magicFormat(r io.ReaderAt) (string, error) {
	hdr := make([]byte, headerLen)
	n, err := r.ReadAt(hdr, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read image header: %w", err)
	}
	hdr = hdr[:n]
	switch {
	case bytes.HasPrefix(hdr, []byte("QFI\xfb")):
		if len(hdr) >= 8 && binary.BigEndian.Uint32(hdr[4:]) == 1 {
			return QCOW, nil
		}
		return QCOW2, nil
	case bytes.HasPrefix(hdr, []byte("QED\x00")):
		return QED, nil
	case bytes.HasPrefix(hdr, []byte("conectix")):
		return VPC, nil
	case bytes.HasPrefix(hdr, []byte("vhdxfile")):
		return VHDX, nil
	case bytes.HasPrefix(hdr, []byte("KDMV")):
		return VMDK, nil
	case bytes.HasPrefix(hdr, []byte("LUKS\xba\xbe")):
		return LUKS, nil
	case len(hdr) >= 68 && binary.LittleEndian.Uint32(hdr[64:]) == 0xbeda107f:
		return VDI, nil
	}
	size, ok, err := sizeOf(r)
	if err != nil {
		return "", err
	}
	if ok && size >= vhdFooterLen {
		footer := make([]byte, 8)
		if _, err := r.ReadAt(footer, size-vhdFooterLen); err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read vhd footer: %w", err)
		}
		if string(footer) == "conectix" {
			return VPC, nil
		}
	}
	return Raw, nil
}

// sizeOf returns the size of r when r can tell it.
func sizeOf(r io.ReaderAt) (size int64, ok bool, err error) {
	switch v := r.(type) {
	case interface{ Size() int64 }:
		return v.Size(), true, nil
	case *os.File:
		fi, err := v.Stat()
		if err != nil {
			return 0, false, fmt.Errorf("stat image: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return 0, false, nil // a block device's size is not in its stat; its end is not probed
		}
		return fi.Size(), true, nil
	}
	return 0, false, nil
}

// cdSignatures reads the volume descriptors from DescriptorSector on, one per sector, each
// starting with a type byte and a 5-byte standard identifier (ECMA-119 8.1, ECMA-167 2/9.1),
// until one is not part of a volume recognition sequence.
func cdSignatures(r io.ReaderAt) (iso9660, udf bool, err error) {
	vsd := make([]byte, 6)
	for i := int64(0); i < maxDescriptors; i++ {
		n, err := r.ReadAt(vsd, (DescriptorSector+i)*SectorSize)
		if err != nil && !errors.Is(err, io.EOF) {
			return false, false, fmt.Errorf("read volume descriptor %d: %w", DescriptorSector+i, err)
		}
		if n < len(vsd) {
			break
		}
		switch string(vsd[1:6]) {
		case ISO9660ID:
			if i == 0 {
				iso9660 = true
			}
		case "NSR02", "NSR03":
			udf = true
		case "BEA01", "TEA01", "BOOT2", "CDW02":
			// The rest of a recognition sequence (ECMA-167 2/9.2, 2/9.3, 2/9.4; ECMA-168).
		default:
			return iso9660, udf, nil
		}
	}
	return iso9660, udf, nil
}

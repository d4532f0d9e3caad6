package isofs

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
	FormatRaw   = "raw"   // ISO 9660, an empty file, or anything without a known magic
	FormatQCOW  = "qcow"  // "QFI\xfb", version 1
	FormatQCOW2 = "qcow2" // "QFI\xfb", any other version (2 and 3 exist)
	FormatVPC   = "vpc"   // VHD: "conectix" at offset 0 (dynamic) or in the last 512 bytes (fixed)
	FormatQED   = "qed"   // "QED\0"
	FormatVHDX  = "vhdx"  // "vhdxfile"
	FormatVMDK  = "vmdk"  // "KDMV" (sparse extent)
	FormatVDI   = "vdi"   // 0xbeda107f at offset 64
	FormatLUKS  = "luks"  // "LUKS\xba\xbe"
)

// headerLen is how much of the start of a file Detect reads: enough for every magic it knows.
const headerLen = 512

// vhdFooterLen is the size of the VHD footer at the end of every VHD file.
const vhdFooterLen = 512

// Detect reports the image format of the data r holds, from the magic numbers QEMU's format
// probes look at (block/qcow2.c, qcow.c, vpc.c, qed.c, vhdx.c, vmdk.c, vdi.c, crypto.c).
// Anything else, including ISO 9660 images and empty files, is FormatRaw.
//
// A QFI\xfb header whose version is not 1 is FormatQCOW2 even when QEMU would refuse the
// version: such a file must never pass as raw. The VHD footer at the end is looked at only
// when r tells its size (a Size() int64 method as bytes.Reader and io.SectionReader have, or
// an *os.File); QEMU itself only probes the copy at offset 0, but it opens a fixed VHD as vpc
// when asked to.
func Detect(r io.ReaderAt) (string, error) {
	hdr := make([]byte, headerLen)
	n, err := r.ReadAt(hdr, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read image header: %w", err)
	}
	hdr = hdr[:n]
	switch {
	case bytes.HasPrefix(hdr, []byte("QFI\xfb")):
		if len(hdr) >= 8 && binary.BigEndian.Uint32(hdr[4:]) == 1 {
			return FormatQCOW, nil
		}
		return FormatQCOW2, nil
	case bytes.HasPrefix(hdr, []byte("QED\x00")):
		return FormatQED, nil
	case bytes.HasPrefix(hdr, []byte("conectix")):
		return FormatVPC, nil
	case bytes.HasPrefix(hdr, []byte("vhdxfile")):
		return FormatVHDX, nil
	case bytes.HasPrefix(hdr, []byte("KDMV")):
		return FormatVMDK, nil
	case bytes.HasPrefix(hdr, []byte("LUKS\xba\xbe")):
		return FormatLUKS, nil
	case len(hdr) >= 68 && binary.LittleEndian.Uint32(hdr[64:]) == 0xbeda107f:
		return FormatVDI, nil
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
			return FormatVPC, nil
		}
	}
	return FormatRaw, nil
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

// IsISO9660 reports whether r holds an ISO 9660 volume: a volume descriptor with the standard
// identifier "CD001" at sector 16 (ECMA-119 8.1).
func IsISO9660(r io.ReaderAt) (bool, error) {
	id := make([]byte, 6)
	n, err := r.ReadAt(id, pvdSector*SectorSize)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read volume descriptor: %w", err)
	}
	return n == len(id) && string(id[1:]) == "CD001", nil
}

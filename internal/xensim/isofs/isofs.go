// Package isofs writes small ISO 9660 images for the simulated host.
//
// Write gives the simulated host real CD images to insert: a flat ISO 9660 (ECMA-119) volume
// with a primary volume descriptor, path tables and a root directory, recognised by file(1),
// blkid and isoinfo, and by package mediaformat, which checks media in the product.
package isofs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"

	"github.com/cdswap/cdswap/internal/mediaformat"
)

// SectorSize is the ISO 9660 logical sector and block size (ECMA-119 6.1.2).
const SectorSize = mediaformat.SectorSize

// Sector numbers of the fixed parts of the images Build writes. Sectors 0-15 are the system
// area (ECMA-119 6.2.1); the volume descriptor set starts right after it.
const (
	pvdSector        = mediaformat.DescriptorSector
	terminatorSector = pvdSector + 1
	lPathTableSector = pvdSector + 2
	mPathTableSector = pvdSector + 3
	rootDirSector    = pvdSector + 4
)

// DefaultVolumeID is the volume identifier used when Write or Build get "".
const DefaultVolumeID = "CDSWAP"

// MaxFileNameLen bounds a file name (name, dot and extension): ISO 9660 level 2 allows 30
// characters before the ";1" version suffix (ECMA-119 7.5.1 and 10.2).
const MaxFileNameLen = 30

// ErrBadName reports a volume identifier or file name that ISO 9660 cannot hold.
var ErrBadName = errors.New("not a valid ISO 9660 name")

// Write writes an ISO 9660 image holding files in its root directory to path (mode 0644,
// replacing any file there). See Build for the rules on volumeID and the file names.
func Write(path, volumeID string, files map[string][]byte) error {
	img, err := Build(volumeID, files)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		return fmt.Errorf("write iso image: %w", err)
	}
	return nil
}

// Build returns an ISO 9660 image holding files in its root directory.
//
// volumeID ("" means DefaultVolumeID) has at most 32 d-characters (A-Z, 0-9, _). File names
// are d-characters with at most one dot, at most MaxFileNameLen long, such as "README.TXT";
// they are stored with the ";1" version suffix. No subdirectories. Dates are left "not
// specified" (ECMA-119 8.4.26.1, 9.1.5), so the same input always gives the same bytes.
func Build(volumeID string, files map[string][]byte) ([]byte, error) {
	if volumeID == "" {
		volumeID = DefaultVolumeID
	}
	if len(volumeID) > 32 || !dChars(volumeID) {
		return nil, fmt.Errorf("volume id %q: use at most 32 of A-Z 0-9 _: %w", volumeID, ErrBadName)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		if err := checkFileName(name); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	// ECMA-119 9.3: records in ascending order of name, then extension. Padding with spaces
	// (below every d-character) makes a prefix sort first, as a plain string compare does.
	sort.Slice(names, func(i, j int) bool {
		ni, ei := splitName(names[i])
		nj, ej := splitName(names[j])
		if ni != nj {
			return ni < nj
		}
		return ei < ej
	})

	// Lay out the root directory: records never cross a sector boundary (ECMA-119 6.8.1.1).
	records := make([][]byte, 0, len(names)+2)
	records = append(records, nil, nil) // "." and "..", filled in once the size is known
	dirLen := 0
	place := func(recLen int) {
		if dirLen%SectorSize+recLen > SectorSize {
			dirLen += SectorSize - dirLen%SectorSize
		}
		dirLen += recLen
	}
	place(dirRecordLen(1))
	place(dirRecordLen(1))
	for _, name := range names {
		place(dirRecordLen(len(name) + 2))
	}
	dirSectors := sectorsFor(int64(dirLen))
	dirSize := dirSectors * SectorSize

	next := int64(rootDirSector) + dirSectors
	extents := make([]int64, len(names))
	for i, name := range names {
		size := int64(len(files[name]))
		if size > math.MaxUint32 {
			return nil, fmt.Errorf("file %s: %d bytes is more than one ISO 9660 extent holds", name, size)
		}
		if size > 0 { // an empty file has no extent; 0 keeps its location inside the volume
			extents[i] = next
			next += sectorsFor(size)
		}
		records = append(records, dirRecord(uint32(extents[i]), uint32(size), 0, []byte(name+";1")))
	}
	total := next
	if total > math.MaxUint32 {
		return nil, fmt.Errorf("image of %d sectors is too large for ISO 9660", total)
	}
	records[0] = dirRecord(rootDirSector, uint32(dirSize), flagDirectory, []byte{0})
	records[1] = dirRecord(rootDirSector, uint32(dirSize), flagDirectory, []byte{1})

	img := make([]byte, total*SectorSize)
	writePVD(img[pvdSector*SectorSize:], volumeID, uint32(total), uint32(dirSize))
	writeTerminator(img[terminatorSector*SectorSize:])
	writePathTable(img[lPathTableSector*SectorSize:], binary.LittleEndian)
	writePathTable(img[mPathTableSector*SectorSize:], binary.BigEndian)

	off := rootDirSector * SectorSize
	dirStart := off
	for _, rec := range records {
		if (off-dirStart)%SectorSize+len(rec) > SectorSize {
			off += SectorSize - (off-dirStart)%SectorSize
		}
		copy(img[off:], rec)
		off += len(rec)
	}
	for i, name := range names {
		if extents[i] > 0 {
			copy(img[extents[i]*SectorSize:], files[name])
		}
	}
	return img, nil
}

func sectorsFor(n int64) int64 { return (n + SectorSize - 1) / SectorSize }

// flagDirectory is the "Directory" bit of a directory record's file flags (ECMA-119 9.1.6).
const flagDirectory = 0x02

// dirRecordLen is the length of a directory record with an identifier of idLen bytes: 33 fixed
// bytes, the identifier, and a padding byte when idLen is even (ECMA-119 9.1.12).
func dirRecordLen(idLen int) int {
	n := 33 + idLen
	if idLen%2 == 0 {
		n++
	}
	return n
}

// dirRecord builds a directory record (ECMA-119 9.1). The recording date is left all zero,
// which means "not specified".
func dirRecord(extent, size uint32, flags byte, id []byte) []byte {
	rec := make([]byte, dirRecordLen(len(id)))
	rec[0] = byte(len(rec))
	rec[1] = 0 // extended attribute record length
	putBoth32(rec[2:], extent)
	putBoth32(rec[10:], size)
	rec[25] = flags
	putBoth16(rec[28:], 1) // volume sequence number
	rec[32] = byte(len(id))
	copy(rec[33:], id)
	return rec
}

// writePVD fills the primary volume descriptor (ECMA-119 8.4). Offsets are the standard's
// byte positions minus one.
func writePVD(b []byte, volumeID string, totalSectors, rootSize uint32) {
	b[0] = 1 // volume descriptor type: primary
	copy(b[1:6], mediaformat.ISO9660ID)
	b[6] = 1                      // version
	padSpaces(b[8:40], "")        // system identifier
	padSpaces(b[40:72], volumeID) // volume identifier
	putBoth32(b[80:], totalSectors)
	putBoth16(b[120:], 1) // volume set size
	putBoth16(b[124:], 1) // volume sequence number
	putBoth16(b[128:], SectorSize)
	putBoth32(b[132:], pathTableSize)
	binary.LittleEndian.PutUint32(b[140:], lPathTableSector)
	binary.BigEndian.PutUint32(b[148:], mPathTableSector)
	copy(b[156:190], dirRecord(rootDirSector, rootSize, flagDirectory, []byte{0}))
	padSpaces(b[190:318], "")                       // volume set identifier
	padSpaces(b[318:446], "")                       // publisher
	padSpaces(b[446:574], "")                       // data preparer
	padSpaces(b[574:702], "CDSWAP")                 // application
	padSpaces(b[702:813], "")                       // copyright, abstract and bibliographic file identifiers
	for _, off := range []int{813, 830, 847, 864} { // creation, modification, expiration, effective
		copy(b[off:off+16], "0000000000000000") // "not specified"; the 17th byte stays 0
	}
	b[881] = 1 // file structure version
}

// writeTerminator fills the volume descriptor set terminator (ECMA-119 8.3).
func writeTerminator(b []byte) {
	b[0] = 255
	copy(b[1:6], mediaformat.ISO9660ID)
	b[6] = 1
}

// pathTableSize is the size of a path table holding only the root directory: an 8-byte
// record, the 1-byte identifier 0x00 and one padding byte (ECMA-119 9.4).
const pathTableSize = 10

// writePathTable writes a path table with the root directory alone, in byte order bo: L tables
// are little-endian, M tables big-endian (ECMA-119 9.4.3, 9.4.4).
func writePathTable(b []byte, bo binary.ByteOrder) {
	b[0] = 1 // length of directory identifier
	b[1] = 0 // extended attribute record length
	bo.PutUint32(b[2:], rootDirSector)
	bo.PutUint16(b[6:], 1) // parent directory number: the root is its own parent
	b[8] = 0               // identifier of the root
}

// putBoth32 writes v in both byte orders, little-endian first (ECMA-119 7.3.3).
func putBoth32(b []byte, v uint32) {
	binary.LittleEndian.PutUint32(b, v)
	binary.BigEndian.PutUint32(b[4:], v)
}

// putBoth16 writes v in both byte orders, little-endian first (ECMA-119 7.2.3).
func putBoth16(b []byte, v uint16) {
	binary.LittleEndian.PutUint16(b, v)
	binary.BigEndian.PutUint16(b[2:], v)
}

func padSpaces(b []byte, s string) {
	n := copy(b, s)
	for i := n; i < len(b); i++ {
		b[i] = ' '
	}
}

// dChars reports whether s is made of ISO 9660 d-characters (ECMA-119 7.4.1).
func dChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

func checkFileName(name string) error {
	base, ext := splitName(name)
	if base == "" && ext == "" || len(name) > MaxFileNameLen || strings.Count(name, ".") > 1 ||
		!dChars(base) || !dChars(ext) {
		return fmt.Errorf("file name %q: use at most %d of A-Z 0-9 _ with at most one dot, such as README.TXT: %w",
			name, MaxFileNameLen, ErrBadName)
	}
	return nil
}

func splitName(name string) (base, ext string) {
	base, ext, _ = strings.Cut(name, ".")
	return base, ext
}

package isofs

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/mediaformat"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// isoEntry is one directory record as the test reader sees it.
type isoEntry struct {
	Name string
	Dir  bool
	Data []byte
}

// readISO is a tiny ISO 9660 reader, independent of Build's code: it checks what a reader
// relies on and returns the volume id and the root directory's entries.
func readISO(t *testing.T, img []byte) (string, []isoEntry) {
	t.Helper()
	require.Zero(t, len(img)%SectorSize, "image size is not a whole number of sectors")
	sector := func(n uint32) []byte {
		require.LessOrEqual(t, int(n+1)*SectorSize, len(img), "sector %d is beyond the image", n)
		return img[int(n)*SectorSize : int(n+1)*SectorSize]
	}
	both32 := func(b []byte) uint32 {
		le, be := binary.LittleEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
		require.Equal(t, le, be, "both-byte-order field differs")
		return le
	}
	both16 := func(b []byte) uint16 {
		le, be := binary.LittleEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
		require.Equal(t, le, be, "both-byte-order field differs")
		return le
	}
	pvd := sector(16)
	require.Equal(t, []byte{1, 'C', 'D', '0', '0', '1', 1}, pvd[:7], "primary volume descriptor header")
	term := sector(17)
	require.Equal(t, []byte{255, 'C', 'D', '0', '0', '1', 1}, term[:7], "terminator header")
	assert.Equal(t, uint32(len(img)/SectorSize), both32(pvd[80:]), "volume space size")
	assert.Equal(t, uint16(SectorSize), both16(pvd[128:]), "logical block size")
	ptSize := both32(pvd[132:])
	lpt := sector(binary.LittleEndian.Uint32(pvd[140:]))
	mpt := sector(binary.BigEndian.Uint32(pvd[148:]))
	root := pvd[156:190]
	require.Equal(t, byte(34), root[0], "root record length")
	rootLoc, rootSize := both32(root[2:]), both32(root[10:])
	require.Equal(t, uint32(10), ptSize, "path table size")
	assert.Equal(t, rootLoc, binary.LittleEndian.Uint32(lpt[2:]), "L path table root extent")
	assert.Equal(t, rootLoc, binary.BigEndian.Uint32(mpt[2:]), "M path table root extent")
	assert.Equal(t, uint16(1), binary.LittleEndian.Uint16(lpt[6:]), "L path table parent")
	assert.Equal(t, uint16(1), binary.BigEndian.Uint16(mpt[6:]), "M path table parent")

	var entries []isoEntry
	dir := img[int(rootLoc)*SectorSize : int(rootLoc)*SectorSize+int(rootSize)]
	for off := 0; off < len(dir); {
		n := int(dir[off])
		if n == 0 { // rest of the sector is padding
			off = (off/SectorSize + 1) * SectorSize
			continue
		}
		rec := dir[off : off+n]
		require.LessOrEqual(t, off%SectorSize+n, SectorSize, "record crosses a sector boundary")
		idLen := int(rec[32])
		id := rec[33 : 33+idLen]
		loc, size := both32(rec[2:]), both32(rec[10:])
		e := isoEntry{Dir: rec[25]&2 != 0}
		switch {
		case idLen == 1 && id[0] == 0:
			e.Name = "."
		case idLen == 1 && id[0] == 1:
			e.Name = ".."
		default:
			name, ok := strings.CutSuffix(string(id), ";1")
			require.True(t, ok, "file id %q has no ;1 version", id)
			e.Name = name
			if size > 0 {
				e.Data = img[int(loc)*SectorSize : int(loc)*SectorSize+int(size)]
			}
		}
		entries = append(entries, e)
		off += n
	}
	return strings.TrimRight(string(pvd[40:72]), " "), entries
}

func TestBuildRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 300) // 4800 bytes: three sectors
	manyFiles := map[string][]byte{}
	for i := range 80 { // 80 records of ~46 bytes: the directory needs two sectors
		manyFiles[fmt.Sprintf("FILE_NUMBER_%03d.DAT", i)] = []byte(fmt.Sprint(i))
	}
	tests := []struct {
		name     string
		volumeID string
		files    map[string][]byte
		wantVol  string
	}{
		{name: "empty", volumeID: "", files: nil, wantVol: DefaultVolumeID},
		{name: "few files", volumeID: "OLD_ISO", files: map[string][]byte{
			"README.TXT": []byte("hello\n"),
			"B.BIN":      big,
			"EMPTY":      {},
			"A":          []byte("a"),
			"A.B":        []byte("ab"),
		}, wantVol: "OLD_ISO"},
		{name: "two directory sectors", volumeID: "MANY", files: manyFiles, wantVol: "MANY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, err := Build(tt.volumeID, tt.files)
			require.NoError(t, err)
			vol, entries := readISO(t, img)
			assert.Equal(t, tt.wantVol, vol, "volume id")
			require.GreaterOrEqual(t, len(entries), 2)
			assert.Equal(t, isoEntry{Name: ".", Dir: true}, entries[0])
			assert.Equal(t, isoEntry{Name: "..", Dir: true}, entries[1])
			got := map[string][]byte{}
			var order []string
			for _, e := range entries[2:] {
				assert.False(t, e.Dir, "%s is a directory", e.Name)
				got[e.Name] = e.Data
				order = append(order, e.Name)
			}
			require.Len(t, got, len(tt.files))
			for name, data := range tt.files {
				assert.Equal(t, len(data), len(got[name]), "size of %s", name)
				assert.True(t, bytes.Equal(data, got[name]), "content of %s", name)
			}
			for i := 1; i < len(order); i++ {
				assert.Less(t, sortKey(order[i-1]), sortKey(order[i]), "directory order")
			}
			again, err := Build(tt.volumeID, tt.files)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(img, again), "Build is not deterministic")
		})
	}
}

// sortKey pads name and extension with spaces as ECMA-119 9.3 compares them.
func sortKey(name string) string {
	base, ext := splitName(name)
	return fmt.Sprintf("%-30s%-30s", base, ext)
}

func TestBuildBadNames(t *testing.T) {
	tests := []struct {
		name     string
		volumeID string
		file     string
	}{
		{name: "lower case volume", volumeID: "cdrom", file: "A"},
		{name: "long volume", volumeID: strings.Repeat("V", 33), file: "A"},
		{name: "lower case file", file: "readme.txt"},
		{name: "two dots", file: "A.B.C"},
		{name: "slash", file: "DIR/A"},
		{name: "empty name", file: ""},
		{name: "only a dot", file: "."},
		{name: "too long", file: strings.Repeat("N", 27) + ".TXT"},
		{name: "space", file: "A B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(tt.volumeID, map[string][]byte{tt.file: []byte("x")})
			assert.ErrorIs(t, err, ErrBadName, "Build(%q, %q)", tt.volumeID, tt.file)
		})
	}
}

func TestWriteRecognised(t *testing.T) {
	path := filepath.Join(t.TempDir(), "test.iso")
	require.NoError(t, Write(path, "CDSWAP_TEST", map[string][]byte{"README.TXT": []byte("hi\n")}))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	info, err := mediaformat.Detect(f)
	require.NoError(t, err)
	assert.Equal(t, mediaformat.Info{Format: mediaformat.Raw, ISO9660: true}, info, "mediaformat.Detect(written image)")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Outside tools are a second opinion; they are optional because nothing needs them.
	if _, err := exec.LookPath("file"); err == nil {
		out, err := exec.CommandContext(ctx, "file", "-b", path).Output()
		require.NoError(t, err)
		assert.Contains(t, string(out), "ISO 9660 CD-ROM filesystem data 'CDSWAP_TEST'", "file -b")
	} else {
		t.Log("file(1) not installed: not checked")
	}
	if _, err := exec.LookPath("blkid"); err == nil {
		out, err := exec.CommandContext(ctx, "blkid", "-p", "-o", "export", path).Output()
		require.NoError(t, err)
		assert.Contains(t, string(out), "TYPE=iso9660", "blkid")
		assert.Contains(t, string(out), "LABEL=CDSWAP_TEST", "blkid")
	}
	if _, err := exec.LookPath("isoinfo"); err == nil {
		out, err := exec.CommandContext(ctx, "isoinfo", "-i", path, "-l").CombinedOutput()
		require.NoError(t, err, "isoinfo: %s", out)
		assert.Contains(t, string(out), "README.TXT;1", "isoinfo -l")
	}
}

func TestWriteError(t *testing.T) {
	err := Write(filepath.Join(t.TempDir(), "missing", "x.iso"), "", nil)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

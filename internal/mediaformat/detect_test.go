package mediaformat

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// volume returns an image whose volume descriptors, from DescriptorSector on, have the
// standard identifiers ids (type byte 1 for CD001, 0 otherwise; version 1).
func volume(ids ...string) []byte {
	img := make([]byte, (DescriptorSector+len(ids)+1)*SectorSize)
	for i, id := range ids {
		d := img[(DescriptorSector+i)*SectorSize:]
		if id == ISO9660ID {
			d[0] = 1
		}
		copy(d[1:6], id)
		d[6] = 1
	}
	return img
}

// detectCases are Detect's table, also the fuzz seeds.
var detectCases = []struct {
	name string
	data []byte
	want Info
}{
	{name: "empty", data: nil, want: Info{Format: Raw}},
	{name: "zeros", data: make([]byte, 4096), want: Info{Format: Raw}},
	{name: "short text", data: []byte("hello"), want: Info{Format: Raw}},
	{name: "qcow2 v3", data: append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 100)...), want: Info{Format: QCOW2}},
	{name: "qcow2 v2", data: []byte("QFI\xfb\x00\x00\x00\x02"), want: Info{Format: QCOW2}},
	{name: "qcow v1", data: []byte("QFI\xfb\x00\x00\x00\x01"), want: Info{Format: QCOW}},
	{name: "qcow magic only", data: []byte("QFI\xfb"), want: Info{Format: QCOW2}},
	{name: "almost qcow", data: []byte("QFI\xfa\x00\x00\x00\x03"), want: Info{Format: Raw}},
	{name: "qed", data: []byte("QED\x00\x00\x10\x00\x00"), want: Info{Format: QED}},
	{name: "qed without nul", data: []byte("QEDX"), want: Info{Format: Raw}},
	{name: "vhd dynamic header", data: append([]byte("conectix"), make([]byte, 504)...), want: Info{Format: VPC}},
	{name: "vhd fixed footer", data: append(make([]byte, 4096), append([]byte("conectix"), make([]byte, 504)...)...), want: Info{Format: VPC}},
	{name: "conectix not at footer", data: append(make([]byte, 4096), append([]byte("conectix"), make([]byte, 600)...)...), want: Info{Format: Raw}},
	{name: "vhdx", data: []byte("vhdxfile"), want: Info{Format: VHDX}},
	{name: "vmdk", data: []byte("KDMV\x01\x00\x00\x00"), want: Info{Format: VMDK}},
	{name: "luks", data: []byte("LUKS\xba\xbe\x00\x01"), want: Info{Format: LUKS}},
	{name: "vdi", data: append(make([]byte, 64), 0x7f, 0x10, 0xda, 0xbe), want: Info{Format: VDI}},
	{name: "iso 9660", data: volume(ISO9660ID, ISO9660ID), want: Info{Format: Raw, ISO9660: true}},
	{name: "iso 9660 descriptor cut short", data: append(make([]byte, DescriptorSector*SectorSize+1), "CD0"...), want: Info{Format: Raw}},
	{name: "udf", data: volume("BEA01", "NSR02", "TEA01"), want: Info{Format: Raw, UDF: true}},
	{name: "udf 2", data: volume("BEA01", "NSR03", "TEA01"), want: Info{Format: Raw, UDF: true}},
	{name: "iso 9660 and udf bridge", data: volume(ISO9660ID, ISO9660ID, "BEA01", "NSR02", "TEA01"), want: Info{Format: Raw, ISO9660: true, UDF: true}},
	{name: "isohybrid", data: func() []byte {
		img := volume(ISO9660ID, ISO9660ID)
		img[510], img[511] = 0x55, 0xaa // the MBR's boot signature
		return img
	}(), want: Info{Format: Raw, ISO9660: true}},
	{name: "nsr after the sequence ends", data: volume("BEA01", "XXXXX", "NSR02"), want: Info{Format: Raw}},
	{name: "cd001 not first", data: volume("BEA01", ISO9660ID), want: Info{Format: Raw}},
	{name: "qcow2 with an iso inside", data: append([]byte("QFI\xfb\x00\x00\x00\x03"), volume(ISO9660ID)[8:]...), want: Info{Format: QCOW2}},
}

func TestDetect(t *testing.T) {
	for _, tt := range detectCases {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Detect(bytes.NewReader(tt.data))
			require.NoError(t, err)
			assert.Equal(t, tt.want, got, "Detect(%q...)", prefix(tt.data))
		})
	}
}

func TestDetectFile(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range detectCases {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			require.NoError(t, os.WriteFile(p, tt.data, 0o600))
			f, err := os.Open(p)
			require.NoError(t, err)
			defer f.Close()
			got, err := Detect(f)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got, "Detect(file %s)", tt.name)
		})
	}
}

// failReader fails every read from offset failFrom on, as a file on a broken disk would.
type failReader struct {
	data     []byte
	failFrom int64
}

var errBroken = errors.New("broken disk")

func (r failReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.failFrom {
		return 0, errBroken
	}
	return bytes.NewReader(r.data).ReadAt(p, off)
}

func TestDetectReadError(t *testing.T) {
	tests := []struct {
		name string
		r    failReader
	}{
		{name: "header", r: failReader{failFrom: 0}},
		{name: "volume descriptor", r: failReader{data: make([]byte, 4096), failFrom: DescriptorSector * SectorSize}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Detect(tt.r)
			assert.ErrorIs(t, err, errBroken, "Detect(reader failing at %d)", tt.r.failFrom)
		})
	}
}

func prefix(b []byte) []byte {
	if len(b) > 8 {
		return b[:8]
	}
	return b
}

// FuzzDetect checks that Detect never panics or fails on in-memory data, answers one of its
// known formats, calls nothing raw that starts with an image magic, and reports CD
// signatures for raw images only.
func FuzzDetect(f *testing.F) {
	for _, tt := range detectCases {
		f.Add(tt.data)
	}
	known := map[string]bool{Raw: true, QCOW: true, QCOW2: true, VPC: true,
		QED: true, VHDX: true, VMDK: true, VDI: true, LUKS: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Detect(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("Detect(%q...) = error %v, want a format", prefix(data), err)
		}
		if !known[got.Format] {
			t.Fatalf("Detect(%q...) = %q, want a known format", prefix(data), got.Format)
		}
		for _, magic := range []string{"QFI\xfb", "QED\x00", "conectix"} {
			if bytes.HasPrefix(data, []byte(magic)) && got.Format == Raw {
				t.Fatalf("Detect(%q...) = raw, want not raw for magic %q", prefix(data), magic)
			}
		}
		if got.Format != Raw && (got.ISO9660 || got.UDF) {
			t.Fatalf("Detect(%q...) = %+v, want CD signatures only for a raw image", prefix(data), got)
		}
	})
}

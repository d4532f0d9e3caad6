package xen

import (
	"errors"
	"strings"
	"testing"
)

func TestParseVdev(t *testing.T) {
	tests := []struct {
		name string
		vdev string
		want DevID
	}{
		// The table of xen-cdrom-facts §1.7.
		{"hda", "hda", 768},
		{"hdb", "hdb", 832},
		{"hdc", "hdc", 5632},
		{"hdd", "hdd", 5696},
		{"sda", "sda", 2048},
		{"sdb", "sdb", 2064},
		{"sdc is libxl's stub-devid example", "sdc", 2080},
		{"xvda", "xvda", 51712},
		{"xvdb", "xvdb", 51728},
		{"xvdc", "xvdc", 51744},
		{"xvdd", "xvdd", 51760},
		{"xvdq is extended", "xvdq", 268439552},
		// Partitions and limits.
		{"hda1", "hda1", 769},
		{"hdc63 top partition", "hdc63", 5632 + 63},
		{"sdp15 last sd", "sdp15", 8<<8 | 15<<4 | 15},
		{"xvda15 last standard partition", "xvda15", 51712 + 15},
		{"xvda16 extended by partition", "xvda16", 1<<28 | 16},
		{"xvdp15 last standard disk", "xvdp15", 202<<8 | 15<<4 | 15},
		{"xvdz", "xvdz", 1<<28 | 25<<8},
		{"xvdaa bijective base 26", "xvdaa", 1<<28 | 26<<8},
		{"xvdba", "xvdba", 1<<28 | 52<<8},
		{"xvdzz", "xvdzz", 1<<28 | 701<<8},
		{"xvdaaa", "xvdaaa", 1<<28 | 702<<8},
		{"xvdq255", "xvdq255", 1<<28 | 16<<8 | 255},
		// d<disk>p<part> takes C integers (sscanf %i) and allows partition 0.
		{"d0p0", "d0p0", 51712},
		{"d2p0", "d2p0", 51744},
		{"d15p15", "d15p15", 202<<8 | 15<<4 | 15},
		{"d16p0 extended", "d16p0", 1<<28 | 16<<8},
		{"d0p16 extended", "d0p16", 1<<28 | 16},
		{"d0x10p1 hex", "d0x10p1", 1<<28 | 16<<8 | 1},
		{"d010p0 octal", "d010p0", 202<<8 | 8<<4},
		{"d1048575p255 maximum", "d1048575p255", 1<<28 | (1<<20-1)<<8 | 255},
		// Plain numbers (strtoul base 0).
		{"decimal", "5632", 5632},
		{"hex", "0x1600", 5632},
		{"octal", "013000", 5632},
		{"zero", "0", 0},
		{"INT_MAX", "2147483647", 1<<31 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseVdev(tt.vdev)
			if err != nil || got != tt.want {
				t.Errorf("ParseVdev(%q) = %d, %v, want %d, nil", tt.vdev, got, err, tt.want)
			}
		})
	}
}

func TestParseVdevRejects(t *testing.T) {
	tests := []struct {
		name string
		vdev string
	}{
		{"empty", ""},
		{"hde beyond hdd", "hde"},
		{"sdq beyond sdp", "sdq"},
		{"xvd without letter", "xvd"},
		{"hd without letter", "hd"},
		{"sd without letter", "sd"},
		{"xvd1 without letter", "xvd1"},
		{"hdc0 leading zero", "hdc0"},
		{"xvda01 leading zero", "xvda01"},
		{"hda64 partition too big", "hda64"},
		{"sda16 partition too big", "sda16"},
		{"xvda256 partition too big", "xvda256"},
		{"upper case", "XVDA"},
		{"upper case letter", "xvdA"},
		{"trailing junk", "hdc1x"},
		{"signed partition", "hda+1"},
		{"negative partition", "hda-1"},
		{"space", " 5632"},
		{"negative number", "-1"},
		{"above INT_MAX", "2147483648"},
		{"far above INT_MAX", "99999999999999999999999"},
		{"bad octal", "09"},
		{"bare 0x", "0x"},
		{"d without p", "d1"},
		{"d negative disk", "d-1p0"},
		{"d disk too big", "d1048576p0"},
		{"d partition too big", "d0p256"},
		{"d trailing junk", "d1p2x"},
		{"xvd disk too big", "xvd" + diskLetters(1<<20)},
		{"unknown prefix", "vda"},
		{"nul byte", "hd\x00a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseVdev(tt.vdev)
			if !errors.Is(err, ErrBadVdev) {
				t.Fatalf("ParseVdev(%q) = %d, %v, want ErrBadVdev", tt.vdev, got, err)
			}
			if !strings.Contains(err.Error(), "\""+tt.vdev+"\"") && tt.vdev != "hd\x00a" {
				t.Errorf("ParseVdev(%q) error %q does not name the input", tt.vdev, err)
			}
		})
	}
}

func TestDevIDVdev(t *testing.T) {
	tests := []struct {
		name string
		id   DevID
		want string
	}{
		{"xvda", 51712, "xvda"},
		{"xvdc", 51744, "xvdc"},
		{"xvda1", 51713, "xvda1"},
		{"xvdp15", 202<<8 | 15<<4 | 15, "xvdp15"},
		{"xvdq extended", 268439552, "xvdq"},
		{"xvdaa extended", 1<<28 | 26<<8, "xvdaa"},
		{"extended partition", 1<<28 | 16<<8 | 255, "xvdq255"},
		{"hdc has minor 0, so xvda as in libxl", 5632, "xvda"},
		{"sdc", 2080, "xvdc"},
		{"zero", 0, "xvda"},
		{"negative", -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.id.Vdev(); got != tt.want {
				t.Errorf("DevID(%d).Vdev() = %q, want %q", tt.id, got, tt.want)
			}
		})
	}
}

func TestDevIDNames(t *testing.T) {
	id := DevID(5632)
	if got, want := id.String(), "5632"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := id.QEMUID(), "ide-5632"; got != want {
		t.Errorf("QEMUID() = %q, want %q", got, want)
	}
	if got, want := DevID(2080).StubOpaque(), "stub-devid:2080"; got != want {
		t.Errorf("StubOpaque() = %q, want %q", got, want)
	}
}

func TestDiskLetters(t *testing.T) {
	for n, want := range map[uint]string{0: "a", 25: "z", 26: "aa", 27: "ab", 51: "az", 52: "ba", 701: "zz", 702: "aaa"} {
		if got := diskLetters(n); got != want {
			t.Errorf("diskLetters(%d) = %q, want %q", n, got, want)
		}
	}
}

func FuzzParseVdev(f *testing.F) {
	for _, s := range []string{"hda", "hdc", "hdc0", "sdq", "xvd", "xvdq", "xvdaa255", "d0p0",
		"d0x10p1", "0x1600", "013000", "5632", "", "hd", "xvda01", "hda+1", "d-1p0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseVdev(s)
		if err != nil {
			if !errors.Is(err, ErrBadVdev) {
				t.Fatalf("ParseVdev(%q) error %v does not wrap ErrBadVdev", s, err)
			}
			return
		}
		if id < 0 {
			t.Fatalf("ParseVdev(%q) = %d, want a non-negative number", s, id)
		}
		// An accepted xvd name is canonical: libxl__devid_to_vdev gives it back.
		if strings.HasPrefix(s, "xvd") {
			if got := id.Vdev(); got != s {
				t.Fatalf("ParseVdev(%q).Vdev() = %q, want %q", s, got, s)
			}
		}
	})
}

func FuzzDevIDVdevRoundTrip(f *testing.F) {
	f.Add(uint32(0), uint8(0))
	f.Add(uint32(2), uint8(0))
	f.Add(uint32(15), uint8(15))
	f.Add(uint32(16), uint8(0))
	f.Add(uint32(0), uint8(16))
	f.Add(uint32(1<<20-1), uint8(255))
	f.Fuzz(func(t *testing.T, disk uint32, part uint8) {
		disk %= 1 << 20
		id := xvdNumber(int(disk), int(part))
		vdev := id.Vdev()
		got, err := ParseVdev(vdev)
		if err != nil || got != id {
			t.Fatalf("ParseVdev(DevID(%d).Vdev() = %q) = %d, %v, want %d", id, vdev, got, err, id)
		}
	})
}

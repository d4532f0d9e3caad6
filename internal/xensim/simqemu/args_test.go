package simqemu

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/xen"
)

func TestIDEDisk(t *testing.T) {
	tests := []struct {
		vdev    string
		want    int
		wantErr bool
	}{
		{vdev: "hda", want: 0},
		{vdev: "hdb", want: 1},
		{vdev: "hdc", want: 2},
		{vdev: "hdd", want: 3},
		{vdev: "xvda", want: 0},
		{vdev: "xvdc", want: 2},
		{vdev: "xvdd", want: 3},
		{vdev: "sdc", want: 2},
		{vdev: "xvde", wantErr: true},
		{vdev: "sde", wantErr: true},
		{vdev: "xvdq", wantErr: true}, // extended numbering
		{vdev: "12345", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.vdev, func(t *testing.T) {
			d, err := xen.ParseVdev(tt.vdev)
			require.NoError(t, err)
			got, err := ideDisk(d)
			if tt.wantErr {
				assert.ErrorIs(t, err, ErrBadConfig, "ideDisk(%s=%d)", tt.vdev, d)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got, "ideDisk(%s=%d)", tt.vdev, d)
		})
	}
	_, err := ideDisk(-1)
	assert.ErrorIs(t, err, ErrBadConfig, "ideDisk(-1)")
}

func TestQEMUArgs(t *testing.T) {
	base := "-machine pc -nodefaults -display none -accel tcg -m 32 -no-user-config"
	mon0 := "-chardev socket,id=libxl-cmd,path=/p/mon0,server=on,wait=off -mon chardev=libxl-cmd,mode=control"
	mon1 := "-chardev socket,id=m-cdrom,path=/p/mon1,server=on,wait=off -mon chardev=m-cdrom,mode=control"
	ctl := "-chardev socket,id=simqemu-ctl,path=/p/ctl,server=on,wait=off -mon chardev=simqemu-ctl,mode=control"
	tests := []struct {
		name     string
		cfg      Config
		monitors []string
		want     string
	}{
		{
			name:     "empty hdc, dom0 qemu",
			cfg:      Config{Name: "web1", CDROMs: []xen.DevID{5632}},
			monitors: []string{"/p/mon0"},
			want: base + " -name web1 -pidfile /p/pid " + mon0 + " " + ctl +
				" -drive if=none,readonly=on,id=ide-5632" +
				" -device ide-cd,id=ide-5632,drive=ide-5632,bus=ide.1,unit=0",
		},
		{
			name: "paused with media on hda and hdd, two monitors",
			cfg: Config{Name: "a,b", Paused: true, CDROMs: []xen.DevID{768, 5696},
				InitialMedium: map[xen.DevID]Medium{
					768:  {Path: "/isos/x,y.iso"},
					5696: {Path: "/dev/loop3", Format: "host_device"},
				}},
			monitors: []string{"/p/mon0", "/p/mon1"},
			want: base + " -name a,,b -pidfile /p/pid -S " + mon0 + " " + mon1 + " " + ctl +
				" -drive if=none,readonly=on,id=ide-768,file=/isos/x,,y.iso,format=raw" +
				" -device ide-cd,id=ide-768,drive=ide-768,bus=ide.0,unit=0" +
				" -drive if=none,readonly=on,id=ide-5696,file=/dev/loop3,format=host_device" +
				" -device ide-cd,id=ide-5696,drive=ide-5696,bus=ide.1,unit=1",
		},
		{
			name:     "stubdom-style xvdc, no monitor",
			cfg:      Config{Name: "s", CDROMs: []xen.DevID{51744}},
			monitors: nil,
			want: base + " -name s -pidfile /p/pid " + ctl +
				" -drive if=none,readonly=on,id=ide-51744" +
				" -device ide-cd,id=ide-51744,drive=ide-51744,bus=ide.1,unit=0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := qemuArgs(tt.cfg, tt.monitors, "/p/ctl", "/p/pid")
			require.NoError(t, err)
			assert.Equal(t, tt.want, strings.Join(got, " "), "qemuArgs(%+v)", tt.cfg)
		})
	}
}

func TestConfigCheck(t *testing.T) {
	long := "/" + strings.Repeat("x", 120)
	tests := []struct {
		name string
		cfg  Config
	}{
		{name: "fifth disk", cfg: Config{CDROMs: []xen.DevID{51776}}}, // xvde
		{name: "twice", cfg: Config{CDROMs: []xen.DevID{5632, 5632}}},
		{name: "medium for another drive", cfg: Config{CDROMs: []xen.DevID{5632},
			InitialMedium: map[xen.DevID]Medium{768: {Path: "/x.iso"}}}},
		{name: "empty monitor path", cfg: Config{Monitors: []string{""}}},
		{name: "monitor path too long", cfg: Config{Monitors: []string{long}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.ErrorIs(t, tt.cfg.check(), ErrBadConfig, "check(%+v)", tt.cfg)
		})
	}
	assert.NoError(t, Config{InitialMedium: map[xen.DevID]Medium{DefaultCDROM: {Path: "/x.iso"}}}.check(),
		"a medium for the default drive")
}

// splitCases are the splitter's table and fuzz seeds: a stream, cut into chunks.
var splitCases = []struct {
	name   string
	chunks []string
	want   []string
}{
	{name: "one", chunks: []string{`{"execute":"query-block","id":1}` + "\r\n"},
		want: []string{`{"execute":"query-block","id":1}`}},
	{name: "two in one chunk", chunks: []string{`{"a":1}{"b":{"c":[1,{"d":2}]}}`},
		want: []string{`{"a":1}`, `{"b":{"c":[1,{"d":2}]}}`}},
	{name: "split everywhere", chunks: []string{`{"a"`, `:"}{\"`, `"`, `}`, "\r\n{", `}`},
		want: []string{`{"a":"}{\""}`, `{}`}},
	{name: "escaped backslash before quote", chunks: []string{`{"a":"x\\"}`},
		want: []string{`{"a":"x\\"}`}},
	{name: "junk between", chunks: []string{"\xff garbage ", `{"x":"]"}`, " 42 "},
		want: []string{`{"x":"]"}`}},
	{name: "unfinished", chunks: []string{`{"a":{`}, want: nil},
}

func TestSplitter(t *testing.T) {
	for _, tt := range splitCases {
		t.Run(tt.name, func(t *testing.T) {
			var s splitter
			var got []string
			for _, c := range tt.chunks {
				s.feed([]byte(c), func(obj []byte, start, end int) bool {
					got = append(got, string(obj))
					assert.Equal(t, byte('}'), c[end-1], "end offset points past a closing brace")
					if start >= 0 {
						assert.Equal(t, string(obj), c[start:end], "start..end is the object")
					}
					return false
				})
			}
			assert.Equal(t, tt.want, got, "splitter(%q)", tt.chunks)
		})
	}
}

func TestSplitterStop(t *testing.T) {
	var s splitter
	var got []string
	data := []byte(`{"a":1}{"b":2}{"c":3}`)
	s.feed(data, func(obj []byte, _, _ int) bool {
		got = append(got, string(obj))
		return len(got) == 2
	})
	assert.Equal(t, []string{`{"a":1}`, `{"b":2}`}, got, "feed stops when emit returns true")
}

// FuzzSplitter checks that the splitter never panics and finds, in a stream of valid JSON
// objects cut anywhere, exactly those objects.
func FuzzSplitter(f *testing.F) {
	for _, tt := range splitCases {
		f.Add(strings.Join(tt.chunks, ""), uint8(3))
	}
	f.Fuzz(func(t *testing.T, stream string, cut uint8) {
		var s splitter
		var got [][]byte
		step := int(cut%16) + 1
		for i := 0; i < len(stream); i += step {
			chunk := []byte(stream[i:min(i+step, len(stream))])
			s.feed(chunk, func(obj []byte, start, end int) bool {
				if end < 1 || end > len(chunk) || chunk[end-1] != '}' && chunk[end-1] != ']' {
					t.Fatalf("splitter end %d in chunk %q: not just past a closing bracket", end, chunk)
				}
				if start >= 0 && string(chunk[start:end]) != string(obj) {
					t.Fatalf("splitter start %d end %d in chunk %q: not the object %q", start, end, chunk, obj)
				}
				got = append(got, bytes.Clone(obj))
				return false
			})
		}
		// When the whole stream is whitespace-separated JSON objects, each must be found.
		dec := json.NewDecoder(strings.NewReader(stream))
		var want [][]byte
		for {
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				if err.Error() != "EOF" {
					return // not a stream of JSON values: only the no-panic check applies
				}
				break
			}
			if len(v) == 0 || v[0] != '{' {
				return
			}
			want = append(want, v)
		}
		if len(got) != len(want) {
			t.Fatalf("splitter(%q) found %d objects, want %d", stream, len(got), len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("splitter(%q) object %d = %q, want %q", stream, i, got[i], want[i])
			}
		}
	})
}

func TestEndLine(t *testing.T) {
	tests := []struct {
		name string
		data string
		end  int
		want string
	}{
		{name: "crlf follows", data: "{}\r\n{}", end: 2, want: "{}\r\n"},
		{name: "lf follows", data: "{}\n{}", end: 2, want: "{}\n"},
		{name: "nothing follows", data: "{}", end: 2, want: "{}\r\n"},
		{name: "event follows", data: `{}{"event":"X"}`, end: 2, want: "{}\r\n"},
		{name: "cut before everything", data: "{}\r\n", end: 0, want: ""},
		{name: "cut before a message", data: "{}\r\n{}", end: 4, want: "{}\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := []byte(tt.data)
			assert.Equal(t, tt.want, string(endLine(buf, tt.end)), "endLine(%q, %d)", tt.data, tt.end)
			assert.Equal(t, tt.data, string(buf), "endLine changed its input")
		})
	}
}

package simqemu

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/cdswap/cdswap/internal/xen"
)

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

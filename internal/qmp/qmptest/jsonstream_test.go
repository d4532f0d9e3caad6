package qmptest

import (
	"fmt"
	"strings"
	"testing"
)

// collect feeds chunks to a fresh streamer and returns each message as its re-encoding or
// its error.
func collect(chunks ...[]byte) []string {
	var out []string
	st := &streamer{emit: func(v any, desc string) bool {
		if desc != "" {
			out = append(out, "error: "+desc)
		} else {
			out = append(out, string(encode(nil, v)))
		}
		return true
	}}
	for _, c := range chunks {
		st.feed(c)
	}
	return out
}

func TestStreamer(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"object", `{"a": 1}`, []string{`{"a": 1}`}},
		{"QEMU member order", `{"id": 1, "return": {}}`, []string{`{"return": {}, "id": 1}`}},
		{"same bucket, newest first", `{"major": 7, "minor": 2, "micro": 0}`, []string{`{"micro": 0, "minor": 2, "major": 7}`}},
		{"nested and spaced", " [ {\"x\" : [true , false, null]} ] ", []string{`[{"x": [true, false, null]}]`}},
		{"numbers", `[0, -0, 1.5, -2e-3, 9223372036854775807, 18446744073709551615, 18446744073709551616, 1e999, -1e999]`,
			[]string{`[0, 0, 1.5, -0.002, 9223372036854775807, 18446744073709551615, 1.8446744073709552e+19, inf, -inf]`}},
		{"escapes", `["\"\\\/\b\f\n\r\t\u0041\u00e9\ud83d\ude00", '\'']`,
			[]string{`["\"\\/\b\f\n\r\tA\u00E9\uD83D\uDE00", "'"]`}},
		{"two messages", `{}[]`, []string{`{}`, `[]`}},
		{"top-level keyword needs a delimiter", "true", nil},
		{"top-level keyword", "true\n", []string{"true"}},
		{"bad keyword", "nul\n", []string{"error: JSON parse error, invalid keyword 'nul'"}},
		{"lone surrogate", `["\ud800"]`, []string{`error: JSON parse error, \ud800 is not a valid Unicode character`}},
		{"bad escape", `["\x"]`, []string{"error: JSON parse error, invalid escape sequence in string"}},
		{"bad hex escape", `["\u12G4"]`, []string{"error: JSON parse error, invalid escape sequence in string"}},
		{"key not a string", `{1: 2}`, []string{"error: JSON parse error, key is not a string in object"}},
		{"missing value", `{"a": }`, []string{"error: JSON parse error, expecting value"}},
		{"missing separator", `{"a": 1 "b": 2}`, []string{"error: JSON parse error, expected separator in dict"}},
		{"list separator", `[1 2]`, []string{"error: JSON parse error, expected separator in list"}},
		{"mismatched close", `[1}`, []string{"error: JSON parse error, expected separator in list"}},
		{"bad number", `[1.] {}`, []string{"error: JSON parse error, stray '1.]'", "{}"}},
		{"stray then recovery", "@@@ {\"a\":1}", []string{"error: JSON parse error, stray '@'", `{"a": 1}`}},
		{"0xFF resets a message", "{\"a\": [1, \xff\n{}", []string{"error: JSON parse error, stray '\xff'", "{}"}},
		{"nesting limit", strings.Repeat("[", maxNesting+1), []string{"error: JSON nesting depth limit exceeded"}},
		{"deepest allowed", nested(maxNesting), []string{nested(maxNesting)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := collect([]byte(tt.in))
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("streamer(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// nested returns n opening brackets followed by as many closing ones.
func nested(n int) string {
	b := make([]byte, 0, 2*n)
	for range n {
		b = append(b, '[')
	}
	for range n {
		b = append(b, ']')
	}
	return string(b)
}

func TestStreamerSizeLimit(t *testing.T) {
	big := make([]byte, 0, maxMessageBytes+100)
	big = append(big, `["`...)
	for len(big) < maxMessageBytes+10 {
		big = append(big, 'x')
	}
	big = append(big, `"]`...)
	got := collect(big)
	want := []string{"error: JSON token size limit exceeded", "error: JSON parse error, expecting value"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("streamer(1 MiB string) = %q, want %q", got, want)
	}
}

// FuzzStreamer checks that the streamer never panics, that how the input is cut into reads
// does not matter, and that every message it accepts survives printing and parsing again.
func FuzzStreamer(f *testing.F) {
	for _, s := range []string{
		`{"execute": "query-status", "id": 1}`,
		`{"execute":"blockdev-change-medium","arguments":{"id":"ide-5632","filename":"/dev/fdset/0","format":"host_device"}}`,
		"{'execute':'qmp_capabilities'}\r\n{\"execute\": \xff}",
		`[1, -2.5e10, "\ud83d\ude00", null, true, {"a": {}}] junk 123 "x"`,
		"{\"a\":\"\x01\"}}}]]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole := collect(in)
		var bytewise [][]byte
		for i := range in {
			bytewise = append(bytewise, in[i:i+1])
		}
		if got := collect(bytewise...); fmt.Sprint(got) != fmt.Sprint(whole) {
			t.Fatalf("byte by byte %q, in one read %q", got, whole)
		}
		for _, m := range whole {
			if strings.HasPrefix(m, "error: ") || strings.Contains(m, "inf") {
				continue // an error, or a number too big for a double, which QEMU prints as inf
			}
			// What the fake prints parses again. It need not come back identical: members
			// sharing a QDict bucket print newest first, so each round trip reverses them,
			// and a double -0 prints as the integer -0, which parses as 0. Two round trips
			// later it must be stable.
			rt := func(in string) string {
				out := collect([]byte(in + "\n"))
				if len(out) != 1 || strings.HasPrefix(out[0], "error: ") {
					t.Fatalf("%q parsed back as %q", in, out)
				}
				return out[0]
			}
			once := rt(m)
			if thrice := rt(rt(once)); thrice != once {
				t.Fatalf("%q: round trips give %q, then %q", m, once, thrice)
			}
		}
	})
}

package termtext

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain path", "/srv/isos/debian-12.iso", "/srv/isos/debian-12.iso"},
		{"unicode stays", "/srv/isos/Überblick-日本.iso", "/srv/isos/Überblick-日本.iso"},
		{"empty", "", ""},
		{"clear screen and title", "x\x1b[2J\x1b]0;t\a", `x\x1b[2J\x1b]0;t\x07`},
		{"forged line", "OPS-1\r\nfake line: outcome changed", `OPS-1\r\nfake line: outcome changed`},
		{"tab", "a\tb", `a\tb`},
		{"DEL", "a\x7fb", `a\x7fb`},
		{"C1 CSI", "a\u009b2Jb", `a\u009b2Jb`},
		{"NEL", "a\u0085b", `a\u0085b`},
		{"bidi override", "evil\u202egnp.iso", `evil\u202egnp.iso`},
		{"isolate", "a\u2066b\u2069", `a\u2066b\u2069`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"invalid UTF-8", "a\xffb\xc3", `a\xffb\xc3`},
		{"backslash doubled", `C:\isos`, `C:\\isos`},
		{"NUL", "a\x00b", `a\x00b`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Escape(tt.in); got != tt.want {
				t.Errorf("Escape(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"fits", "OPS-123", 7, "OPS-123"},
		{"cut", "OPS-12345", 5, "OPS-…"},
		{"cut counts runes", "日本語のチケット", 4, "日本語…"},
		{"escaped before cut", "a\x1bbcdef", 6, `a\x1b…`},
		{"no limit", strings.Repeat("x", 300), 0, strings.Repeat("x", 300)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Truncate(tt.in, tt.max); got != tt.want {
				t.Errorf("Truncate(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
			}
		})
	}
}

// FuzzEscape checks that nothing Escape returns can steer a terminal, whatever it is given:
// valid UTF-8, no control, bidi or separator character, and unchanged when nothing needed
// escaping.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"/srv/a.iso", "x\x1b[2J", "\xff\xfe", "a\u202eb", `\`, "\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Escape(s)
		if !utf8.ValidString(got) {
			t.Fatalf("Escape(%q) = %q, not valid UTF-8", s, got)
		}
		for _, r := range got {
			if unicode.IsControl(r) || unsafeRune(r) {
				t.Fatalf("Escape(%q) = %q, holds %U", s, got, r)
			}
		}
		if !needsEscape(s) && got != s {
			t.Fatalf("Escape(%q) = %q, changed text that needed no escape", s, got)
		}
	})
}

package workflows

import (
	"encoding/json"
	"testing"
)

// TestJSONSize checks jsonSize, which counts without encoding/json (a workflow may not call
// it), against encoding/json itself, which Temporal's payload converter uses.
func TestJSONSize(t *testing.T) {
	for _, s := range []string{
		"", "/srv/isos/debian-12.iso", `a"b\c`, "\n\r\t\x00\x1f\x7f", "<a&b>", "\u2028\u2029",
		"日本語.iso", "bad\xff\xfeutf8", "\u0085\u009b", "\ufffd",
	} {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := jsonSize(s); got != len(b) {
			t.Errorf("jsonSize(%q) = %d, want %d (%s)", s, got, len(b), b)
		}
	}
}

// FuzzJSONSize compares jsonSize with encoding/json on any string.
func FuzzJSONSize(f *testing.F) {
	for _, s := range []string{"", "a\"b", "\xff", "<\u2028>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := jsonSize(s); got != len(b) {
			t.Fatalf("jsonSize(%q) = %d, want %d (%s)", s, got, len(b), b)
		}
	})
}

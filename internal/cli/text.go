package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/cdswap/cdswap/internal/termtext"
)

// Table column widths of `cdswap list`, in characters: a field longer than its column is
// cut (termtext.Truncate), so that one 100 KB ticket cannot flood a listing. The swap id is
// never cut: it is what the other commands take.
const (
	colHost      = 32
	colDomain    = 32
	colVdev      = 8
	colMedium    = 80
	colOutcome   = 16
	colRequester = 24
	colReason    = 40
	colTicket    = 24
	colBatch     = 24
)

// esc is termtext.Escape: every field a person or another program wrote (medium, domain,
// requester, reason, ticket, an activity's error) goes through it before it is printed as
// text.
func esc(s string) string { return termtext.Escape(s) }

// clean escapes the characters of s that could steer a terminal (workflows.IsUnsafeRune)
// and the bytes that are not UTF-8, and leaves everything else, backslashes included, as it
// is: for a message that quotes values with %q or that holds fields already escaped, which
// Escape would escape a second time.
func clean(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case termtext.IsUnsafe(r):
			b.WriteString(esc(string(r)))
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// writeJSON writes v as indented JSON and a newline. encoding/json escapes the C0 controls
// and U+2028/U+2029 and turns bytes that are not UTF-8 into U+FFFD; the other characters
// that could steer a terminal (DEL, the C1 controls, the bidirectional overrides) are
// written as \uXXXX too, which JSON allows, so the document reads back the same.
func writeJSON(w io.Writer, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := w.Write(jsonEscapeUnsafe(buf.Bytes()))
	return err
}

// jsonEscapeUnsafe rewrites the unsafe characters of encoded JSON as \uXXXX escapes. They
// can only be inside strings: JSON's structure is ASCII.
func jsonEscapeUnsafe(doc []byte) []byte {
	var out []byte
	for i := 0; i < len(doc); {
		r, size := utf8.DecodeRune(doc[i:])
		if r != '\n' && termtext.IsUnsafe(r) {
			if out == nil {
				out = append(make([]byte, 0, len(doc)+16), doc[:i]...)
			}
			out = fmt.Appendf(out, `\u%04x`, r)
		} else if out != nil {
			out = append(out, doc[i:i+size]...)
		}
		i += size
	}
	if out == nil {
		return doc
	}
	return out
}

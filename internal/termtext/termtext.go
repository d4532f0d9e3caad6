// Package termtext makes text that a person or another program wrote (media paths, domain
// names, requesters, reasons, tickets) safe to print on a terminal.
//
// Such text reaches cdswap's output from the operator's command line, from Temporal's
// records of other people's swaps, and from xenstore, which a guest's own toolstack writes.
// Printed raw, an escape sequence in it can clear the screen, retitle the window, or move
// the cursor and forge lines of output ("outcome changed"); a carriage return or newline can
// forge a table row; a bidirectional override can make a path read as another. Escape
// renders every such character visibly, in Go's escape notation, and leaves all other text,
// printable Unicode included, as it is.
package termtext

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with every character that could steer a terminal written as an escape:
// C0 and C1 control characters and DEL (\n, \r, \t, \x1b, \u0085...), Unicode's
// bidirectional formatting characters (\u202e...), line and paragraph separators, and bytes
// that are not UTF-8 (\xff). A backslash is doubled, so that the escaped text reads back
// unambiguously. Text without any of these is returned unchanged.
func Escape(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80 && unsafeRune(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Truncate returns Escape(s) cut to at most limit runes, ending in "…" when cut, for table
// cells: a field as long as a ticket of 100 KB must not flood a listing. A limit below 1 means
// no limit.
func Truncate(s string, limit int) string {
	e := Escape(s)
	if limit < 1 || utf8.RuneCountInString(e) <= limit {
		return e
	}
	runes := []rune(e)
	return string(runes[:limit-1]) + "…"
}

// needsEscape reports whether Escape would change s.
func needsEscape(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == '\\' || unsafeRune(r) {
			return true
		}
		i += size
	}
	return false
}

// IsUnsafe reports whether Escape writes r as an escape for what it is (not a backslash,
// which Escape doubles): a control, bidirectional formatting or separator character.
// It uses no formatting, so deterministic code (a Temporal workflow) may call it.
func IsUnsafe(r rune) bool { return unsafeRune(r) }

// unsafeRune reports whether r can steer a terminal or the way text reads: a control
// character (C0, DEL, C1), a bidirectional formatting character, or a line or paragraph
// separator.
func unsafeRune(r rune) bool {
	switch {
	case unicode.IsControl(r):
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c:
		// LRE RLE PDF LRO RLO, LRI RLI FSI PDI, LRM RLM, ALM: the "Trojan Source" characters.
		return true
	case r == 0x2028 || r == 0x2029:
		return true
	}
	return false
}

package qmptest

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file is the fake's reading side of the wire: a lexer, a message splitter and a parser
// that behave like QEMU 7.2's (qobject/json-lexer.c, json-streamer.c, json-parser.c) for what
// a QMP client can send. QEMU does not read lines: it counts braces and brackets, so one line
// may hold several commands and one command may span lines. A lexical error ("stray") throws
// away the message being built and skips input up to the next structural or control
// character, so a client can resynchronise by sending 0xFF or a newline. Parse errors carry
// QEMU's texts ("JSON parse error, expecting value", "... duplicate key", ...).

// Limits on one message. QEMU allows 64 MiB and 2 Mi tokens (MAX_TOKEN_SIZE,
// MAX_TOKEN_COUNT); the fake allows less because no QMP command it knows needs more. The
// nesting limit is QEMU's MAX_NESTING.
const (
	maxMessageBytes  = 1 << 20
	maxMessageTokens = 1 << 16
	maxNesting       = 1 << 10
)

type tokKind int

const (
	tokLCurly tokKind = iota
	tokRCurly
	tokLSquare
	tokRSquare
	tokColon
	tokComma
	tokString
	tokInt
	tokFloat
	tokKeyword
)

type token struct {
	kind tokKind
	text string
}

// lexState is where the lexer is inside a token.
type lexState int

const (
	lexStart lexState = iota
	lexRecovery
	lexString
	lexStringEscape
	lexKeyword
	lexNumSign     // after '-'
	lexNumZero     // a leading 0
	lexNumInt      // integer digits
	lexNumFracDot  // after '.'
	lexNumFrac     // fraction digits
	lexNumExpStart // after 'e'
	lexNumExpSign  // after the exponent's sign
	lexNumExp      // exponent digits
)

// streamer turns a byte stream into parsed messages. It is used by one goroutine.
type streamer struct {
	state lexState
	quote byte   // the quote of the string being lexed
	cur   []byte // the token being lexed

	toks     []token
	size     int
	braces   int
	brackets int

	// emit receives each complete message: a value, or an error description ("JSON parse
	// error, ..."). It returns false to stop processing the rest of the input.
	emit func(v any, errDesc string) bool
	stop bool
}

func isStructural(c byte) bool {
	switch c {
	case '{', '}', '[', ']', ':', ',':
		return true
	}
	return false
}

// feed lexes p. It returns false when emit asked to stop; the rest of p is then ignored.
func (s *streamer) feed(p []byte) bool {
	for i := 0; i < len(p) && !s.stop; {
		if s.step(p[i]) {
			i++
		}
	}
	return !s.stop
}

// step consumes c, or returns false to have c looked at again in the new state (QEMU's
// LOOKAHEAD: a token that ends at a character which is not part of it).
func (s *streamer) step(c byte) bool {
	switch s.state {
	case lexRecovery:
		if isStructural(c) || (c < 0x20 && c != '\t') || c >= 0xFE {
			s.state = lexStart
			return false
		}
		return true
	case lexStart:
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		case c == '{':
			s.token(tokLCurly, "{")
		case c == '}':
			s.token(tokRCurly, "}")
		case c == '[':
			s.token(tokLSquare, "[")
		case c == ']':
			s.token(tokRSquare, "]")
		case c == ':':
			s.token(tokColon, ":")
		case c == ',':
			s.token(tokComma, ",")
		case c == '"' || c == '\'':
			s.quote, s.cur, s.state = c, append(s.cur[:0], c), lexString
		case c >= 'a' && c <= 'z':
			s.cur, s.state = append(s.cur[:0], c), lexKeyword
		case c == '-':
			s.cur, s.state = append(s.cur[:0], c), lexNumSign
		case c == '0':
			s.cur, s.state = append(s.cur[:0], c), lexNumZero
		case c >= '1' && c <= '9':
			s.cur, s.state = append(s.cur[:0], c), lexNumInt
		default:
			s.cur = append(s.cur[:0], c)
			s.stray()
		}
		return true
	case lexString:
		s.cur = append(s.cur, c)
		switch {
		case c < 0x20 || c >= 0xFE:
			s.stray()
		case c == '\\':
			s.state = lexStringEscape
		case c == s.quote:
			s.state = lexStart
			s.token(tokString, string(s.cur))
		}
		return true
	case lexStringEscape:
		s.cur = append(s.cur, c)
		if c < 0x20 || c >= 0xFE {
			s.stray()
		} else {
			s.state = lexString
		}
		return true
	case lexKeyword:
		if c >= 'a' && c <= 'z' {
			s.cur = append(s.cur, c)
			return true
		}
		s.state = lexStart
		s.token(tokKeyword, string(s.cur))
		return false
	}
	return s.stepNumber(c)
}

// stepNumber lexes -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func (s *streamer) stepNumber(c byte) bool {
	digit := c >= '0' && c <= '9'
	next := lexState(-1)
	done := tokKind(-1)
	switch s.state {
	case lexNumSign:
		switch {
		case c == '0':
			next = lexNumZero
		case digit:
			next = lexNumInt
		}
	case lexNumZero, lexNumInt:
		switch {
		case digit && s.state == lexNumInt:
			next = lexNumInt
		case c == '.':
			next = lexNumFracDot
		case c == 'e' || c == 'E':
			next = lexNumExpStart
		default:
			done = tokInt
		}
	case lexNumFracDot:
		if digit {
			next = lexNumFrac
		}
	case lexNumFrac:
		switch {
		case digit:
			next = lexNumFrac
		case c == 'e' || c == 'E':
			next = lexNumExpStart
		default:
			done = tokFloat
		}
	case lexNumExpStart:
		switch {
		case c == '+' || c == '-':
			next = lexNumExpSign
		case digit:
			next = lexNumExp
		}
	case lexNumExpSign:
		if digit {
			next = lexNumExp
		}
	case lexNumExp:
		if digit {
			next = lexNumExp
		} else {
			done = tokFloat
		}
	}
	switch {
	case done >= 0:
		s.state = lexStart
		s.token(done, string(s.cur))
		return false
	case next >= 0:
		s.cur = append(s.cur, c)
		s.state = next
		return true
	default:
		s.cur = append(s.cur, c)
		s.stray()
		return true
	}
}

// stray reports a lexical error: the message being built is dropped and the lexer skips to
// a resynchronisation point (json-lexer.c IN_RECOVERY).
func (s *streamer) stray() {
	desc := "JSON parse error, stray '" + string(s.cur) + "'"
	s.state = lexRecovery
	s.reset()
	s.deliver(nil, desc)
}

func (s *streamer) reset() {
	s.toks, s.size, s.braces, s.brackets = s.toks[:0], 0, 0, 0
}

func (s *streamer) deliver(v any, desc string) {
	if !s.stop && !s.emit(v, desc) {
		s.stop = true
	}
}

// token is json-streamer.c's json_message_process_token: count nesting, enforce the limits,
// and parse once the braces and brackets balance (or go negative).
func (s *streamer) token(k tokKind, text string) {
	switch k {
	case tokLCurly:
		s.braces++
	case tokRCurly:
		s.braces--
	case tokLSquare:
		s.brackets++
	case tokRSquare:
		s.brackets--
	}
	var desc string
	switch {
	case s.size+len(text)+1 > maxMessageBytes:
		desc = "JSON token size limit exceeded"
	case len(s.toks)+1 > maxMessageTokens:
		desc = "JSON token count limit exceeded"
	case s.braces+s.brackets > maxNesting:
		desc = "JSON nesting depth limit exceeded"
	}
	if desc != "" {
		s.reset()
		s.deliver(nil, desc)
		return
	}
	s.toks = append(s.toks, token{k, text})
	s.size += len(text)
	if (s.braces > 0 || s.brackets > 0) && s.braces >= 0 && s.brackets >= 0 {
		return
	}
	p := parser{toks: s.toks}
	v := p.value()
	s.reset()
	if p.err != "" {
		s.deliver(nil, "JSON parse error, "+p.err)
		return
	}
	s.deliver(v, "")
}

// parser is json-parser.c over one message's tokens. The first error wins.
type parser struct {
	toks []token
	pos  int
	err  string
}

func (p *parser) fail(format string, args ...any) {
	if p.err == "" {
		p.err = fmt.Sprintf(format, args...)
	}
}

func (p *parser) peek() (token, bool) {
	if p.pos >= len(p.toks) {
		return token{}, false
	}
	return p.toks[p.pos], true
}

func (p *parser) pop() (token, bool) {
	t, ok := p.peek()
	if ok {
		p.pos++
	}
	return t, ok
}

func (p *parser) value() any {
	t, ok := p.peek()
	if !ok {
		p.fail("premature EOI")
		return nil
	}
	switch t.kind {
	case tokLCurly:
		return p.object()
	case tokLSquare:
		return p.array()
	case tokString:
		p.pos++
		return p.str(t.text)
	case tokInt, tokFloat:
		p.pos++
		return number(t)
	case tokKeyword:
		p.pos++
		switch t.text {
		case "true":
			return true
		case "false":
			return false
		case "null":
			return qnull{}
		}
		p.fail("invalid keyword '%s'", t.text)
		return nil
	}
	p.fail("expecting value")
	return nil
}

func (p *parser) object() any {
	p.pos++ // '{'
	d := newQDict()
	if t, ok := p.peek(); ok && t.kind == tokRCurly {
		p.pos++
		return d
	}
	for {
		if !p.pair(d) {
			return nil
		}
		t, ok := p.pop()
		if !ok {
			p.fail("premature EOI")
			return nil
		}
		if t.kind == tokRCurly {
			return d
		}
		if t.kind != tokComma {
			p.fail("expected separator in dict")
			return nil
		}
	}
}

func (p *parser) pair(d *qdict) bool {
	if _, ok := p.peek(); !ok {
		p.fail("premature EOI")
		return false
	}
	key, isStr := p.value().(string)
	if !isStr {
		p.fail("key is not a string in object")
		return false
	}
	t, ok := p.pop()
	if !ok {
		p.fail("premature EOI")
		return false
	}
	if t.kind != tokColon {
		p.fail("missing : in object pair")
		return false
	}
	v := p.value()
	if v == nil {
		p.fail("Missing value in dict")
		return false
	}
	if d.has(key) {
		p.fail("duplicate key")
		return false
	}
	d.put(key, v)
	return true
}

func (p *parser) array() any {
	p.pos++ // '['
	l := qlist{}
	if t, ok := p.peek(); ok && t.kind == tokRSquare {
		p.pos++
		return l
	}
	for {
		v := p.value()
		if v == nil {
			p.fail("expecting value")
			return nil
		}
		l = append(l, v)
		t, ok := p.pop()
		if !ok {
			p.fail("premature EOI")
			return nil
		}
		if t.kind == tokRSquare {
			return l
		}
		if t.kind != tokComma {
			p.fail("expected separator in list")
			return nil
		}
	}
}

// number types a numeric literal like parse_literal: int64, else uint64 for a non-negative
// literal, else double.
func number(t token) qnum {
	if t.kind == tokInt {
		if i, err := strconv.ParseInt(t.text, 10, 64); err == nil {
			return qnum{kind: numInt, i: i}
		}
		if !strings.HasPrefix(t.text, "-") {
			if u, err := strconv.ParseUint(t.text, 10, 64); err == nil {
				return qnum{kind: numUint, u: u}
			}
		}
	}
	f, _ := strconv.ParseFloat(t.text, 64) // ±Inf on overflow, like strtod's HUGE_VAL
	return qnum{kind: numFloat, f: f}
}

// str unescapes a string token (with its quotes). It returns nil after an error.
func (p *parser) str(raw string) any {
	body := raw[1 : len(raw)-1]
	var b strings.Builder
	for i := 0; i < len(body); {
		c := body[i]
		if c != '\\' {
			r, n := utf8.DecodeRuneInString(body[i:])
			if r == utf8.RuneError && n <= 1 {
				p.fail("invalid UTF-8 sequence in string")
				return nil
			}
			b.WriteString(body[i : i+n])
			i += n
			continue
		}
		if i+1 >= len(body) {
			p.fail("invalid escape sequence in string")
			return nil
		}
		esc := body[i+1]
		start := i
		i += 2
		switch esc {
		case '"', '\'', '\\', '/':
			b.WriteByte(esc)
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			cp, ok := hex4(body, i)
			if !ok {
				p.fail("invalid escape sequence in string")
				return nil
			}
			i += 4
			if cp >= 0xD800 && cp <= 0xDBFF && strings.HasPrefix(body[i:], `\u`) {
				trail, ok := hex4(body, i+2)
				if ok && trail >= 0xDC00 && trail <= 0xDFFF {
					cp = 0x10000 + (cp&0x3FF)<<10 | trail&0x3FF
					i += 6
				} else {
					cp = -1
				}
			}
			if cp < 0 || (cp >= 0xD800 && cp <= 0xDFFF) {
				p.fail("%s is not a valid Unicode character", body[start:i])
				return nil
			}
			b.WriteRune(rune(cp))
		default:
			p.fail("invalid escape sequence in string")
			return nil
		}
	}
	return b.String()
}

func hex4(s string, i int) (int, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	v, err := strconv.ParseUint(s[i:i+4], 16, 16)
	if err != nil {
		return 0, false
	}
	return int(v), true
}

package xs

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzDecodeMsg feeds arbitrary bytes to the frame decoder: it must never panic, must agree
// with the stream reader, and whatever it accepts must encode back to the same bytes.
func FuzzDecodeMsg(f *testing.F) {
	for _, tt := range frameTests {
		f.Add(tt.raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, n, err := DecodeMsg(b)
		rm, rerr := ReadMsg(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrShortFrame) && !errors.Is(err, ErrPayloadTooLarge) {
				t.Fatalf("DecodeMsg(%x) = %v, want ErrShortFrame or ErrPayloadTooLarge", b, err)
			}
			if rerr == nil {
				t.Fatalf("ReadMsg(%x) = %+v, nil but DecodeMsg failed with %v", b, rm, err)
			}
			return
		}
		if n != HeaderSize+len(m.Payload) || n > len(b) || len(m.Payload) > PayloadMax {
			t.Fatalf("DecodeMsg(%x) used %d bytes for a %d-byte payload of a %d-byte input", b, n, len(m.Payload), len(b))
		}
		if rerr != nil || rm.Op != m.Op || rm.ReqID != m.ReqID || rm.TxID != m.TxID || !bytes.Equal(rm.Payload, m.Payload) {
			t.Fatalf("ReadMsg(%x) = %+v, %v, want %+v as DecodeMsg", b, rm, rerr, m)
		}
		enc, err := AppendMsg(nil, m)
		if err != nil {
			t.Fatalf("AppendMsg(DecodeMsg(%x)) = %v", b, err)
		}
		if !bytes.Equal(enc, b[:n]) {
			t.Fatalf("AppendMsg(DecodeMsg(%x)) = %x, want the input back", b[:n], enc)
		}
	})
}

// FuzzMsgRoundTrip checks that DecodeMsg(AppendMsg(m)) == m for every frame AppendMsg takes.
func FuzzMsgRoundTrip(f *testing.F) {
	for _, tt := range frameTests {
		// Large seeds slow the engine's mutation of four arguments to a crawl; the limits are
		// in TestAppendMsg and FuzzDecodeMsg.
		if tt.err == nil && len(tt.msg.Payload) < 100 {
			f.Add(uint32(tt.msg.Op), tt.msg.ReqID, tt.msg.TxID, tt.msg.Payload)
		}
	}
	f.Fuzz(func(t *testing.T, op, reqID, txID uint32, payload []byte) {
		in := Msg{Op: Op(op), ReqID: reqID, TxID: txID, Payload: payload}
		b, err := AppendMsg(nil, in)
		if len(payload) > PayloadMax {
			if !errors.Is(err, ErrPayloadTooLarge) || len(b) != 0 {
				t.Fatalf("AppendMsg(%d-byte payload) = %d bytes, %v, want ErrPayloadTooLarge", len(payload), len(b), err)
			}
			return
		}
		if err != nil {
			t.Fatalf("AppendMsg(%+v) = %v", in, err)
		}
		out, n, err := DecodeMsg(b)
		if err != nil || n != len(b) {
			t.Fatalf("DecodeMsg(AppendMsg(%+v)) = %d bytes, %v, want %d bytes", in, n, err, len(b))
		}
		if out.Op != in.Op || out.ReqID != in.ReqID || out.TxID != in.TxID || !bytes.Equal(out.Payload, in.Payload) {
			t.Fatalf("DecodeMsg(AppendMsg(%+v)) = %+v", in, out)
		}
	})
}

// FuzzSplitStrings checks that splitting never panics and loses nothing: joining the parts
// gives the payload back, NUL-terminated.
func FuzzSplitStrings(f *testing.F) {
	for _, tt := range splitTests {
		f.Add([]byte(tt.payload))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		parts := SplitStrings(p)
		want := p
		if len(p) > 0 && p[len(p)-1] != 0 {
			want = append(bytes.Clone(p), 0)
		}
		if got := JoinStrings(parts...); !bytes.Equal(got, want) {
			t.Fatalf("JoinStrings(SplitStrings(%q)) = %q, want %q", p, got, want)
		}
		for _, s := range parts {
			if strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("SplitStrings(%q) gave %q with a NUL in it", p, s)
			}
		}
	})
}

// FuzzValidatePath checks that ValidatePath never panics and that what it accepts really
// keeps xenstored's rules.
func FuzzValidatePath(f *testing.F) {
	for _, tt := range pathTests {
		f.Add(tt.path)
	}
	f.Fuzz(func(t *testing.T, p string) {
		err := ValidatePath(p)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("ValidatePath(%q) = %v, want ErrBadPath", p, err)
			}
			return
		}
		limit := RelPathMax
		if strings.HasPrefix(p, "/") {
			limit = AbsPathMax
		}
		if p == "" || len(p) > limit {
			t.Fatalf("ValidatePath(%q) accepted %d bytes, limit %d", p, len(p), limit)
		}
		if strings.Trim(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-/_@") != "" {
			t.Fatalf("ValidatePath(%q) accepted a character outside [A-Za-z0-9-/_@]", p)
		}
		if p != "/" && (strings.HasSuffix(p, "/") || strings.Contains(p, "//")) {
			t.Fatalf("ValidatePath(%q) accepted an empty component", p)
		}
		// A valid path always fits a request on its own.
		if _, err := AppendMsg(nil, Msg{Op: OpRead, Payload: JoinStrings(p)}); err != nil {
			t.Fatalf("AppendMsg(READ %q) = %v", p, err)
		}
	})
}

// FuzzParsePerms checks that ParsePerms never panics and that what it accepts prints back to
// entries that parse to the same permissions.
func FuzzParsePerms(f *testing.F) {
	for _, tt := range permsTests {
		f.Add([]byte(tt.payload))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		perms, err := ParsePerms(p)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParsePerms(%q) = %v, want ErrInvalid", p, err)
			}
			return
		}
		if len(perms) == 0 {
			t.Fatalf("ParsePerms(%q) accepted an empty list", p)
		}
		strs := make([]string, len(perms))
		for i, pm := range perms {
			strs[i] = pm.String()
		}
		again, err := ParsePerms(JoinStrings(strs...))
		if err != nil {
			t.Fatalf("ParsePerms(%q) = %v after printing %v", JoinStrings(strs...), err, perms)
		}
		if len(again) != len(perms) {
			t.Fatalf("ParsePerms(print(%v)) = %v", perms, again)
		}
		for i := range perms {
			if again[i] != perms[i] {
				t.Fatalf("ParsePerms(print(%v)) = %v", perms, again)
			}
		}
	})
}

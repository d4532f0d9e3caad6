package xs

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// frameTests are whole frames as they cross the wire, byte by byte, with the Msg they carry.
// The fuzz tests start from them.
var frameTests = []struct {
	name string
	raw  []byte
	msg  Msg
	n    int   // bytes DecodeMsg consumes
	err  error // want errors.Is(err, this)
}{
	{
		name: "read request",
		raw: []byte{
			0x02, 0x00, 0x00, 0x00, // type: READ (2)
			0x07, 0x00, 0x00, 0x00, // req_id: 7
			0x00, 0x00, 0x00, 0x00, // tx_id: 0, no transaction
			0x03, 0x00, 0x00, 0x00, // len: 3
			'/', 'a', 0x00, // payload: "/a" NUL
		},
		msg: Msg{Op: OpRead, ReqID: 7, Payload: []byte("/a\x00")},
		n:   19,
	},
	{
		name: "write in a transaction, value without NUL",
		raw: []byte{
			0x0b, 0x00, 0x00, 0x00, // type: WRITE (11)
			0x01, 0x01, 0x00, 0x00, // req_id: 257, little-endian
			0x2a, 0x00, 0x00, 0x00, // tx_id: 42
			0x05, 0x00, 0x00, 0x00, // len: 5
			'/', 'k', 0x00, 'v', '1', // payload: "/k" NUL "v1"
		},
		msg: Msg{Op: OpWrite, ReqID: 257, TxID: 42, Payload: []byte("/k\x00v1")},
		n:   21,
	},
	{
		name: "watch event with req_id 0",
		raw: []byte{
			0x0f, 0x00, 0x00, 0x00, // type: WATCH_EVENT (15)
			0x00, 0x00, 0x00, 0x00, // req_id: 0, events carry none
			0x00, 0x00, 0x00, 0x00, // tx_id: 0
			0x06, 0x00, 0x00, 0x00, // len: 6
			'/', 'a', 0x00, 't', '1', 0x00, // payload: "/a" NUL "t1" NUL
		},
		msg: Msg{Op: OpWatchEvent, Payload: []byte("/a\x00t1\x00")},
		n:   22,
	},
	{
		name: "error reply",
		raw: []byte{
			0x10, 0x00, 0x00, 0x00, // type: ERROR (16)
			0x09, 0x00, 0x00, 0x00, // req_id: 9
			0x00, 0x00, 0x00, 0x00, // tx_id: 0
			0x07, 0x00, 0x00, 0x00, // len: 7
			'E', 'N', 'O', 'E', 'N', 'T', 0x00, // payload: "ENOENT" NUL
		},
		msg: Msg{Op: OpError, ReqID: 9, Payload: []byte("ENOENT\x00")},
		n:   23,
	},
	{
		name: "empty payload, trailing bytes of the next frame left alone",
		raw: []byte{
			0x01, 0x00, 0x00, 0x00, // type: DIRECTORY (1)
			0xff, 0xff, 0xff, 0xff, // req_id: 4294967295
			0x00, 0x00, 0x00, 0x00, // tx_id: 0
			0x00, 0x00, 0x00, 0x00, // len: 0
			0x02, 0x00, // start of another frame
		},
		msg: Msg{Op: OpDirectory, ReqID: 0xffffffff, Payload: []byte{}},
		n:   16,
	},
	{
		name: "payload of exactly PayloadMax",
		raw: append([]byte{
			0x02, 0x00, 0x00, 0x00, // type: READ (2)
			0x01, 0x00, 0x00, 0x00, // req_id: 1
			0x00, 0x00, 0x00, 0x00, // tx_id: 0
			0x00, 0x10, 0x00, 0x00, // len: 4096
		}, bytes.Repeat([]byte{'x'}, PayloadMax)...),
		msg: Msg{Op: OpRead, ReqID: 1, Payload: bytes.Repeat([]byte{'x'}, PayloadMax)},
		n:   HeaderSize + PayloadMax,
	},
	{
		name: "unknown type decodes; meaning is the caller's business",
		raw: []byte{
			0xff, 0xff, 0x00, 0x00, // type: XS_INVALID (0xffff)
			0x01, 0x00, 0x00, 0x00, // req_id: 1
			0x00, 0x00, 0x00, 0x00, // tx_id: 0
			0x00, 0x00, 0x00, 0x00, // len: 0
		},
		msg: Msg{Op: OpInvalid, ReqID: 1, Payload: []byte{}},
		n:   16,
	},
	{
		name: "header cut short",
		raw: []byte{
			0x02, 0x00, 0x00, 0x00, // type: READ
			0x07, 0x00, 0x00, 0x00, // req_id: 7
			0x00, 0x00, 0x00, // tx_id: one byte missing
		},
		err: ErrShortFrame,
	},
	{
		name: "payload cut short",
		raw: []byte{
			0x02, 0x00, 0x00, 0x00, // type: READ
			0x07, 0x00, 0x00, 0x00, // req_id: 7
			0x00, 0x00, 0x00, 0x00, // tx_id: 0
			0x04, 0x00, 0x00, 0x00, // len: 4
			'/', 'a', 0x00, // only 3 bytes follow
		},
		err: ErrShortFrame,
	},
	{
		name: "length one over PayloadMax",
		raw: []byte{
			0x02, 0x00, 0x00, 0x00, // type: READ
			0x07, 0x00, 0x00, 0x00, // req_id: 7
			0x00, 0x00, 0x00, 0x00, // tx_id: 0
			0x01, 0x10, 0x00, 0x00, // len: 4097
		},
		err: ErrPayloadTooLarge,
	},
	{
		name: "length that would wrap an int32",
		raw: []byte{
			0x02, 0x00, 0x00, 0x00, // type: READ
			0x07, 0x00, 0x00, 0x00, // req_id: 7
			0x00, 0x00, 0x00, 0x00, // tx_id: 0
			0xff, 0xff, 0xff, 0xff, // len: 4294967295
		},
		err: ErrPayloadTooLarge,
	},
	{
		name: "empty input",
		raw:  []byte{},
		err:  ErrShortFrame,
	},
}

func TestDecodeMsg(t *testing.T) {
	for _, tt := range frameTests {
		t.Run(tt.name, func(t *testing.T) {
			m, n, err := DecodeMsg(tt.raw)
			if tt.err != nil {
				require.ErrorIs(t, err, tt.err, "DecodeMsg(%x) = %v, want %v", tt.raw, err, tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.n, n, "DecodeMsg(%x) used %d bytes, want %d", tt.raw, n, tt.n)
			assert.Equal(t, tt.msg, m, "DecodeMsg(%x) = %+v, want %+v", tt.raw, m, tt.msg)
		})
	}
}

func TestReadMsg(t *testing.T) {
	for _, tt := range frameTests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ReadMsg(bytes.NewReader(tt.raw))
			switch {
			case tt.err == nil:
				require.NoError(t, err)
				assert.Equal(t, tt.msg, m, "ReadMsg(%x) = %+v, want %+v", tt.raw, m, tt.msg)
			case errors.Is(tt.err, ErrShortFrame):
				// A stream that ends inside a frame is an I/O condition, not a bad header.
				require.Error(t, err)
				assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF),
					"ReadMsg(%x) = %v, want EOF or ErrUnexpectedEOF", tt.raw, err)
			default:
				require.ErrorIs(t, err, tt.err, "ReadMsg(%x) = %v, want %v", tt.raw, err, tt.err)
			}
		})
	}
}

func TestReadMsgStopsAtOversizedHeader(t *testing.T) {
	// Nothing after a header announcing too much is read: the payload bytes stay unread.
	raw := []byte{
		0x02, 0x00, 0x00, 0x00, // type: READ
		0x01, 0x00, 0x00, 0x00, // req_id: 1
		0x00, 0x00, 0x00, 0x00, // tx_id: 0
		0x00, 0x20, 0x00, 0x00, // len: 8192
		'x', 'y',
	}
	r := bytes.NewReader(raw)
	_, err := ReadMsg(r)
	require.ErrorIs(t, err, ErrPayloadTooLarge)
	assert.Equal(t, 2, r.Len(), "ReadMsg read %d payload bytes of an oversized frame, want 0", 2-r.Len())
}

func TestAppendMsg(t *testing.T) {
	for _, tt := range frameTests {
		if tt.err != nil {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			got, err := AppendMsg([]byte("prefix"), tt.msg)
			require.NoError(t, err)
			want := append([]byte("prefix"), tt.raw[:tt.n]...)
			assert.Equal(t, want, got, "AppendMsg(%+v) = %x, want %x", tt.msg, got, want)
		})
	}
	t.Run("payload over PayloadMax", func(t *testing.T) {
		b, err := AppendMsg([]byte("keep"), Msg{Op: OpWrite, Payload: make([]byte, PayloadMax+1)})
		require.ErrorIs(t, err, ErrPayloadTooLarge)
		assert.Equal(t, []byte("keep"), b, "AppendMsg changed the buffer on error")
	})
}

var splitTests = []struct {
	name    string
	payload string
	want    []string
}{
	{name: "empty", payload: "", want: nil},
	{name: "one terminated", payload: "a\x00", want: []string{"a"}},
	{name: "one unterminated", payload: "a", want: []string{"a"}},
	{name: "two terminated", payload: "a\x00b\x00", want: []string{"a", "b"}},
	{name: "two unterminated", payload: "a\x00b", want: []string{"a", "b"}},
	{name: "one empty string", payload: "\x00", want: []string{""}},
	{name: "empty in the middle", payload: "a\x00\x00b\x00", want: []string{"a", "", "b"}},
	{name: "two trailing NULs keep one empty", payload: "a\x00\x00", want: []string{"a", ""}},
	{name: "watch event", payload: "/local/domain/1/device\x00tok\x00", want: []string{"/local/domain/1/device", "tok"}},
}

func TestSplitStrings(t *testing.T) {
	for _, tt := range splitTests {
		t.Run(tt.name, func(t *testing.T) {
			got := SplitStrings([]byte(tt.payload))
			assert.Equal(t, tt.want, got, "SplitStrings(%q) = %q, want %q", tt.payload, got, tt.want)
		})
	}
}

func TestJoinStrings(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want string
	}{
		{name: "none", in: nil, want: ""},
		{name: "one empty", in: []string{""}, want: "\x00"},
		{name: "path and token", in: []string{"/a", "t"}, want: "/a\x00t\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(JoinStrings(tt.in...))
			assert.Equal(t, tt.want, got, "JoinStrings(%q) = %q, want %q", tt.in, got, tt.want)
		})
	}
}

var pathTests = []struct {
	name string
	path string
	ok   bool
}{
	{name: "root", path: "/", ok: true},
	{name: "absolute", path: "/local/domain/0/backend/vbd/1/5632", ok: true},
	{name: "relative", path: "device/vbd/5632/state", ok: true},
	{name: "every allowed character", path: "/aZ09-_@", ok: true},
	{name: "special watch path", path: "@releaseDomain", ok: true},
	{name: "absolute at the limit", path: "/" + strings.Repeat("a", AbsPathMax-1), ok: true},
	{name: "relative at the limit", path: strings.Repeat("a", RelPathMax), ok: true},
	{name: "empty", path: ""},
	{name: "absolute over the limit", path: "/" + strings.Repeat("a", AbsPathMax)},
	{name: "relative over the limit", path: strings.Repeat("a", RelPathMax+1)},
	{name: "trailing slash", path: "/local/"},
	{name: "double slash", path: "/local//domain"},
	{name: "dot", path: "/local/domain.0"},
	{name: "space", path: "/a b"},
	{name: "NUL", path: "/a\x00b"},
	{name: "non-ASCII", path: "/caf\u00e9"},
}

func TestValidatePath(t *testing.T) {
	for _, tt := range pathTests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidatePath(tt.path)
			if tt.ok {
				assert.NoError(t, err, "ValidatePath(%q) = %v, want nil", tt.path, err)
				return
			}
			assert.ErrorIs(t, err, ErrBadPath, "ValidatePath(%q) = %v, want ErrBadPath", tt.path, err)
		})
	}
}

var permsTests = []struct {
	name    string
	payload string
	want    []Perm
	ok      bool
}{
	{name: "owner only", payload: "n0\x00", want: []Perm{{0, AccessNone}}, ok: true},
	{name: "libxl backend perms", payload: "n0\x00r5\x00", want: []Perm{{0, AccessNone}, {5, AccessRead}}, ok: true},
	{name: "every letter, no trailing NUL", payload: "b1\x00w2\x00r3\x00n4", want: []Perm{{1, AccessBoth}, {2, AccessWrite}, {3, AccessRead}, {4, AccessNone}}, ok: true},
	{name: "largest domid", payload: "r4294967295\x00", want: []Perm{{4294967295, AccessRead}}, ok: true},
	{name: "empty"},
	{name: "letter only", payload: "r\x00"},
	{name: "unknown letter", payload: "x5\x00"},
	{name: "domid too large", payload: "r4294967296\x00"},
	{name: "signed domid", payload: "r-1\x00"},
	{name: "empty entry", payload: "n0\x00\x00r1\x00"},
}

func TestParsePerms(t *testing.T) {
	for _, tt := range permsTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePerms([]byte(tt.payload))
			if !tt.ok {
				assert.ErrorIs(t, err, ErrInvalid, "ParsePerms(%q) = %v, %v, want ErrInvalid", tt.payload, got, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got, "ParsePerms(%q) = %v, want %v", tt.payload, got, tt.want)
		})
	}
}

func TestErrnoError(t *testing.T) {
	tests := []struct {
		name string
		want error
	}{
		{"EINVAL", ErrInvalid}, {"EACCES", ErrAccess}, {"EEXIST", ErrExist}, {"EISDIR", ErrIsDir},
		{"ENOENT", ErrNotFound}, {"ENOMEM", ErrNoMem}, {"ENOSPC", ErrNoSpace}, {"EIO", ErrIO},
		{"ENOTEMPTY", ErrNotEmpty}, {"ENOSYS", ErrNoSys}, {"EROFS", ErrReadOnly}, {"EBUSY", ErrBusy},
		{"EAGAIN", ErrAgain}, {"EISCONN", ErrIsConn}, {"E2BIG", ErrTooBig}, {"EPERM", ErrPerm},
		{"EQUOTA", ErrQuota},
		{"ENOTSUP", ErrInvalid}, // unknown names map to EINVAL, as in libxenstore
		{"", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ErrnoError(tt.name)
			assert.ErrorIs(t, got, tt.want, "ErrnoError(%q) = %v, want %v", tt.name, got, tt.want)
			if !errors.Is(tt.want, ErrInvalid) || tt.name == "EINVAL" {
				assert.Equal(t, tt.name, ErrnoName(got), "ErrnoName(ErrnoError(%q))", tt.name)
			}
		})
	}
}

func TestErrorFormatAndUnwrap(t *testing.T) {
	err := error(&Error{Op: OpRead, Path: "/a", Err: ErrNotFound})
	assert.Equal(t, "xenstore READ /a: ENOENT: no such node", err.Error())
	assert.ErrorIs(t, err, ErrNotFound)
	var xe *Error
	require.ErrorAs(t, err, &xe)
	assert.Equal(t, OpRead, xe.Op)
	err = &Error{Op: OpTransactionEnd, Err: ErrAgain}
	assert.Equal(t, "xenstore TRANSACTION_END: EAGAIN: transaction conflict, try again", err.Error())
}

func TestOpString(t *testing.T) {
	for _, op := range []Op{OpRead, OpWatchEvent, OpDirectoryPart, Op(20), Op(99)} {
		s := op.String()
		assert.NotEmpty(t, s)
		if !slices.Contains([]Op{Op(20), Op(99)}, op) {
			assert.NotContains(t, s, "Op(", "Op(%d).String() = %q, want a name", uint32(op), s)
		}
	}
	assert.Equal(t, "Op(20)", Op(20).String(), "RESTRICT (20) was removed and has no name")
}

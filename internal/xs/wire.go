package xs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Op is a xenstore message type (enum xsd_sockmsg_type in xs_wire.h).
type Op uint32

// Message types, numbered as in xs_wire.h.
const (
	OpControl            Op = 0
	OpDirectory          Op = 1
	OpRead               Op = 2
	OpGetPerms           Op = 3
	OpWatch              Op = 4
	OpUnwatch            Op = 5
	OpTransactionStart   Op = 6
	OpTransactionEnd     Op = 7
	OpIntroduce          Op = 8
	OpRelease            Op = 9
	OpGetDomainPath      Op = 10
	OpWrite              Op = 11
	OpMkdir              Op = 12
	OpRm                 Op = 13
	OpSetPerms           Op = 14
	OpWatchEvent         Op = 15
	OpError              Op = 16
	OpIsDomainIntroduced Op = 17
	OpResume             Op = 18
	OpSetTarget          Op = 19
	OpResetWatches       Op = 21
	OpDirectoryPart      Op = 22
	OpGetFeature         Op = 23
	OpSetFeature         Op = 24
	OpGetQuota           Op = 25
	OpSetQuota           Op = 26
	OpInvalid            Op = 0xffff
)

var opNames = map[Op]string{
	OpControl: "CONTROL", OpDirectory: "DIRECTORY", OpRead: "READ", OpGetPerms: "GET_PERMS",
	OpWatch: "WATCH", OpUnwatch: "UNWATCH", OpTransactionStart: "TRANSACTION_START",
	OpTransactionEnd: "TRANSACTION_END", OpIntroduce: "INTRODUCE", OpRelease: "RELEASE",
	OpGetDomainPath: "GET_DOMAIN_PATH", OpWrite: "WRITE", OpMkdir: "MKDIR", OpRm: "RM",
	OpSetPerms: "SET_PERMS", OpWatchEvent: "WATCH_EVENT", OpError: "ERROR",
	OpIsDomainIntroduced: "IS_DOMAIN_INTRODUCED", OpResume: "RESUME", OpSetTarget: "SET_TARGET",
	OpResetWatches: "RESET_WATCHES", OpDirectoryPart: "DIRECTORY_PART", OpGetFeature: "GET_FEATURE",
	OpSetFeature: "SET_FEATURE", OpGetQuota: "GET_QUOTA", OpSetQuota: "SET_QUOTA", OpInvalid: "INVALID",
}

func (o Op) String() string {
	if n, ok := opNames[o]; ok {
		return n
	}
	return fmt.Sprintf("Op(%d)", uint32(o))
}

// Limits from xs_wire.h.
const (
	HeaderSize = 16   // sizeof(struct xsd_sockmsg)
	PayloadMax = 4096 // XENSTORE_PAYLOAD_MAX: a client that exceeds it is disconnected
	AbsPathMax = 3072 // XENSTORE_ABS_PATH_MAX
	RelPathMax = 2048 // XENSTORE_REL_PATH_MAX
)

// Header is struct xsd_sockmsg.
type Header struct {
	Op    Op
	ReqID uint32
	TxID  uint32
	Len   uint32
}

// Msg is one frame: a header and its payload. Header.Len is set from Payload on encode.
type Msg struct {
	Op      Op
	ReqID   uint32
	TxID    uint32
	Payload []byte
}

// Frame decoding errors. A peer that sends one of these is out of step and its connection
// should be dropped: nothing after a bad header can be trusted.
var (
	ErrPayloadTooLarge = errors.New("xenstore payload larger than 4096 bytes")
	ErrShortFrame      = errors.New("xenstore frame truncated")
)

// AppendMsg appends m's wire form to b. It refuses payloads over PayloadMax, which
// xenstored would answer by killing the connection.
func AppendMsg(b []byte, m Msg) ([]byte, error) {
	if len(m.Payload) > PayloadMax {
		return b, fmt.Errorf("%s payload of %d bytes: %w", m.Op, len(m.Payload), ErrPayloadTooLarge)
	}
	var h [HeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(m.Op))
	binary.LittleEndian.PutUint32(h[4:], m.ReqID)
	binary.LittleEndian.PutUint32(h[8:], m.TxID)
	binary.LittleEndian.PutUint32(h[12:], uint32(len(m.Payload)))
	b = append(b, h[:]...)
	return append(b, m.Payload...), nil
}

// DecodeHeader parses the 16-byte header at the start of b.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, ErrShortFrame
	}
	h := Header{
		Op:    Op(binary.LittleEndian.Uint32(b[0:])),
		ReqID: binary.LittleEndian.Uint32(b[4:]),
		TxID:  binary.LittleEndian.Uint32(b[8:]),
		Len:   binary.LittleEndian.Uint32(b[12:]),
	}
	if h.Len > PayloadMax {
		return h, fmt.Errorf("%s frame announces %d bytes: %w", h.Op, h.Len, ErrPayloadTooLarge)
	}
	return h, nil
}

// DecodeMsg parses one whole frame from b and returns it with the number of bytes used.
// It returns ErrShortFrame when b holds less than a frame.
func DecodeMsg(b []byte) (Msg, int, error) {
	h, err := DecodeHeader(b)
	if err != nil {
		return Msg{}, 0, err
	}
	n := HeaderSize + int(h.Len)
	if len(b) < n {
		return Msg{}, 0, ErrShortFrame
	}
	return Msg{Op: h.Op, ReqID: h.ReqID, TxID: h.TxID, Payload: bytes.Clone(b[HeaderSize:n])}, n, nil
}

// ReadMsg reads one frame from r. A header announcing more than PayloadMax is an error
// and nothing more is read, as xenstored does.
func ReadMsg(r io.Reader) (Msg, error) {
	var hb [HeaderSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return Msg{}, err
	}
	h, err := DecodeHeader(hb[:])
	if err != nil {
		return Msg{}, err
	}
	m := Msg{Op: h.Op, ReqID: h.ReqID, TxID: h.TxID, Payload: make([]byte, h.Len)}
	if _, err := io.ReadFull(r, m.Payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Msg{}, fmt.Errorf("read %s payload: %w", h.Op, err)
	}
	return m, nil
}

// JoinStrings builds a payload of NUL-terminated strings: "a\x00b\x00".
func JoinStrings(s ...string) []byte {
	var b []byte
	for _, v := range s {
		b = append(b, v...)
		b = append(b, 0)
	}
	return b
}

// SplitStrings splits a payload of NUL-separated strings. A trailing NUL does not give an
// empty last element, so "a\x00b\x00" and "a\x00b" both give [a b].
func SplitStrings(p []byte) []string {
	if len(p) == 0 {
		return nil
	}
	s := string(p)
	s = strings.TrimSuffix(s, "\x00")
	return strings.Split(s, "\x00")
}

package qmptest

import (
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// This file is the fake's model of QEMU's QObject values and of how QEMU prints them
// (qobject/qjson.c, qobject/json-writer.c, qobject/qdict.c), so that replies are byte for byte
// what QEMU 7.2 sends: ", " and ": " separators, \uXXXX escapes in upper-case hex, and object
// members in QDict hash-table order rather than in insertion order.

// qnull is JSON null.
type qnull struct{}

// numKind says which of qnum's fields holds the value, like QNumKind in qapi/qmp/qnum.h.
type numKind int

const (
	numInt numKind = iota
	numUint
	numFloat
)

// qnum is a JSON number: an int64 when the literal fits, else a uint64, else a double, which
// is how QEMU's parser types integer literals (qobject/json-parser.c parse_literal).
type qnum struct {
	kind numKind
	i    int64
	u    uint64
	f    float64
}

// qlist is a JSON array.
type qlist []any

// qdict is a JSON object. QEMU keeps members in a 512-bucket hash table and prints them bucket
// by bucket, newest first within a bucket; keys records insertion order so that order can be
// rebuilt.
type qdict struct {
	keys []string
	vals map[string]any
}

// qdictBuckets is QDICT_BUCKET_MAX in include/qapi/qmp/qdict.h.
const qdictBuckets = 512

func newQDict() *qdict { return &qdict{vals: map[string]any{}} }

// put sets key to v; like qdict_put_obj, replacing a value keeps the member's place.
func (d *qdict) put(key string, v any) *qdict {
	if _, ok := d.vals[key]; !ok {
		d.keys = append(d.keys, key)
	}
	d.vals[key] = v
	return d
}

func (d *qdict) get(key string) (any, bool) {
	v, ok := d.vals[key]
	return v, ok
}

func (d *qdict) has(key string) bool {
	_, ok := d.vals[key]
	return ok
}

// ordered returns the keys in the order QEMU iterates them (qdict_first/qdict_next): by
// bucket, and within a bucket the most recently inserted first (QLIST_INSERT_HEAD).
func (d *qdict) ordered() []string {
	type slot struct {
		key    string
		bucket uint32
		seq    int
	}
	slots := make([]slot, len(d.keys))
	for i, k := range d.keys {
		slots[i] = slot{k, tdbHash(k) % qdictBuckets, i}
	}
	slices.SortFunc(slots, func(a, b slot) int {
		if a.bucket != b.bucket {
			return int(a.bucket) - int(b.bucket)
		}
		return b.seq - a.seq
	})
	out := make([]string, len(slots))
	for i, s := range slots {
		out[i] = s.key
	}
	return out
}

// tdbHash is qdict.c's tdb_hash (from gdbm via tdb), with C's unsigned 32-bit wrap-around.
func tdbHash(name string) uint32 {
	v := uint32(0x238F13AF) * uint32(len(name))
	for i := 0; i < len(name); i++ {
		v += uint32(name[i]) << (uint(i) * 5 % 24)
	}
	return 1103515243*v + 12345
}

// obj builds a qdict from key/value pairs in insertion (schema) order.
func obj(kv ...any) *qdict {
	d := newQDict()
	for i := 0; i+1 < len(kv); i += 2 {
		d.put(kv[i].(string), kv[i+1])
	}
	return d
}

// encode appends the JSON text of v as QEMU's compact JSON writer prints it.
func encode(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil, qnull:
		return append(b, "null"...)
	case bool:
		if v {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	case qnum:
		switch v.kind {
		case numInt:
			return strconv.AppendInt(b, v.i, 10)
		case numUint:
			return strconv.AppendUint(b, v.u, 10)
		default:
			// printf("%.17g"); strconv's 'g' with precision 17 prints the same digits, but
			// glibc spells infinity "inf" (not JSON: QEMU prints it all the same).
			switch {
			case math.IsInf(v.f, 1):
				return append(b, "inf"...)
			case math.IsInf(v.f, -1):
				return append(b, "-inf"...)
			}
			return strconv.AppendFloat(b, v.f, 'g', 17, 64)
		}
	case int:
		return strconv.AppendInt(b, int64(v), 10)
	case int64:
		return strconv.AppendInt(b, v, 10)
	case string:
		return quote(b, v)
	case qlist:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = encode(b, e)
		}
		return append(b, ']')
	case *qdict:
		b = append(b, '{')
		for i, k := range v.ordered() {
			if i > 0 {
				b = append(b, ", "...)
			}
			b = quote(b, k)
			b = append(b, ": "...)
			b = encode(b, v.vals[k])
		}
		return append(b, '}')
	default:
		// Every value the fake builds is one of the types above; null keeps a slip from
		// turning into a crash of the whole fake.
		return append(b, "null"...)
	}
}

// quote is json-writer.c's quoted_str: the short escapes, \uXXXX (upper-case hex) for control
// characters and everything from DEL up, surrogate pairs beyond the BMP, and U+FFFD for bytes
// that are not UTF-8.
func quote(b []byte, s string) []byte {
	const hex = "0123456789ABCDEF"
	u4 := func(b []byte, r rune) []byte {
		return append(b, '\\', 'u', hex[r>>12&0xF], hex[r>>8&0xF], hex[r>>4&0xF], hex[r&0xF])
	}
	b = append(b, '"')
	for _, r := range s {
		switch r {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			switch {
			case r > 0xFFFF:
				r -= 0x10000
				b = u4(b, 0xD800+(r>>10))
				b = u4(b, 0xDC00+(r&0x3FF))
			case r < 0x20 || r >= 0x7F:
				b = u4(b, r)
			default:
				b = utf8.AppendRune(b, r)
			}
		}
	}
	return append(b, '"')
}

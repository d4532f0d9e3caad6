package qmptest

import (
	"fmt"
	"slices"
)

// This file checks command arguments the way QEMU's generated marshallers do with a strict
// QObject input visitor (qapi/qobject-input-visitor.c): members in schema order, then any
// member the schema does not know. The error texts are QEMU 7.2's.

type argType int

const (
	argStr argType = iota
	argInt
	argBool
	argEnum     // a string from field.enum
	argEnumList // a list of strings from field.enum
)

// field is one member of a command's 'data' in the QAPI schema.
type field struct {
	name     string
	typ      argType
	optional bool
	enum     []string
}

// args holds a command's checked arguments.
type args struct{ d *qdict }

func (a args) str(name string) (string, bool) {
	v, ok := a.d.get(name)
	if !ok {
		return "", false
	}
	s, _ := v.(string)
	return s, true
}

func (a args) int(name string) (int64, bool) {
	v, ok := a.d.get(name)
	if !ok {
		return 0, false
	}
	n, _ := v.(qnum)
	return n.i, true
}

func (a args) bool(name string) bool {
	v, _ := a.d.get(name)
	b, _ := v.(bool)
	return b
}

// checkArgs validates d against fields.
func checkArgs(d *qdict, fields []field) (args, *qerror) {
	known := map[string]bool{}
	for _, f := range fields {
		known[f.name] = true
		v, ok := d.get(f.name)
		if !ok {
			if !f.optional {
				return args{}, genericErr("Parameter '%s' is missing", f.name)
			}
			continue
		}
		if err := checkValue(f, v); err != nil {
			return args{}, err
		}
	}
	// QEMU reports the first unvisited member in its hash table's order; with the one stray
	// member a client usually sends, that is simply that member.
	for _, k := range d.ordered() {
		if !known[k] {
			return args{}, genericErr("Parameter '%s' is unexpected", k)
		}
	}
	return args{d}, nil
}

func checkValue(f field, v any) *qerror {
	badType := func(name, want string) *qerror {
		return genericErr("Invalid parameter type for '%s', expected: %s", name, want)
	}
	switch f.typ {
	case argStr:
		if _, ok := v.(string); !ok {
			return badType(f.name, "string")
		}
	case argInt:
		if n, ok := v.(qnum); !ok || n.kind != numInt {
			return badType(f.name, "integer")
		}
	case argBool:
		if _, ok := v.(bool); !ok {
			return badType(f.name, "boolean")
		}
	case argEnum:
		s, ok := v.(string)
		if !ok {
			return badType(f.name, "string")
		}
		if !slices.Contains(f.enum, s) {
			return genericErr("Parameter '%s' does not accept value '%s'", f.name, s)
		}
	case argEnumList:
		l, ok := v.(qlist)
		if !ok {
			return badType(f.name, "array")
		}
		for i, e := range l {
			s, ok := e.(string)
			if !ok {
				return badType(fmt.Sprintf("%s[%d]", f.name, i), "string")
			}
			if !slices.Contains(f.enum, s) {
				// QEMU 7.2 really names the member 'null' here.
				return genericErr("Parameter 'null' does not accept value '%s'", s)
			}
		}
	}
	return nil
}

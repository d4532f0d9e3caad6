package xs

import (
	"fmt"
	"strconv"
)

// Access is one letter of a xenstore permission entry.
type Access byte

// Access letters of docs/misc/xenstore.txt.
const (
	AccessNone  Access = 'n'
	AccessRead  Access = 'r'
	AccessWrite Access = 'w'
	AccessBoth  Access = 'b'
)

// Perm is one entry of a node's permission list. The first entry of a list names the owner
// and gives the access of every domain not listed after it.
type Perm struct {
	DomID  uint32
	Access Access
}

func (p Perm) String() string { return string(p.Access) + strconv.FormatUint(uint64(p.DomID), 10) }

// ParsePerm parses "r5" or "n0".
func ParsePerm(s string) (Perm, error) {
	if len(s) < 2 {
		return Perm{}, fmt.Errorf("permission %q: want a letter n, r, w or b and a domid: %w", s, ErrInvalid)
	}
	a := Access(s[0])
	switch a {
	case AccessNone, AccessRead, AccessWrite, AccessBoth:
	default:
		return Perm{}, fmt.Errorf("permission %q: unknown access %q: %w", s, s[0], ErrInvalid)
	}
	id, err := strconv.ParseUint(s[1:], 10, 32)
	if err != nil {
		return Perm{}, fmt.Errorf("permission %q: bad domid: %w", s, ErrInvalid)
	}
	return Perm{DomID: uint32(id), Access: a}, nil
}

// ParsePerms parses a GET_PERMS reply payload.
func ParsePerms(payload []byte) ([]Perm, error) {
	var ps []Perm
	for _, s := range SplitStrings(payload) {
		p, err := ParsePerm(s)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("empty permission list: %w", ErrInvalid)
	}
	return ps, nil
}

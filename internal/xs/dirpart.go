package xs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
)

// A child list longer than PayloadMax cannot come back from DIRECTORY: xenstored answers
// E2BIG. Like libxenstore's xs_directory, the client then reads the list in pieces with
// DIRECTORY_PART, "<path>|<offset>|" -> "<gencnt>|<child>|*", where <offset> is a byte offset
// into the NUL-separated child list and an empty child marks the end of the list. The node's
// generation count says whether the list changed between two pieces; if it did, the pieces do
// not belong together and the read starts again from offset 0.
//
// cxenstored allows DIRECTORY_PART inside a transaction (its wire_funcs entry has no
// XS_FLAG_NOTID, so the request runs against the transaction's view) and libxenstore sends it
// with the caller's transaction id, so a Tx does the same.

const (
	// dirPartRestarts bounds how many times a DIRECTORY_PART read starts again because the
	// child list changed under it. libxenstore retries forever; a bound turns a directory
	// that never stops changing into an ErrAgain the caller can handle.
	dirPartRestarts = 16
	// dirListMax bounds the child list a DIRECTORY_PART read accumulates (about 4000
	// pieces), so that a server that never ends the list cannot exhaust memory.
	dirListMax = 16 << 20
)

// dirPart is one decoded DIRECTORY_PART reply.
type dirPart struct {
	gen   string   // the node's generation count, compared as an opaque string as libxenstore does
	names []string // the children in this piece, none empty
	size  int      // bytes of the child list this piece covers: the offset advance
	last  bool     // the piece ends with the empty string that closes the list
}

// parseDirPart decodes a DIRECTORY_PART reply: "<gencnt>|" then whole NUL-terminated child
// names, then one more NUL if the list ends in this piece. A piece that brings neither a
// child nor the end is an error, since asking for the next one would loop for ever.
func parseDirPart(p []byte) (dirPart, error) {
	i := bytes.IndexByte(p, 0)
	if i < 0 {
		return dirPart{}, errors.New("no NUL after the generation count")
	}
	if i == 0 {
		return dirPart{}, errors.New("empty generation count")
	}
	d := dirPart{gen: string(p[:i])}
	body := p[i+1:]
	if len(body) == 0 {
		return dirPart{}, errors.New("no children and no end of list")
	}
	if body[len(body)-1] != 0 {
		return dirPart{}, fmt.Errorf("child list does not end with a NUL (last bytes %q)", tail(body))
	}
	for len(body) > 0 {
		j := bytes.IndexByte(body, 0) // found: body ends with a NUL
		if j == 0 {
			if len(body) > 1 {
				return dirPart{}, fmt.Errorf("%d bytes after the end of the list", len(body)-1)
			}
			d.last = true
			break
		}
		d.names = append(d.names, string(body[:j]))
		d.size += j + 1
		body = body[j+1:]
	}
	return d, nil
}

// tail is the end of b, for error messages.
func tail(b []byte) []byte {
	if len(b) > 16 {
		return b[len(b)-16:]
	}
	return b
}

// directoryParts lists the children of path with DIRECTORY_PART, after DIRECTORY failed with
// tooBig (an error wrapping ErrTooBig).
func (c *Client) directoryParts(ctx context.Context, tx uint32, path string, tooBig error) ([]string, error) {
	for round := 0; round <= dirPartRestarts; round++ {
		var (
			names []string
			gen   string
			off   int
		)
		for {
			payload := append(JoinStrings(path), strconv.Itoa(off)...)
			payload = append(payload, 0)
			p, err := c.roundTrip(ctx, OpDirectoryPart, tx, path, payload, nil)
			if err != nil {
				if round == 0 && off == 0 && (errors.Is(err, ErrNoSys) || errors.Is(err, ErrInvalid)) {
					return nil, fmt.Errorf("directory %s is too large for this xenstored: its child list is over the %d-byte payload limit and the server answers DIRECTORY_PART with %s: %w",
						path, PayloadMax, ErrnoName(err), tooBig)
				}
				return nil, err
			}
			part, err := parseDirPart(p)
			if err != nil {
				return nil, c.protocolError(OpDirectoryPart, path, "DIRECTORY_PART reply at offset %d: %w", off, err)
			}
			if off == 0 {
				gen = part.gen
			} else if part.gen != gen {
				break // the list changed since the first piece: start again
			}
			names = append(names, part.names...)
			off += part.size
			if part.last {
				return names, nil
			}
			if off > dirListMax {
				return nil, &Error{Op: OpDirectoryPart, Path: path, Err: fmt.Errorf("child list passes %d bytes without an end: %w", dirListMax, ErrTooBig)}
			}
		}
	}
	return nil, &Error{Op: OpDirectoryPart, Path: path, Err: fmt.Errorf("child list changed during each of %d DIRECTORY_PART reads: %w", dirPartRestarts+1, ErrAgain)}
}

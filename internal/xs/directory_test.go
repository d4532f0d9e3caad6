package xs_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xs"
)

// The tests in this file cover directories whose child list does not fit in one reply:
// DIRECTORY fails with E2BIG and the client reads the list with DIRECTORY_PART.

// bigDir creates n children of dir on srv, with names long enough that their list is far
// over the payload limit, and returns the names in creation order.
func bigDir(t *testing.T, write func(path, value string) error, dir string, n int) []string {
	t.Helper()
	names := make([]string, n)
	size := 0
	for i := range names {
		names[i] = fmt.Sprintf("child-%04d-%s", i, strings.Repeat("x", 24))
		size += len(names[i]) + 1
		require.NoError(t, write(dir+"/"+names[i], "v"))
	}
	require.Greater(t, size, 4*xs.PayloadMax, "test setup: the child list must need several parts")
	return names
}

func TestDirectoryLargeListInMemory(t *testing.T) {
	c, srv, _ := newClient(t)
	ctx := testCtx(t)
	want := bigDir(t, srv.Write, "/big", 600)

	before := c.Stats().Requests
	got, err := c.Directory(ctx, "/big")
	require.NoError(t, err)
	assert.Equal(t, want, got, "Directory(/big) must list every child, in creation order")
	// One DIRECTORY that fails, then one DIRECTORY_PART per piece of about 4 KiB.
	assert.Greater(t, c.Stats().Requests-before, uint64(5), "Directory(/big) should have read the list in parts")

	// Inside a transaction the pieces come from the transaction's view: a child it added is
	// there, and nobody else sees it.
	tx, err := c.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, tx.Write(ctx, "/big/added-in-tx", "v"))
	got, err = tx.Directory(ctx, "/big")
	require.NoError(t, err)
	assert.Equal(t, append(want[:len(want):len(want)], "added-in-tx"), got, "Tx.Directory(/big)")
	got, err = c.Directory(ctx, "/big")
	require.NoError(t, err)
	assert.Equal(t, want, got, "Directory(/big) outside the transaction")
	require.NoError(t, tx.Abort(ctx))

	// A small directory still takes one DIRECTORY.
	require.NoError(t, srv.Write("/small/a", "1"))
	before = c.Stats().Requests
	got, err = c.Directory(ctx, "/small")
	require.NoError(t, err)
	assert.Equal(t, []string{"a"}, got)
	assert.Equal(t, uint64(1), c.Stats().Requests-before, "Directory(/small) requests")
}

// TestDirectoryLargeListWithXenstoreUtils: libxenstore's own fallback (xs_directory_part,
// behind xenstore-list) reads the same list from the in-memory xenstored as this client.
func TestDirectoryLargeListWithXenstoreUtils(t *testing.T) {
	list := testenv.RequireCommand(t, "xenstore-list", "xenstore-utils")
	c, srv, path := newClient(t)
	ctx := testCtx(t)
	want := bigDir(t, srv.Write, "/big", 600)

	cmd := exec.CommandContext(ctx, list, "/big")
	cmd.Env = append(os.Environ(), "XENSTORED_PATH="+path)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "xenstore-list /big: %s", out)
	assert.Equal(t, want, strings.Fields(string(out)), "xenstore-list /big")
	got, err := c.Directory(ctx, "/big")
	require.NoError(t, err)
	assert.Equal(t, want, got, "Directory(/big)")
}

// partPayload is the DIRECTORY_PART request payload for path at off.
func partPayload(path string, off int) string { return fmt.Sprintf("%s\x00%d\x00", path, off) }

// TestRawDirectoryPartRestartsWhenTheListChanges: a writer adds child "d" between the first
// and second piece, so the second piece has a new generation count; the client starts again
// from offset 0 and returns the new list, without mixing the two.
func TestRawDirectoryPartRestartsWhenTheListChanges(t *testing.T) {
	for _, inTx := range []bool{false, true} {
		name := "client"
		if inTx {
			name = "transaction"
		}
		t.Run(name, func(t *testing.T) {
			var wantTx uint32
			if inTx {
				wantTx = 5
			}
			var offsets []string
			path, wait := scripted(t, func(p peer) error {
				if inTx {
					m, err := p.expect(xs.OpTransactionStart)
					if err != nil {
						return err
					}
					if err := p.reply(m, []byte("5\x00")); err != nil {
						return err
					}
				}
				m, err := p.refuseDirectory()
				if err != nil {
					return err
				}
				if m.TxID != wantTx {
					return fmt.Errorf("DIRECTORY tx_id %d, want %d", m.TxID, wantTx)
				}
				// The list is "a b c" at generation 7, then "a b c d" at generation 8.
				replies := []struct {
					off   int
					reply string
				}{
					{0, "7\x00a\x00b\x00"},
					{4, "8\x00c\x00d\x00\x00"}, // changed: the client must not use this
					{0, "8\x00a\x00b\x00"},
					{4, "8\x00c\x00d\x00\x00"},
				}
				for _, r := range replies {
					m, err := p.expect(xs.OpDirectoryPart)
					if err != nil {
						return err
					}
					offsets = append(offsets, strings.Split(string(m.Payload), "\x00")[1])
					if got, want := string(m.Payload), partPayload("/big", r.off); got != want {
						return fmt.Errorf("DIRECTORY_PART payload %q, want %q", got, want)
					}
					if m.TxID != wantTx {
						return fmt.Errorf("DIRECTORY_PART tx_id %d, want %d", m.TxID, wantTx)
					}
					if err := p.reply(m, []byte(r.reply)); err != nil {
						return err
					}
				}
				if inTx {
					if err := p.ack(xs.OpTransactionEnd); err != nil {
						return err
					}
				}
				return p.waitHangup()
			})
			c := dial(t, path)
			ctx := testCtx(t)
			var ops xs.Ops = c
			var tx *xs.Tx
			if inTx {
				var err error
				tx, err = c.Begin(ctx)
				require.NoError(t, err)
				ops = tx
			}
			got, err := ops.Directory(ctx, "/big")
			require.NoError(t, err)
			assert.Equal(t, []string{"a", "b", "c", "d"}, got, "Directory(/big)")
			if inTx {
				require.NoError(t, tx.Abort(ctx))
			}
			require.NoError(t, c.Close())
			require.NoError(t, wait())
			assert.Equal(t, []string{"0", "4", "0", "4"}, offsets, "DIRECTORY_PART offsets")
		})
	}
}

// TestRawDirectoryPartGivesUpOnAListThatKeepsChanging: every second piece has a new
// generation count; after a bounded number of restarts the error wraps ErrAgain and the
// connection is still good.
func TestRawDirectoryPartGivesUpOnAListThatKeepsChanging(t *testing.T) {
	rounds := 0
	path, wait := scripted(t, func(p peer) error {
		if _, err := p.refuseDirectory(); err != nil {
			return err
		}
		gen := 100
		for {
			m, err := p.recv()
			if err != nil {
				return err
			}
			switch {
			case m.Op == xs.OpRead:
				if err := p.reply(m, []byte("still here")); err != nil {
					return err
				}
				return p.waitHangup()
			case m.Op != xs.OpDirectoryPart:
				return fmt.Errorf("got %s %q, want DIRECTORY_PART or READ", m.Op, m.Payload)
			case string(m.Payload) == partPayload("/busy", 0):
				rounds++
				gen++
				err = p.reply(m, fmt.Appendf(nil, "%d\x00a\x00", gen))
			case string(m.Payload) == partPayload("/busy", 2):
				gen++ // another child came and went
				err = p.reply(m, fmt.Appendf(nil, "%d\x00b\x00\x00", gen))
			default:
				return fmt.Errorf("DIRECTORY_PART payload %q, want offset 0 or 2", m.Payload)
			}
			if err != nil {
				return err
			}
		}
	})
	c := dial(t, path)
	ctx := testCtx(t)
	got, err := c.Directory(ctx, "/busy")
	require.ErrorIs(t, err, xs.ErrAgain, "Directory(/busy) = %v, %v, want ErrAgain", got, err)
	var xe *xs.Error
	require.ErrorAs(t, err, &xe)
	assert.Equal(t, "/busy", xe.Path)
	v, err := c.Read(ctx, "/after")
	require.NoError(t, err, "the connection must survive ErrAgain")
	assert.Equal(t, "still here", v)
	require.NoError(t, c.Close())
	require.NoError(t, wait())
	assert.Equal(t, xs.DirPartRestarts+1, rounds, "DIRECTORY_PART rounds from offset 0")
}

// TestRawDirectoryPartUnsupported: a xenstored without DIRECTORY_PART (ENOSYS, or EINVAL)
// leaves the E2BIG error, with a message saying why; other errors pass through.
func TestRawDirectoryPartUnsupported(t *testing.T) {
	tests := []struct {
		name      string
		errno     string
		want      error
		tooLarge  bool // want the "too large for this xenstored" message
		notWanted error
	}{
		{name: "ENOSYS", errno: "ENOSYS", want: xs.ErrTooBig, tooLarge: true, notWanted: xs.ErrNoSys},
		{name: "EINVAL", errno: "EINVAL", want: xs.ErrTooBig, tooLarge: true, notWanted: xs.ErrInvalid},
		{name: "node removed meanwhile", errno: "ENOENT", want: xs.ErrNotFound, notWanted: xs.ErrTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, wait := scripted(t, func(p peer) error {
				if _, err := p.refuseDirectory(); err != nil {
					return err
				}
				m, err := p.expect(xs.OpDirectoryPart)
				if err != nil {
					return err
				}
				if err := p.fail(m, tt.errno); err != nil {
					return err
				}
				return p.waitHangup()
			})
			c := dial(t, path)
			got, err := c.Directory(testCtx(t), "/big")
			require.ErrorIs(t, err, tt.want, "Directory(/big) = %v, %v, want %v", got, err, tt.want)
			assert.NotErrorIs(t, err, tt.notWanted)
			assert.NotErrorIs(t, err, xs.ErrClosed)
			var xe *xs.Error
			require.ErrorAs(t, err, &xe)
			assert.Equal(t, "/big", xe.Path)
			if tt.tooLarge {
				assert.Equal(t, xs.OpDirectory, xe.Op, "the error is DIRECTORY's E2BIG")
				assert.Contains(t, err.Error(), "directory /big is too large for this xenstored")
				assert.Contains(t, err.Error(), "DIRECTORY_PART with "+tt.errno)
			} else {
				assert.NotContains(t, err.Error(), "too large")
			}
			require.NoError(t, c.Close())
			require.NoError(t, wait())
		})
	}
}

// TestRawDirectoryPartMalformed: a piece that makes no sense is a protocol error and drops
// the connection, rather than a loop asking for the same offset for ever.
func TestRawDirectoryPartMalformed(t *testing.T) {
	tests := []struct {
		name  string
		reply string
	}{
		{name: "no children and no end", reply: "7\x00"},
		{name: "no generation count", reply: "a"},
		{name: "name cut short", reply: "7\x00ab"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, wait := scripted(t, func(p peer) error {
				if _, err := p.refuseDirectory(); err != nil {
					return err
				}
				m, err := p.expect(xs.OpDirectoryPart)
				if err != nil {
					return err
				}
				if err := p.reply(m, []byte(tt.reply)); err != nil {
					return err
				}
				return p.waitHangup()
			})
			c := dial(t, path)
			ctx := testCtx(t)
			got, err := c.Directory(ctx, "/big")
			require.ErrorIs(t, err, xs.ErrProtocol, "Directory(/big) = %v, %v, want ErrProtocol", got, err)
			require.ErrorIs(t, err, xs.ErrClosed)
			_, err = c.Read(ctx, "/a")
			require.ErrorIs(t, err, xs.ErrClosed, "a call after a protocol error")
			require.NoError(t, wait())
		})
	}
}

// refuseDirectory expects a DIRECTORY and answers E2BIG, as for a child list over the
// payload limit, and returns the request.
func (p peer) refuseDirectory() (xs.Msg, error) {
	m, err := p.expect(xs.OpDirectory)
	if err != nil {
		return m, err
	}
	return m, p.fail(m, "E2BIG")
}

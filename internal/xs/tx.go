package xs

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Tx is a xenstore transaction: its operations see a snapshot and their changes become
// visible, and fire watches, only when Commit succeeds. A Tx may be used from several
// goroutines, but it belongs to one logical task; after Commit or Abort every call fails with
// ErrTxDone. Closing the Client ends the transaction without committing it.
type Tx struct {
	c    *Client
	id   uint32
	done atomic.Bool // set by the first Commit or Abort
}

// Begin starts a transaction (TRANSACTION_START).
func (c *Client) Begin(ctx context.Context) (*Tx, error) {
	// If ctx ends before the reply, the server has a transaction nobody will end: end it.
	late := func(m Msg) {
		if id, err := parseTxID(m.Payload); err == nil {
			c.post(OpTransactionEnd, id, JoinStrings("F"))
		}
	}
	p, err := c.roundTrip(ctx, OpTransactionStart, 0, "", JoinStrings(""), late)
	if err != nil {
		return nil, err
	}
	id, err := parseTxID(p)
	if err != nil {
		return nil, c.protocolError(OpTransactionStart, "", "%w", err)
	}
	return &Tx{c: c, id: id}, nil
}

// parseTxID parses a TRANSACTION_START reply: the id in decimal, NUL-terminated.
func parseTxID(p []byte) (uint32, error) {
	s := strings.TrimRight(string(p), "\x00")
	id, err := strconv.ParseUint(s, 10, 32)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("TRANSACTION_START reply %q is not a transaction id", s)
	}
	return uint32(id), nil
}

// ID is the transaction id the server gave, sent as tx_id with every operation of the Tx.
func (t *Tx) ID() uint32 { return t.id }

// Commit ends the transaction and applies its changes (TRANSACTION_END "T"). If another
// writer changed what the transaction touched, nothing is applied and the error wraps
// ErrAgain: start a new transaction and redo the reads and writes, or use Client.Update.
func (t *Tx) Commit(ctx context.Context) error { return t.end(ctx, "T") }

// Abort ends the transaction and discards its changes (TRANSACTION_END "F").
func (t *Tx) Abort(ctx context.Context) error { return t.end(ctx, "F") }

func (t *Tx) end(ctx context.Context, how string) error {
	if !t.done.CompareAndSwap(false, true) {
		return &Error{Op: OpTransactionEnd, Err: ErrTxDone}
	}
	_, err := t.c.roundTrip(ctx, OpTransactionEnd, t.id, "", JoinStrings(how), nil)
	return err
}

// abandon aborts the transaction without waiting for the reply.
func (t *Tx) abandon() {
	if t.done.CompareAndSwap(false, true) {
		t.c.post(OpTransactionEnd, t.id, JoinStrings("F"))
	}
}

// check refuses operations on an ended transaction.
func (t *Tx) check(op Op, path string) error {
	if t.done.Load() {
		return &Error{Op: op, Path: path, Err: ErrTxDone}
	}
	return nil
}

// Read returns the value of the node at path as the transaction sees it.
func (t *Tx) Read(ctx context.Context, path string) (string, error) {
	if err := t.check(OpRead, path); err != nil {
		return "", err
	}
	return t.c.read(ctx, t.id, path)
}

// Write sets the node at path to value when the transaction commits.
func (t *Tx) Write(ctx context.Context, path, value string) error {
	if err := t.check(OpWrite, path); err != nil {
		return err
	}
	return t.c.write(ctx, t.id, path, value)
}

// Mkdir creates the node at path when the transaction commits.
func (t *Tx) Mkdir(ctx context.Context, path string) error {
	if err := t.check(OpMkdir, path); err != nil {
		return err
	}
	return t.c.simple(ctx, OpMkdir, t.id, path)
}

// Rm removes the node at path and everything below it when the transaction commits.
func (t *Tx) Rm(ctx context.Context, path string) error {
	if err := t.check(OpRm, path); err != nil {
		return err
	}
	return t.c.simple(ctx, OpRm, t.id, path)
}

// Directory returns the names of the children of the node at path, as Client.Directory
// does; DIRECTORY_PART, when needed, is sent inside the transaction.
func (t *Tx) Directory(ctx context.Context, path string) ([]string, error) {
	if err := t.check(OpDirectory, path); err != nil {
		return nil, err
	}
	return t.c.directory(ctx, t.id, path)
}

// GetPerms returns the permissions of the node at path, owner first.
func (t *Tx) GetPerms(ctx context.Context, path string) ([]Perm, error) {
	if err := t.check(OpGetPerms, path); err != nil {
		return nil, err
	}
	return t.c.getPerms(ctx, t.id, path)
}

// SetPerms replaces the permissions of the node at path when the transaction commits.
func (t *Tx) SetPerms(ctx context.Context, path string, perms []Perm) error {
	if err := t.check(OpSetPerms, path); err != nil {
		return err
	}
	return t.c.setPerms(ctx, t.id, path, perms)
}

// Exists reports whether the node at path exists as the transaction sees it.
func (t *Tx) Exists(ctx context.Context, path string) (bool, error) {
	if err := t.check(OpRead, path); err != nil {
		return false, err
	}
	return t.c.exists(ctx, t.id, path)
}

// UpdateAttempts bounds how many transactions Update runs before it gives up.
const UpdateAttempts = 64

// Update runs fn in a new transaction and commits it. When the commit fails with ErrAgain
// (another writer got there first), or fn itself returns an error wrapping ErrAgain, it waits
// a short random time and reruns fn in a fresh transaction, up to UpdateAttempts times and
// while ctx lasts; fn must therefore do all its reads through tx and have no other effects.
// Any other error from fn aborts the transaction and is returned as it is. fn must not call
// Commit or Abort itself.
func (c *Client) Update(ctx context.Context, fn func(tx *Tx) error) error {
	for attempt := 1; ; attempt++ {
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		if err = fn(tx); err != nil {
			tx.abandon()
		} else {
			err = tx.Commit(ctx)
		}
		if err == nil || !errors.Is(err, ErrAgain) {
			return err
		}
		if attempt == UpdateAttempts {
			return fmt.Errorf("update: gave up after %d conflicting transactions: %w", attempt, err)
		}
		c.stats.retries.Add(1)
		if err := backoff(ctx, attempt); err != nil {
			return fmt.Errorf("update: after %d conflicting transactions: %w", attempt, err)
		}
	}
}

// backoff sleeps a random time below a bound that doubles with each attempt, from 100µs up
// to 12.8ms, so that writers contending for a node spread out instead of colliding again.
func backoff(ctx context.Context, attempt int) error {
	limit := 100 * time.Microsecond << min(attempt-1, 7)
	t := time.NewTimer(rand.N(limit) + 1)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

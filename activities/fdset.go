package activities

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/log"

	"github.com/cdswap/cdswap/internal/mediaformat"
	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xs"
)

// Defaults of WaitFdsetInput.
const (
	defaultFdsetInterval = 50 * time.Millisecond
	defaultFdsetTimeout  = 25 * time.Second
	// lostFdsetGrace is how long WaitFdset still waits for a stubdom whose vbd it found
	// already connected, with no QMP client held before (see WaitFdset), before it calls
	// the set lost: a stubdom's add-fd follows its vbd's connection within milliseconds.
	lostFdsetGrace = 2 * time.Second
)

// ReleaseFdset removes the stubdom's fdsets of the drive from QEMU (see ReleaseFdsetInput).
func (a *Activities) ReleaseFdset(ctx context.Context, in ReleaseFdsetInput) (ReleaseFdsetResult, error) {
	d := in.Drive
	log := a.driveLogger(ctx, NameReleaseFdset, d)
	if err := checkDrive(ctx, d, KindStubdom); err != nil {
		return ReleaseFdsetResult{}, err
	}
	if err := a.ensureLock(ctx, in.Key, d.DomID); err != nil {
		return ReleaseFdsetResult{}, err
	}
	ids, err := a.releaseStubSets(ctx, d, log)
	if err != nil {
		return ReleaseFdsetResult{}, err
	}
	if len(ids) == 0 {
		// The normal first change after boot: QEMU opened /dev/xvdX itself.
		log.Info("No fdset of the stubdom for the drive")
	}
	return ReleaseFdsetResult{Meta: NewMeta(ctx), FdsetIDs: ids}, nil
}

// releaseStubSets removes every stub-devid fdset of the drive from its QEMU and returns their
// ids: ReleaseFdset's work, which DetachVBD also does before it tries again (see there).
func (a *Activities) releaseStubSets(ctx context.Context, d Drive, log log.Logger) ([]int64, error) {
	info, err := a.domainInfo(ctx, d.DomID)
	if err != nil {
		return nil, err
	}
	var ids []int64
	err = a.withQMP(ctx, info, func(c *qmp.Client) error {
		sets, err := c.QueryFdsets(ctx)
		if err != nil {
			return fmt.Errorf("query-fdsets: %w", err)
		}
		ids = stubSets(sets, d.DevID)
		for _, id := range ids {
			err := c.RemoveFD(ctx, id, nil)
			switch {
			case err == nil:
				log.Info("Removed the stubdom's fdset", "fdset", id)
			case qmp.IsFdsetNotFound(err):
				log.Info("The stubdom's fdset was already gone", "fdset", id)
			default:
				return fmt.Errorf("remove-fd fdset %d: %w", id, err)
			}
		}
		return nil
	})
	return ids, err
}

// WaitFdset waits for the stubdom to publish a new fdset for the drive (see WaitFdsetInput).
//
// Telling a new set from an old one: QEMU gives a new set the lowest free id, so the id of
// a set released earlier in the swap (and listed in KnownFdsets) comes back for the new one
// as soon as the old set is gone. A known id is therefore ignored only while it is stale:
// while the same set is seen present from a poll at which the stubdom's vbd frontend was not
// yet Connected (the stubdom sees its new disk, and add-fds it, only after it connected).
// A known id seen absent at a poll is released; one that is first seen after the frontend
// connected is a new set under a reused id (the old set's fd held the old disk open, and
// blkfront refuses to close an open disk, so it cannot have outlived DetachVBD). The stale
// ids go to the heartbeat (WaitFdsetProgress.Ignored) so that a retried attempt keeps them.
func (a *Activities) WaitFdset(ctx context.Context, in WaitFdsetInput) (WaitFdsetResult, error) {
	d := in.Drive
	log := a.driveLogger(ctx, NameWaitFdset, d)
	if err := checkDrive(ctx, d, KindStubdom); err != nil {
		return WaitFdsetResult{}, err
	}
	interval, timeout := in.Interval, in.Timeout
	if interval <= 0 {
		interval = defaultFdsetInterval
	}
	if timeout <= 0 {
		timeout = defaultFdsetTimeout
	}
	info, err := a.domainInfo(ctx, d.DomID)
	if err != nil {
		return WaitFdsetResult{}, err
	}
	w := &fdsetWait{
		a: a, d: d, info: info, log: log, opaque: d.DevID.StubOpaque(),
		known:        idSet(in.KnownFdsets),
		prog:         resumedProgress(ctx, log),
		feState:      "unknown",
		attemptStart: time.Now(),
		firstPoll:    true,
	}
	w.stale = idSet(w.prog.Ignored)
	w.sent = w.prog.Ignored
	deadline := time.Now().Add(timeout)
	wake := a.newFdsetWake(ctx, d, interval, in.Wake, log)
	defer wake.stop(ctx)
	for {
		id, found, err := w.poll(ctx)
		if err != nil {
			return WaitFdsetResult{}, err
		}
		if found {
			log.Info("The stubdom published its fdset", "fdset", id, "polls", w.prog.Polls)
			return WaitFdsetResult{Meta: NewMeta(ctx), FdsetID: id, Polls: w.prog.Polls}, nil
		}
		w.prog.Ignored = sortedKeys(w.stale)
		if w.heartbeatDue(ctx) {
			activity.RecordHeartbeat(ctx, w.prog)
		}
		if time.Now().After(deadline) {
			return WaitFdsetResult{}, w.timedOut(ctx, timeout, in.KnownFdsets)
		}
		if err := wake.wait(ctx, w.feState == xen.StateConnected.String()); err != nil {
			return WaitFdsetResult{}, err
		}
	}
}

// heartbeatDue reports whether this poll's progress goes to a heartbeat: at once when the
// stale ids changed, which a retried attempt must not lose, and otherwise once a quarter of
// the heartbeat timeout has passed since the attempt started, as for the other steps
// (keepHeartbeating). A wait that ends within that time, the usual case, costs no heartbeat:
// the SDK sends the first one as soon as it is recorded, a write of the activity's state on
// the server.
func (w *fdsetWait) heartbeatDue(ctx context.Context) bool {
	if !activity.IsActivity(ctx) {
		return false
	}
	if !slices.Equal(w.prog.Ignored, w.sent) {
		w.sent = w.prog.Ignored
		return true
	}
	return time.Since(w.attemptStart) >= heartbeatPeriod(activity.GetInfo(ctx).HeartbeatTimeout)
}

// resumedProgress returns the progress a retried attempt resumes from the last heartbeat,
// or none.
func resumedProgress(ctx context.Context, logger log.Logger) WaitFdsetProgress {
	var prog WaitFdsetProgress
	if !activity.IsActivity(ctx) || !activity.HasHeartbeatDetails(ctx) {
		return prog
	}
	if err := activity.GetHeartbeatDetails(ctx, &prog); err != nil {
		logger.Warn("Cannot read the last heartbeat; starting the count again", "error", err)
		return WaitFdsetProgress{}
	}
	logger.Info("Resuming the wait", "polls", prog.Polls, "ignored", prog.Ignored)
	return prog
}

// fdsetWait is the state of one WaitFdset attempt between its polls.
type fdsetWait struct {
	a      *Activities
	d      Drive
	info   xen.DomainInfo
	log    log.Logger
	opaque string // the stubdom's opaque for the drive's disk

	known map[int64]bool // WaitFdsetInput.KnownFdsets
	stale map[int64]bool // ids ignored until they are seen absent (see WaitFdset)
	prog  WaitFdsetProgress
	sent  []int64 // prog.Ignored as last recorded in a heartbeat (or resumed from one)

	lastErr      error  // why the last poll failed, nil when it worked
	feState      string // the vbd frontend's state at the last poll that read it, for messages
	attemptPolls int    // polls in this attempt, unlike prog.Polls

	// A worker that crashed after AttachVBD left QEMU with no QMP client: if the stubdom
	// add-fd'd its disk then and hung up, QEMU before 9.1 closed the unused fd at once and
	// the set will never appear. That is the case when the first poll finds the vbd
	// connected on a connection dialled during this attempt; after a grace period the wait
	// reports ErrFdsetGone, and the workflow cycles the vbd so the stubdom adds it again.
	attemptStart time.Time
	firstPoll    bool      // no poll of this attempt has worked yet
	lostBy       time.Time // when a suspected lost set is given up; zero: no loss suspected
}

// poll runs one poll: query-fdsets, then the vbd frontend's state. It returns the new set
// once there is one. A failed read is remembered and polled on; the error it returns ends
// the wait (a lost set).
func (w *fdsetWait) poll(ctx context.Context) (id int64, found bool, err error) {
	w.prog.Polls++
	w.attemptPolls++
	sets, err := w.a.pollFdsets(ctx, w.info)
	if isType(err, ErrDeviceModelGone) || isType(err, ErrNoSuchDomain) {
		return 0, false, err // no stubdom can add-fd to a QEMU that is gone
	}
	if err != nil {
		w.lastErr = err
		w.log.Warn("query-fdsets failed; polling on", "error", err)
		return 0, false, nil
	}
	fe, err := w.a.frontendState(ctx, w.d)
	if err != nil {
		w.lastErr = err
		w.log.Warn("Cannot read the stubdom's vbd state; polling on", "error", err)
		return 0, false, nil
	}
	w.feState = fe.String()
	w.lastErr = nil
	fresh, reused := w.classify(setsWithOpaque(sets, w.opaque), fe)
	switch {
	case len(fresh) > 0:
		return fresh[0], true, nil
	case len(reused) > 0:
		w.log.Info("A known fdset id came back after the vbd connected: QEMU reused the id of a released set", "fdset", reused[0])
		return reused[0], true, nil
	}
	return 0, false, w.checkLost(ctx, fe)
}

// classify sorts the ids of the sets present with the drive's opaque (see WaitFdset): a
// stale id seen absent is forgotten, every id present while the frontend is not Connected
// becomes stale, and the others are fresh, or reused when they are known ids.
func (w *fdsetWait) classify(present []int64, fe xen.XenbusState) (fresh, reused []int64) {
	for id := range w.stale {
		if !slices.Contains(present, id) {
			delete(w.stale, id) // gone: its id may come back for a new set
		}
	}
	for _, id := range present {
		switch {
		case fe != xen.StateConnected:
			// The stubdom cannot have added its new disk yet.
			w.stale[id] = true
		case w.stale[id]:
		case w.known[id]:
			reused = append(reused, id)
		default:
			fresh = append(fresh, id)
		}
	}
	return fresh, reused
}

// checkLost suspects a lost set at the first working poll (see fdsetWait.attemptStart) and
// returns ErrFdsetGone once the grace period has passed without one.
func (w *fdsetWait) checkLost(ctx context.Context, fe xen.XenbusState) error {
	if w.firstPoll && fe == xen.StateConnected && w.a.qmp.dialedAt(w.info).After(w.attemptStart) {
		w.lostBy = time.Now().Add(lostFdsetGrace)
		w.log.Warn("The stubdom's vbd connected while no QMP client held QEMU; its fdset may be lost", "polls", w.prog.Polls)
	}
	w.firstPoll = false
	if w.lostBy.IsZero() || !time.Now().After(w.lostBy) {
		return nil
	}
	d := w.d
	return NewError(ctx, ErrFdsetGone, false, nil,
		"stub domain %d of domain %s connected its PV disk for %s while no QMP client held QEMU (a worker restart), and no %s fdset appeared within %s: QEMU before 9.1 drops an add-fd'd fd when its last monitor client leaves; the PV disk is attached again so the stubdom adds it anew",
		d.StubDomID, d.domainName(), d.Vdev, w.opaque, lostFdsetGrace)
}

// timedOut is the ErrFdsetTimeout of an attempt that saw no new set within timeout.
func (w *fdsetWait) timedOut(ctx context.Context, timeout time.Duration, known []int64) error {
	why := ""
	if w.lastErr != nil {
		why = fmt.Sprintf("; the last poll failed: %v", w.lastErr)
	}
	d := w.d
	return NewError(ctx, ErrFdsetTimeout, false, w.lastErr,
		"stub domain %d of domain %s did not add-fd its new PV disk for %s within %s (%d polls of query-fdsets for opaque %s, ignoring the known sets %v; vbd frontend %s)%s: the stubdom lacks the add-fd hook, or mdev does not run as a daemon (`mdev -d`), or its QMP socket is not ready",
		d.StubDomID, d.domainName(), d.Vdev, timeout, w.attemptPolls, w.opaque, known, w.feState, why)
}

// idSet is the set of ids.
func idSet(ids []int64) map[int64]bool {
	m := make(map[int64]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// pollFdsets runs one query-fdsets.
func (a *Activities) pollFdsets(ctx context.Context, info xen.DomainInfo) ([]qmp.FdsetInfo, error) {
	var sets []qmp.FdsetInfo
	err := a.withQMP(ctx, info, func(c *qmp.Client) error {
		var err error
		sets, err = c.QueryFdsets(ctx)
		return err
	})
	return sets, err
}

// frontendState reads the state of the stubdom's vbd frontend for the drive (Unknown when
// the vbd or its state is absent).
func (a *Activities) frontendState(ctx context.Context, d Drive) (xen.XenbusState, error) {
	st := xen.StateUnknown
	err := a.withXS(ctx, func(c *xs.Client) error {
		fe, err := c.Read(ctx, xen.LibxlPath(d.StubDomID, d.DevID)+"/frontend")
		if errors.Is(err, xs.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err := c.Read(ctx, fe+"/state")
		if errors.Is(err, xs.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if s, perr := xen.ParseXenbusState(v); perr == nil {
			st = s
		}
		return nil
	})
	return st, err
}

func sortedKeys(m map[int64]bool) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// isMediumOpaque recognises the opaque libxl and AddFD give a dom0 medium, "<format>:<path>",
// the format named as in libxl's JSON.
func isMediumOpaque(s string) bool {
	f, p, ok := strings.Cut(s, ":")
	if !ok || !filepath.IsAbs(p) {
		return false
	}
	_, known := mediaformat.ByJSON(f)
	return known
}

// AddFD opens a medium and passes it to dom0 QEMU in an fdset (see AddFDInput).
func (a *Activities) AddFD(ctx context.Context, in AddFDInput) (AddFDResult, error) {
	d := in.Drive
	log := a.driveLogger(ctx, NameAddFD, d)
	if err := checkDrive(ctx, d, KindDom0); err != nil {
		return AddFDResult{}, err
	}
	f, ok := normalizeFormat(in.Format)
	if !ok {
		return AddFDResult{}, NewError(ctx, ErrFormatMismatch, false, nil, "format %q is not one cdswap can insert: use %s", in.Format, formatNames)
	}
	if in.Medium == "" || !filepath.IsAbs(in.Medium) {
		return AddFDResult{}, NewError(ctx, ErrBadInput, false, nil, "medium %q is not an absolute path", in.Medium)
	}
	if err := a.ensureLock(ctx, in.Key, d.DomID); err != nil {
		return AddFDResult{}, err
	}
	info, err := a.domainInfo(ctx, d.DomID)
	if err != nil {
		return AddFDResult{}, err
	}
	medium := filepath.Clean(in.Medium)
	opaque := formats[f].json + ":" + medium
	var res AddFDResult
	err = a.withQMP(ctx, info, func(c *qmp.Client) error {
		sets, err := c.QueryFdsets(ctx)
		if err != nil {
			return fmt.Errorf("query-fdsets: %w", err)
		}
		blocks, err := c.QueryBlock(ctx)
		if err != nil {
			return fmt.Errorf("query-block: %w", err)
		}
		reuse := setsWithOpaque(sets, opaque)
		if len(reuse) > 0 {
			res.FdsetID, res.Reused = reuse[len(reuse)-1], true
		}
		a.dropUnusedMediumSets(ctx, c, sets, blocks, res.FdsetID, res.Reused)
		if res.Reused {
			log.Info("Reusing the fdset already holding the medium", "fdset", res.FdsetID, "opaque", opaque)
			return nil
		}
		// The descriptor checked is the one QEMU gets: nothing is opened again by name.
		m, _, err := a.openOldOrNew(ctx, d, info, medium, f)
		if err != nil {
			return err
		}
		defer m.File.Close()
		ai, err := c.AddFD(ctx, m.File, nil, opaque)
		if err != nil {
			return fmt.Errorf("add-fd %s: %w", medium, err)
		}
		res.FdsetID = ai.FdsetID
		log.Info("Passed the medium to QEMU", "fdset", ai.FdsetID, "fd", ai.FD, "opaque", opaque)
		return nil
	})
	if err != nil {
		return AddFDResult{}, err
	}
	if in.RunID != "" {
		if err := noteAddedFdset(a.inspectNotePath(d.DomID, info.UUID, d.DevID), in.RunID, medium, f, res.FdsetID); err != nil {
			return AddFDResult{}, err
		}
	}
	res.Meta = NewMeta(ctx)
	return res, nil
}

// dropUnusedMediumSets removes the fdsets that hold a dom0 medium (an opaque as libxl and
// AddFD write them) that no drive uses: left by a change that failed between add-fd and
// blockdev-change-medium. Under the device-changes lock no other change of the domain is
// between those two steps. Failures are only logged.
func (a *Activities) dropUnusedMediumSets(ctx context.Context, c *qmp.Client, sets []qmp.FdsetInfo, blocks []qmp.BlockInfo, keep int64, keepValid bool) {
	used := map[int64]bool{}
	for _, b := range blocks {
		if id, ok := FdsetOfFilename(insertedFile(&b)); ok {
			used[id] = true
		}
	}
	for _, s := range sets {
		if used[s.FdsetID] || (keepValid && s.FdsetID == keep) || len(s.FDs) == 0 {
			continue
		}
		ours := true
		for _, fd := range s.FDs {
			if !isMediumOpaque(fd.Opaque) {
				ours = false
			}
		}
		if !ours {
			continue
		}
		if err := c.RemoveFD(ctx, s.FdsetID, nil); err != nil && !qmp.IsFdsetNotFound(err) {
			a.logger(ctx, NameAddFD).Warn("Cannot remove an unused medium fdset", "fdset", s.FdsetID, "error", err)
			continue
		}
		a.logger(ctx, NameAddFD).Info("Removed an unused medium fdset left by an earlier change", "fdset", s.FdsetID, "opaque", s.FDs[0].Opaque)
	}
}

// isType reports whether err is an application error of type t.
func isType(err error, t string) bool {
	var appErr interface{ Type() string }
	return errors.As(err, &appErr) && appErr.Type() == t
}

package qmptest

import (
	"fmt"
	"os"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// This file is QEMU's fd sets (monitor/misc.c in 7.2, monitor/fds.c later): the add-fd,
// remove-fd and query-fdsets commands, the dup that /dev/fdset/N opens, and the rules for
// when a member is really closed.

// fdset is a MonFdset.
type fdset struct {
	id  int64
	fds []*setFD // newest first (QLIST_INSERT_HEAD)
	// dups counts the descriptors duplicated from the set and still open (dup_fds): media.
	dups int
}

// setFD is a MonFdsetFd: a descriptor received with add-fd, numbered by the fake's own
// descriptor number as QEMU numbers it by its own.
type setFD struct {
	f         *os.File
	num       int64
	opaque    string
	hasOpaque bool
	removed   bool
}

func (s *Server) fdset(id int64) *fdset {
	for _, set := range s.fdsets {
		if set.id == id {
			return set
		}
	}
	return nil
}

func (s *Server) addFD(c *conn, a args) (any, *qerror) {
	f, fd := c.takeFD()
	if f == nil {
		return nil, genericErr("No file descriptor supplied via SCM_RIGHTS")
	}
	id, hasID := a.int("fdset-id")
	if hasID && id < 0 {
		f.Close()
		return nil, genericErr("Parameter 'fdset-id' expects a non-negative value")
	}
	set := (*fdset)(nil)
	if hasID {
		set = s.fdset(id)
	} else {
		// The first free id, counting up from 0.
		id = 0
		for _, set := range s.fdsets {
			if set.id != id {
				break
			}
			id++
		}
	}
	if set == nil {
		set = &fdset{id: id}
		i, _ := slices.BinarySearchFunc(s.fdsets, id, func(e *fdset, id int64) int {
			return cmpInt64(e.id, id)
		})
		s.fdsets = slices.Insert(s.fdsets, i, set)
	}
	opaque, hasOpaque := a.str("opaque")
	sf := &setFD{f: f, num: int64(fd), opaque: opaque, hasOpaque: hasOpaque}
	set.fds = slices.Insert(set.fds, 0, sf)
	s.log.Debug("qmptest add-fd", "fdset", set.id, "fd", sf.num, "opaque", opaque)
	return obj("fdset-id", set.id, "fd", sf.num), nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *Server) removeFD(_ *conn, a args) (any, *qerror) {
	id, _ := a.int("fdset-id")
	fd, hasFD := a.int("fd")
	notFound := func() *qerror {
		if hasFD {
			return genericErr("File descriptor named 'fdset-id:%d, fd:%d' not found", id, fd)
		}
		return genericErr("File descriptor named 'fdset-id:%d' not found", id)
	}
	set := s.fdset(id)
	if set == nil {
		return nil, notFound()
	}
	if hasFD {
		i := slices.IndexFunc(set.fds, func(f *setFD) bool { return f.num == fd })
		if i < 0 {
			return nil, notFound()
		}
		set.fds[i].removed = true
	} else {
		for _, f := range set.fds {
			f.removed = true
		}
	}
	s.cleanupFdset(set)
	return nil, nil
}

// cleanupFdset is monitor_fdset_cleanup. Before QEMU 9.1 a member is closed only while the
// VM runs, when it was removed or when no monitor is connected and nothing was duplicated
// from its set; from 9.1 a removed member goes at once and a disconnect closes nothing. A
// set stays listed, with no members, while a medium still uses a dup of it.
func (s *Server) cleanupFdset(set *fdset) {
	set.fds = slices.DeleteFunc(set.fds, func(f *setFD) bool {
		gone := f.removed && (s.newFdsetRules || s.running)
		if !s.newFdsetRules && s.running && set.dups == 0 && s.refcount == 0 {
			gone = true
		}
		if gone {
			f.f.Close()
		}
		return gone
	})
	if len(set.fds) == 0 && set.dups == 0 {
		s.fdsets = slices.DeleteFunc(s.fdsets, func(e *fdset) bool { return e == set })
	}
}

func (s *Server) queryFdsets(*conn, args) (any, *qerror) {
	out := qlist{}
	for i := len(s.fdsets) - 1; i >= 0; i-- {
		set := s.fdsets[i]
		fds := qlist{}
		for j := len(set.fds) - 1; j >= 0; j-- {
			f := set.fds[j]
			info := obj("fd", f.num)
			if f.hasOpaque {
				info.put("opaque", f.opaque)
			}
			fds = append(fds, info)
		}
		out = append(out, obj("fdset-id", set.id, "fds", fds))
	}
	return out, nil
}

// dupFromFdset is monitor_fdset_dup_fd_add: the newest member whose access mode matches
// flags is duplicated; no set is ENOENT, no matching member EACCES.
func (s *Server) dupFromFdset(id int64, flags int) (*os.File, int, syscall.Errno) {
	set := s.fdset(id)
	if set == nil {
		return nil, -1, syscall.ENOENT
	}
	for _, f := range set.fds {
		fl, err := unix.FcntlInt(uintptr(f.num), unix.F_GETFL, 0)
		if err != nil {
			return nil, -1, errnoOf(err)
		}
		if fl&unix.O_ACCMODE != flags&unix.O_ACCMODE {
			continue
		}
		nfd, err := unix.FcntlInt(uintptr(f.num), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, -1, errnoOf(err)
		}
		set.dups++
		return os.NewFile(uintptr(nfd), fmt.Sprintf("/dev/fdset/%d", id)), nfd, 0
	}
	return nil, -1, syscall.EACCES
}

// releaseDup is monitor_fdset_dup_fd_remove, after the medium closed its dup.
func (s *Server) releaseDup(id int64) {
	set := s.fdset(id)
	if set == nil || set.dups == 0 {
		return
	}
	set.dups--
	if set.dups == 0 {
		s.cleanupFdset(set)
	}
}

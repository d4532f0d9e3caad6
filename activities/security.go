package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cdswap/cdswap/internal/mediaformat"
)

// This file is the worker's rule for media: dom0 must never hand a guest a file it was not
// meant to see. A medium is served only if it is a regular file beneath one of the ISO roots,
// reached from the root's folder held open since the worker started, with every symlink on
// the way staying beneath the root (openat2 with RESOLVE_BENEATH, so that no rename of a
// folder in the path can lead the open out of the root between a check and the open), and its
// content is in the format asked for; a raw medium must also look like a CD image. The
// checks run on the opened descriptor, which is what QEMU gets (AddFD), and its device and
// inode are what a stub domain's loop device must hold (AttachVBD).

// root is one ISO root: as configured, with its symlinks resolved, and its folder held open.
type root struct {
	asGiven, resolved string
	// dir is an O_PATH descriptor of the folder: media are opened beneath it.
	dir *os.File
	// allowRaw lets a raw medium of this root be inserted even if it does not look like a CD
	// image (Config.RawImageRoots).
	allowRaw bool
}

// resolveRoots resolves every configured root; each must exist and be a folder, which it
// opens and holds.
func resolveRoots(dirs []string) ([]root, error) {
	var out []root
	for _, d := range dirs {
		if d == "" || !filepath.IsAbs(d) {
			closeRoots(out)
			return nil, fmt.Errorf("ISO root %q is not an absolute path: give --iso-root as a full path", d)
		}
		r, err := openRoot(d)
		if err != nil {
			closeRoots(out)
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func openRoot(d string) (root, error) {
	r, err := filepath.EvalSymlinks(filepath.Clean(d))
	if err != nil {
		return root{}, fmt.Errorf("ISO root %s: %w: create it, or fix --iso-root", d, err)
	}
	fi, err := os.Stat(r)
	if err != nil {
		return root{}, fmt.Errorf("ISO root %s: %w", d, err)
	}
	if !fi.IsDir() {
		return root{}, fmt.Errorf("ISO root %s is not a folder (it is %s): give a folder to --iso-root", d, fileKind(fi.Mode()))
	}
	fd, err := unix.Open(r, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return root{}, fmt.Errorf("ISO root %s: open %s: %w", d, r, err)
	}
	return root{asGiven: d, resolved: r, dir: os.NewFile(uintptr(fd), r)}, nil
}

func closeRoots(roots []root) {
	for _, r := range roots {
		if r.dir != nil {
			r.dir.Close()
		}
	}
}

// systemDirs are folders no ISO root may be, lie in, or hold: what they hold is the host's
// (its configuration, secrets, devices, kernel state, libxl's records), never a guest's.
var systemDirs = []string{"/proc", "/sys", "/dev", "/etc", "/root", "/boot", "/run/xen", "/var/run/xen", "/var/lib/xen"}

// checkBroadRoots refuses a root that is, lies in or holds a system folder, or one of extra
// (the worker's own libxl folders); "/" holds them all.
func checkBroadRoots(roots []root, extra ...string) error {
	for _, r := range roots {
		for _, s := range append(append([]string(nil), systemDirs...), extra...) {
			if s == "" {
				continue
			}
			rs := filepath.Clean(s)
			if e, err := filepath.EvalSymlinks(rs); err == nil {
				rs = e
			}
			if r.resolved == rs || within(rs, r.resolved) || within(r.resolved, rs) {
				return fmt.Errorf("ISO root %s is too broad: it is, lies in or holds %s, and a guest could be handed the host's files from there: give a folder that holds only images (such as /srv/isos), or start cdswap-worker with --allow-broad-root if you really mean it",
					r.asGiven, s)
			}
		}
	}
	return nil
}

// allowRawImages marks the roots named in dirs (as configured, or resolved) as allowed to
// serve raw images that are not CD images; a name that is no root is an error.
func allowRawImages(roots []root, dirs []string) error {
	for _, d := range dirs {
		found := false
		for i := range roots {
			r := &roots[i]
			if filepath.Clean(d) == filepath.Clean(r.asGiven) || filepath.Clean(d) == r.resolved {
				r.allowRaw, found = true, true
			}
		}
		if !found {
			var names []string
			for _, r := range roots {
				names = append(names, r.asGiven)
			}
			return fmt.Errorf("--allow-raw-images %s is not one of the ISO roots [%s]: name a folder also given to --iso-root", d, strings.Join(names, " "))
		}
	}
	return nil
}

// rootNames lists the roots as configured, for messages.
func (a *Activities) rootNames() string {
	var s []string
	for _, r := range a.roots {
		s = append(s, r.asGiven)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// rootOf returns the root p (clean, absolute, resolved or not) lies strictly in, and p
// relative to it.
func (a *Activities) rootOf(p string) (*root, string, bool) {
	for i := range a.roots {
		r := &a.roots[i]
		for _, dir := range []string{filepath.Clean(r.asGiven), r.resolved} {
			if within(dir, p) {
				return r, strings.TrimPrefix(strings.TrimPrefix(p, dir), "/"), true
			}
		}
	}
	return nil, "", false
}

// within reports whether p is strictly below dir; both clean and absolute.
func within(dir, p string) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(p, dir+"/")
}

// fileKind names a file mode for messages.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a folder"
	case m&os.ModeSymlink != 0:
		return "a symlink"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	}
	return "not a regular file"
}

// statKind names the file type of a stat's mode for messages.
func statKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a folder"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return "not a regular file"
}

// The activities' names for mediaformat's table of the formats cdswap can insert, as
// inspect.go and record.go read it: by QEMU format, libxl's "params" prefix and JSON name.
var formats = func() map[string]struct{ params, json string } {
	m := map[string]struct{ params, json string }{}
	for _, n := range mediaformat.All() {
		m[n.QEMU] = struct{ params, json string }{n.Params, n.JSON}
	}
	return m
}()

const (
	formatNames     = mediaformat.Insertable
	jsonEmptyFormat = mediaformat.JSONEmpty
)

// normalizeFormat is mediaformat.Normalize.
func normalizeFormat(f string) (string, bool) { return mediaformat.Normalize(f) }

// formatOfParams returns the QEMU format of a qdisk "params" prefix ("aio" is raw), or "".
func formatOfParams(prefix string) string {
	n, _ := mediaformat.ByParams(prefix)
	return n.QEMU
}

// checkFormat refuses a format a drive of this kind cannot take; it returns the normalized
// format.
func (a *Activities) checkFormat(ctx context.Context, format string, kind Kind) (string, error) {
	f, ok := normalizeFormat(format)
	if !ok {
		return "", NewError(ctx, ErrFormatMismatch, false, nil,
			"format %q is not one cdswap can insert: use %s", format, formatNames)
	}
	if kind == KindStubdom && f != FormatRaw {
		return "", NewError(ctx, ErrFormatMismatch, false, nil,
			"format %q: the guest's QEMU runs in a stub domain, which takes raw images only (libxl passes the image as a phy disk): convert it with `qemu-img convert -O raw`, or ask for format raw", format)
	}
	return f, nil
}

// String names the identity for messages.
func (id FileIdentity) String() string {
	return fmt.Sprintf("device %d:%d inode %d", unix.Major(id.Dev), unix.Minor(id.Dev), id.Ino)
}

// medium is a medium that passed the checks, opened read-only.
type medium struct {
	// Path is where the opened file is, as the kernel names it: the file that was checked.
	Path string
	// Format is what its content says (mediaformat.Detect), equal to the format asked for.
	Format string
	// File is open O_RDONLY on Path; the caller closes it.
	File *os.File
	// ID is the opened file's identity.
	ID FileIdentity
}

// openMedium checks the medium at p and opens it read-only, refusing with a non-retryable
// error (ErrBadInput, ErrMediumOutsideRoots, ErrMediumNotFound, ErrMediumNotRegular,
// ErrFormatMismatch) anything but a regular file beneath an ISO root holding an image of
// format (already normalized), which for raw must look like a CD image unless its root
// allows other raw images. trusted is for a file libxl's records say the guest already had
// (see trustedOld): it may lie outside the roots, and be a raw image of any kind; every
// other check still applies.
func (a *Activities) openMedium(ctx context.Context, p, format string, trusted bool) (*medium, error) {
	if p == "" || !filepath.IsAbs(p) {
		return nil, NewError(ctx, ErrBadInput, false, nil,
			"medium %q is not an absolute path: give the full path of an image under one of the ISO roots %s", p, a.rootNames())
	}
	clean := filepath.Clean(p)
	r, rel, ok := a.rootOf(clean)
	if !ok {
		// Not named under a root: it may still reach one through symlinks. Resolving them
		// only picks the root; the open below stays beneath it whatever changes meanwhile.
		if resolved, err := filepath.EvalSymlinks(clean); err == nil {
			r, rel, ok = a.rootOf(resolved)
		}
	}
	if !ok {
		if trusted {
			return a.openByPath(ctx, p, format)
		}
		// Whether it exists, and where it leads, is none of the caller's business.
		return nil, a.outside(ctx, p)
	}
	fd, err := openBeneath(r.dir, rel)
	if errors.Is(err, unix.EXDEV) {
		// openat2 refuses every absolute symlink, even one that leads back beneath the root
		// (an ISO library's "latest.iso -> /srv/isos/debian-12.iso"). Resolve the path and,
		// if it ends beneath a root, open that: again beneath the root, so a link swapped
		// meanwhile still cannot lead out.
		if resolved, rerr := filepath.EvalSymlinks(clean); rerr == nil {
			if r2, rel2, ok2 := a.rootOf(resolved); ok2 {
				r, rel = r2, rel2
				fd, err = openBeneath(r.dir, rel)
			}
		}
	}
	if err != nil {
		switch {
		case errors.Is(err, unix.EXDEV) && trusted:
			return a.openByPath(ctx, p, format)
		case errors.Is(err, unix.EXDEV):
			return nil, a.outside(ctx, p)
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
			return nil, NewError(ctx, ErrMediumNotFound, false, err,
				"medium %s does not exist: check the path, or copy the image under one of the ISO roots %s", p, a.rootNames())
		case errors.Is(err, unix.ELOOP):
			return nil, NewError(ctx, ErrMediumNotFound, false, err, "medium %s cannot be resolved (too many symlinks, or a symlink loop): fix the path or its symlinks", p)
		case errors.Is(err, unix.EACCES):
			return nil, NewError(ctx, ErrMediumNotFound, false, err, "medium %s cannot be read by cdswap-worker (permission denied): make it readable by the worker's user", p)
		}
		return nil, fmt.Errorf("open medium %s beneath ISO root %s: %w", p, r.asGiven, err)
	}
	m, err := a.checkOpened(ctx, fd, p, format, trusted || r.allowRaw)
	if err != nil {
		return nil, err
	}
	if !trusted && !within(r.resolved, m.Path) {
		// openat2 guarantees it; a bind mount moved meanwhile is the only way here.
		m.File.Close()
		return nil, a.outside(ctx, p)
	}
	return m, nil
}

// openBeneath opens rel beneath the folder dir with O_PATH, following symlinks only while
// they stay beneath it and never through /proc's magic links. O_PATH opens nothing that an
// open could set off (a FIFO's writer, a device's driver).
func openBeneath(dir *os.File, rel string) (int, error) {
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	}
	for try := 0; ; try++ {
		fd, err := unix.Openat2(int(dir.Fd()), rel, how)
		// EAGAIN: a rename raced the lookup ("..", openat2(2)); another try is safe.
		if errors.Is(err, unix.EAGAIN) && try < 16 {
			continue
		}
		if errors.Is(err, unix.ENOSYS) {
			return -1, fmt.Errorf("this kernel has no openat2 (Linux 5.6 or newer is needed to open media beneath the ISO roots safely): %w", err)
		}
		return fd, err
	}
}

// checkOpened checks the O_PATH descriptor fd of medium p (which it takes over): a regular
// file, reopened read-only through the descriptor itself (the same inode, whatever its
// name now leads to), in format; a raw image must look like a CD image unless anyRaw.
func (a *Activities) checkOpened(ctx context.Context, fd int, p, format string, anyRaw bool) (*medium, error) {
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat medium %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, NewError(ctx, ErrMediumNotRegular, false, nil,
			"medium %s is %s, not a regular file: give the path of an image file", p, statKind(st.Mode))
	}
	self := fmt.Sprintf("/proc/self/fd/%d", fd)
	rfd, err := unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, unix.EACCES) {
			return nil, NewError(ctx, ErrMediumNotFound, false, err, "medium %s cannot be read by cdswap-worker (permission denied): make it readable by the worker's user", p)
		}
		return nil, fmt.Errorf("open medium %s for reading: %w", p, err)
	}
	f := os.NewFile(uintptr(rfd), p)
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	var rst unix.Stat_t
	if err := unix.Fstat(rfd, &rst); err != nil {
		return nil, fmt.Errorf("fstat medium %s: %w", p, err)
	}
	if rst.Dev != st.Dev || rst.Ino != st.Ino {
		return nil, fmt.Errorf("medium %s: reopening it gave another file: %w", p, unix.ESTALE)
	}
	path, err := os.Readlink(self)
	if err != nil {
		return nil, fmt.Errorf("medium %s: name the opened file: %w", p, err)
	}
	m := &medium{Path: path, File: f, ID: FileIdentity{Dev: uint64(rst.Dev), Ino: rst.Ino}}
	if err := a.checkContent(ctx, m, p, format, anyRaw); err != nil {
		return nil, err
	}
	ok = true
	return m, nil
}

// checkContent checks what m holds: format, and for raw a CD image unless anyRaw.
func (a *Activities) checkContent(ctx context.Context, m *medium, p, format string, anyRaw bool) error {
	info, err := mediaformat.Detect(m.File)
	if err != nil {
		return fmt.Errorf("medium %s: %w", p, err)
	}
	m.Format = info.Format
	if got := info.Format; got != format {
		return NewError(ctx, ErrFormatMismatch, false, nil,
			"medium %s holds a %s image, but format %s was asked: ask for format %s (or convert the image with `qemu-img convert -O %s`)",
			p, got, format, got, format)
	}
	if got := info.Format; got == mediaformat.Raw && !info.ISO9660 && !info.UDF && !anyRaw {
		return NewError(ctx, ErrFormatMismatch, false, nil,
			"medium %s is not a CD image: it is raw data with neither an ISO 9660 nor a UDF volume descriptor at sector %d, which every CD and DVD image has; give the path of an ISO image (a hard link or a mistyped path can name any file), or, to serve other raw images from its ISO root, start cdswap-worker with --allow-raw-images and that root",
			p, mediaformat.DescriptorSector)
	}
	return nil
}

// openByPath opens a trusted medium by its path, wherever it lies (see openMedium): resolve
// (readlink/lstat only), lstat the target, open it with O_NOFOLLOW and O_NONBLOCK (a FIFO
// swapped in cannot block the open), and compare the opened file's identity with what was
// checked.
func (a *Activities) openByPath(ctx context.Context, p, format string) (*medium, error) {
	resolved, err := filepath.EvalSymlinks(filepath.Clean(p))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, NewError(ctx, ErrMediumNotFound, false, err,
				"medium %s does not exist: check the path, or copy the image under one of the ISO roots %s", p, a.rootNames())
		}
		return nil, NewError(ctx, ErrMediumNotFound, false, err, "medium %s cannot be resolved (%v): fix the path or its symlinks", p, err)
	}
	fi, err := os.Lstat(resolved)
	if err != nil {
		return nil, NewError(ctx, ErrMediumNotFound, false, err, "medium %s vanished while it was checked: check the path and submit the change again", p)
	}
	if !fi.Mode().IsRegular() {
		return nil, NewError(ctx, ErrMediumNotRegular, false, nil,
			"medium %s is %s, not a regular file: give the path of an image file", p, fileKind(fi.Mode()))
	}
	fd, err := unix.Open(resolved, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, NewError(ctx, ErrMediumNotFound, false, err, "medium %s vanished while it was checked: check the path and submit the change again", p)
	}
	want, _ := fi.Sys().(*syscall.Stat_t)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || want == nil || uint64(st.Dev) != uint64(want.Dev) || st.Ino != want.Ino {
		unix.Close(fd)
		return nil, NewError(ctx, ErrMediumNotRegular, false, err,
			"medium %s was replaced while it was checked: make sure nothing replaces it, and submit the change again", p)
	}
	return a.checkOpened(ctx, fd, p, format, true)
}

// outside refuses medium p, named as asked: where it leads is not said (it could tell the
// caller about files and processes it has no business knowing).
func (a *Activities) outside(ctx context.Context, p string) error {
	return NewError(ctx, ErrMediumOutsideRoots, false, nil,
		"medium %s is outside the ISO roots %s: copy it under a root, or start cdswap-worker with --iso-root for its folder",
		p, a.rootNames())
}

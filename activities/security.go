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
// meant to see. A medium is served only if, with every symlink resolved, it is a regular
// file inside one of the ISO roots, and its content is in the format asked for. The order
// matters: resolve (readlink/lstat only), check the roots, lstat the target, and only then
// open it, with O_NOFOLLOW and O_NONBLOCK (a FIFO swapped in cannot block the open), and
// compare the opened file's device and inode with what was checked.

// root is one ISO root: as configured, and with its symlinks resolved.
type root struct {
	asGiven, resolved string
}

// resolveRoots resolves every configured root; each must exist and be a folder.
func resolveRoots(dirs []string) ([]root, error) {
	var out []root
	for _, d := range dirs {
		if d == "" || !filepath.IsAbs(d) {
			return nil, fmt.Errorf("ISO root %q is not an absolute path: give --iso-root as a full path", d)
		}
		r, err := filepath.EvalSymlinks(filepath.Clean(d))
		if err != nil {
			return nil, fmt.Errorf("ISO root %s: %w: create it, or fix --iso-root", d, err)
		}
		fi, err := os.Stat(r)
		if err != nil {
			return nil, fmt.Errorf("ISO root %s: %w", d, err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("ISO root %s is not a folder (it is %s): give a folder to --iso-root", d, fileKind(fi.Mode()))
		}
		out = append(out, root{asGiven: d, resolved: r})
	}
	return out, nil
}

// rootNames lists the roots as configured, for messages.
func (a *Activities) rootNames() string {
	var s []string
	for _, r := range a.roots {
		s = append(s, r.asGiven)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// insideRoots reports whether p (clean, absolute, resolved) lies strictly inside a root.
func (a *Activities) insideRoots(p string) bool {
	for _, r := range a.roots {
		if within(r.resolved, p) {
			return true
		}
	}
	return false
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

// medium is a medium that passed the checks, opened read-only.
type medium struct {
	// Path is the medium with every symlink resolved: the file that was checked.
	Path string
	// Format is what its content says (mediaformat.Detect), equal to the format asked for.
	Format string
	// File is open O_RDONLY on Path; the caller closes it.
	File *os.File
}

// openMedium checks the medium at p and opens it read-only, refusing with a non-retryable
// error (ErrBadInput, ErrMediumOutsideRoots, ErrMediumNotFound, ErrMediumNotRegular,
// ErrFormatMismatch) anything but a regular file, inside an ISO root once resolved, holding
// an image of format (already normalized). trusted allows a file outside the roots: one
// libxl's records say the guest already had (see trustedOld); every other check still
// applies.
func (a *Activities) openMedium(ctx context.Context, p, format string, trusted bool) (*medium, error) {
	if p == "" || !filepath.IsAbs(p) {
		return nil, NewError(ctx, ErrBadInput, false, nil,
			"medium %q is not an absolute path: give the full path of an image under one of the ISO roots %s", p, a.rootNames())
	}
	clean := filepath.Clean(p)
	resolved, err := filepath.EvalSymlinks(clean)
	if err != nil {
		// A missing file outside the roots is "outside": whether it exists is none of the
		// caller's business.
		if !trusted && !a.lexicallyInside(clean) {
			return nil, a.outside(ctx, p, "")
		}
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, NewError(ctx, ErrMediumNotFound, false, err,
				"medium %s does not exist: check the path, or copy the image under one of the ISO roots %s", p, a.rootNames())
		}
		return nil, NewError(ctx, ErrMediumNotFound, false, err, "medium %s cannot be resolved (%v): fix the path or its symlinks", p, err)
	}
	if !trusted && !a.insideRoots(resolved) {
		return nil, a.outside(ctx, p, resolved)
	}
	fi, err := os.Lstat(resolved)
	if err != nil {
		return nil, NewError(ctx, ErrMediumNotFound, false, err, "medium %s vanished while it was checked: check the path and submit the change again", p)
	}
	if !fi.Mode().IsRegular() {
		return nil, NewError(ctx, ErrMediumNotRegular, false, nil,
			"medium %s is %s, not a regular file: give the path of an image file", describe(p, resolved), fileKind(fi.Mode()))
	}
	fd, err := unix.Open(resolved, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, NewError(ctx, ErrMediumNotFound, false, err, "medium %s vanished while it was checked: check the path and submit the change again", p)
		}
		if errors.Is(err, unix.ELOOP) {
			return nil, NewError(ctx, ErrMediumNotRegular, false, err,
				"medium %s was replaced by a symlink while it was checked: make sure nothing replaces it, and submit the change again", describe(p, resolved))
		}
		return nil, fmt.Errorf("open medium %s: %w", resolved, err)
	}
	f := os.NewFile(uintptr(fd), resolved)
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat medium %s: %w", resolved, err)
	}
	want, _ := fi.Sys().(*syscall.Stat_t)
	if st.Mode&unix.S_IFMT != unix.S_IFREG || want == nil || uint64(st.Dev) != uint64(want.Dev) || uint64(st.Ino) != uint64(want.Ino) {
		return nil, NewError(ctx, ErrMediumNotRegular, false, nil,
			"medium %s was replaced while it was checked: make sure nothing replaces it, and submit the change again", describe(p, resolved))
	}
	// O_NONBLOCK only guarded the open; QEMU gets a plain read-only descriptor.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, unix.O_RDONLY); err != nil {
		return nil, fmt.Errorf("medium %s: clear O_NONBLOCK: %w", resolved, err)
	}
	info, err := mediaformat.Detect(f)
	if err != nil {
		return nil, fmt.Errorf("medium %s: %w", resolved, err)
	}
	if got := info.Format; got != format {
		return nil, NewError(ctx, ErrFormatMismatch, false, nil,
			"medium %s holds a %s image, but format %s was asked: ask for format %s (or convert the image with `qemu-img convert -O %s`)",
			describe(p, resolved), got, format, got, format)
	}
	ok = true
	return &medium{Path: resolved, Format: info.Format, File: f}, nil
}

// lexicallyInside reports whether p, not resolved, names something under a root as given
// or as resolved.
func (a *Activities) lexicallyInside(p string) bool {
	for _, r := range a.roots {
		if within(filepath.Clean(r.asGiven), p) || within(r.resolved, p) {
			return true
		}
	}
	return false
}

func (a *Activities) outside(ctx context.Context, p, resolved string) error {
	return NewError(ctx, ErrMediumOutsideRoots, false, nil,
		"medium %s is outside the ISO roots %s: copy it under a root, or start cdswap-worker with --iso-root for its folder",
		describe(p, resolved), a.rootNames())
}

// describe names a medium and, when symlinks changed it, what it resolves to.
func describe(p, resolved string) string {
	if resolved == "" || resolved == filepath.Clean(p) {
		return p
	}
	return fmt.Sprintf("%s (resolves to %s)", p, resolved)
}

package activities

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim/isofs"
)

// rootsFixture is an ISO root reached through a symlink (base/isos -> base/isos-real), with
// every kind of thing a medium path can be, and a folder outside the roots.
type rootsFixture struct {
	base, root, real, outside string
	a                         *Activities
}

func newRootsFixture(t *testing.T) *rootsFixture {
	t.Helper()
	base := testenv.SocketDir(t)
	f := &rootsFixture{base: base, root: filepath.Join(base, "isos"), real: filepath.Join(base, "isos-real"), outside: filepath.Join(base, "outside")}
	require.NoError(t, os.Mkdir(f.real, 0o755))
	require.NoError(t, os.Symlink("isos-real", f.root))
	require.NoError(t, os.Mkdir(f.outside, 0o755))
	require.NoError(t, isofs.Write(filepath.Join(f.real, "good.iso"), "GOOD", map[string][]byte{"A.TXT": []byte("a\n")}))
	require.NoError(t, isofs.Write(filepath.Join(f.outside, "secret.iso"), "SECRET", map[string][]byte{"S.TXT": []byte("s\n")}))
	qcow := make([]byte, 512)
	copy(qcow, "QFI\xfb\x00\x00\x00\x03")
	require.NoError(t, os.WriteFile(filepath.Join(f.real, "disk.qcow2"), qcow, 0o644))
	require.NoError(t, os.Mkdir(filepath.Join(f.real, "sub"), 0o755))
	require.NoError(t, syscall.Mkfifo(filepath.Join(f.real, "fifo"), 0o644))
	require.NoError(t, syscall.Mkfifo(filepath.Join(f.outside, "fifo"), 0o644))
	require.NoError(t, os.Symlink("good.iso", filepath.Join(f.real, "link-in")))
	require.NoError(t, os.Symlink("sub/../good.iso", filepath.Join(f.real, "link-in-dots")))
	require.NoError(t, os.Symlink("../outside/secret.iso", filepath.Join(f.real, "link-out")))
	require.NoError(t, os.Symlink(filepath.Join(f.outside, "fifo"), filepath.Join(f.real, "link-out-fifo")))
	require.NoError(t, os.Symlink("/nonexistent/x.iso", filepath.Join(f.real, "link-missing")))
	require.NoError(t, os.Symlink("link-loop", filepath.Join(f.real, "link-loop")))
	// Hard links inside the root: to a file that is no CD image, and to a real ISO outside.
	require.NoError(t, os.WriteFile(filepath.Join(f.outside, "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644))
	require.NoError(t, os.Link(filepath.Join(f.outside, "passwd"), filepath.Join(f.real, "passwd.iso")))
	require.NoError(t, os.Link(filepath.Join(f.outside, "secret.iso"), filepath.Join(f.real, "linked.iso")))
	require.NoError(t, os.WriteFile(filepath.Join(f.real, "zeros.img"), make([]byte, 64<<10), 0o644))
	// A folder of the root reached through a symlink that stays inside, and one that leads out.
	require.NoError(t, os.Symlink("sub", filepath.Join(f.real, "sub-link")))
	require.NoError(t, isofs.Write(filepath.Join(f.real, "sub", "deep.iso"), "DEEP", map[string][]byte{"D.TXT": []byte("d\n")}))
	require.NoError(t, os.Symlink("../outside", filepath.Join(f.real, "dir-out")))
	require.NoError(t, os.Symlink(filepath.Join(f.real, "good.iso"), filepath.Join(f.real, "link-abs")))
	require.NoError(t, os.Symlink(filepath.Join(f.outside, "secret.iso"), filepath.Join(f.real, "link-abs-out")))
	roots, err := resolveRoots([]string{f.root})
	require.NoError(t, err)
	f.a = &Activities{roots: roots}
	return f
}

func TestOpenMedium(t *testing.T) {
	f := newRootsFixture(t)
	good := filepath.Join(f.real, "good.iso")
	tests := []struct {
		name    string
		path    string
		format  string
		trusted bool
		want    string // the resolved path on success
		errType string
		msgs    []string
		hidden  []string // what the message must not say
	}{
		{name: "through the root symlink", path: filepath.Join(f.root, "good.iso"), format: "raw", want: good},
		{name: "resolved root", path: good, format: "raw", want: good},
		{name: "symlink inside the root", path: filepath.Join(f.root, "link-in"), format: "raw", want: good},
		{name: "symlink with dots inside", path: filepath.Join(f.root, "link-in-dots"), format: "raw", want: good},
		{name: "dots that stay inside", path: filepath.Join(f.root, "sub", "..", "good.iso"), format: "raw", want: good},
		{name: "qcow2 asked as qcow2", path: filepath.Join(f.root, "disk.qcow2"), format: "qcow2", want: filepath.Join(f.real, "disk.qcow2")},
		{name: "outside but trusted", path: filepath.Join(f.outside, "secret.iso"), format: "raw", trusted: true, want: filepath.Join(f.outside, "secret.iso")},

		{name: "dot-dot escape", path: f.root + "/../outside/secret.iso", format: "raw", errType: ErrMediumOutsideRoots,
			msgs: []string{"outside/secret.iso is outside the ISO roots [" + f.root + "]", "--iso-root"}},
		{name: "deep dot-dot escape", path: f.root + "/sub/../../outside/secret.iso", format: "raw", errType: ErrMediumOutsideRoots},
		{name: "symlink out of the root", path: filepath.Join(f.root, "link-out"), format: "raw", errType: ErrMediumOutsideRoots,
			msgs: []string{"medium " + filepath.Join(f.root, "link-out") + " is outside the ISO roots"}, hidden: []string{"secret", f.outside}},
		{name: "folder symlink out of the root", path: filepath.Join(f.root, "dir-out", "secret.iso"), format: "raw", errType: ErrMediumOutsideRoots,
			hidden: []string{f.outside}},
		{name: "proc fd link", path: "/proc/self/fd/1", format: "raw", errType: ErrMediumOutsideRoots,
			msgs: []string{"medium /proc/self/fd/1 is outside"}, hidden: []string{"resolves", "pipe:", "/dev/"}},
		{name: "proc exe link", path: "/proc/1/exe", format: "raw", errType: ErrMediumOutsideRoots, hidden: []string{"resolves", "/sbin", "/bin"}},
		{name: "folder symlink inside the root", path: filepath.Join(f.root, "sub-link", "deep.iso"), format: "raw", want: filepath.Join(f.real, "sub", "deep.iso")},
		{name: "absolute symlink that stays inside", path: filepath.Join(f.root, "link-abs"), format: "raw", want: good},
		{name: "absolute symlink out of the root", path: filepath.Join(f.root, "link-abs-out"), format: "raw", errType: ErrMediumOutsideRoots,
			hidden: []string{"resolves", "secret"}},
		{name: "hard link to a file that is no CD image", path: filepath.Join(f.root, "passwd.iso"), format: "raw", errType: ErrFormatMismatch,
			msgs: []string{"is not a CD image", "neither an ISO 9660 nor a UDF volume descriptor", "--allow-raw-images"}},
		{name: "raw data that is no CD image", path: filepath.Join(f.root, "zeros.img"), format: "raw", errType: ErrFormatMismatch,
			msgs: []string{"zeros.img is not a CD image"}},
		{name: "hard link to a real ISO", path: filepath.Join(f.root, "linked.iso"), format: "raw", want: filepath.Join(f.real, "linked.iso")},
		{name: "trusted raw data that is no CD image", path: filepath.Join(f.root, "zeros.img"), format: "raw", trusted: true, want: filepath.Join(f.real, "zeros.img")},
		{name: "symlink to a FIFO outside", path: filepath.Join(f.root, "link-out-fifo"), format: "raw", errType: ErrMediumOutsideRoots},
		{name: "missing target outside", path: filepath.Join(f.root, "link-missing"), format: "raw", errType: ErrMediumOutsideRoots},
		{name: "missing file outside", path: "/nonexistent/x.iso", format: "raw", errType: ErrMediumOutsideRoots},
		{name: "etc shadow", path: "/etc/shadow", format: "raw", errType: ErrMediumOutsideRoots,
			msgs: []string{"medium /etc/shadow is outside the ISO roots [" + f.root + "]: copy it under a root, or start cdswap-worker with --iso-root"}},
		{name: "the root itself", path: f.root, format: "raw", errType: ErrMediumOutsideRoots},
		{name: "directory", path: filepath.Join(f.root, "sub"), format: "raw", errType: ErrMediumNotRegular, msgs: []string{"is a folder, not a regular file"}},
		{name: "fifo", path: filepath.Join(f.root, "fifo"), format: "raw", errType: ErrMediumNotRegular, msgs: []string{"a FIFO"}},
		{name: "missing", path: filepath.Join(f.root, "nope.iso"), format: "raw", errType: ErrMediumNotFound,
			msgs: []string{"nope.iso does not exist"}},
		{name: "symlink loop", path: filepath.Join(f.root, "link-loop"), format: "raw", errType: ErrMediumNotFound},
		{name: "qcow2 asked as raw", path: filepath.Join(f.root, "disk.qcow2"), format: "raw", errType: ErrFormatMismatch,
			msgs: []string{"holds a qcow2 image, but format raw was asked: ask for format qcow2"}},
		{name: "raw asked as qcow2", path: filepath.Join(f.root, "good.iso"), format: "qcow2", errType: ErrFormatMismatch,
			msgs: []string{"holds a raw image, but format qcow2 was asked"}},
		{name: "relative path", path: "isos/good.iso", format: "raw", errType: ErrBadInput, msgs: []string{"not an absolute path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A FIFO opened without O_NONBLOCK would block: bound the test.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done := make(chan struct{})
			var m *medium
			var err error
			go func() {
				defer close(done)
				m, err = f.a.openMedium(ctx, tt.path, tt.format, tt.trusted)
			}()
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatalf("openMedium(%s) blocked", tt.path)
			}
			if tt.errType != "" {
				msg := requireType(t, err, tt.errType, false, tt.msgs...)
				for _, h := range tt.hidden {
					assert.NotContains(t, msg, h)
				}
				assert.Nil(t, m)
				return
			}
			require.NoError(t, err, "openMedium(%s)", tt.path)
			defer m.File.Close()
			assert.Equal(t, tt.want, m.Path, "openMedium(%s).Path", tt.path)
			assert.Equal(t, tt.format, m.Format)
			fl, err := fcntlFlags(m.File)
			require.NoError(t, err)
			assert.Equal(t, os.O_RDONLY, fl&syscall.O_ACCMODE, "opened read-only")
			assert.Zero(t, fl&syscall.O_NONBLOCK, "O_NONBLOCK cleared before QEMU gets the fd")
		})
	}
}

func fcntlFlags(f *os.File) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), syscall.F_GETFL, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func TestCheckFormat(t *testing.T) {
	a := &Activities{}
	tests := []struct {
		name, format string
		kind         Kind
		want         string // "" = refused
	}{
		{"default is raw", "", KindDom0, "raw"},
		{"raw", "raw", KindStubdom, "raw"},
		{"upper case", "QCOW2", KindDom0, "qcow2"},
		{"vhd is vpc", "vhd", KindDom0, "vpc"},
		{"qcow2 for a stubdom", "qcow2", KindStubdom, ""},
		{"unknown", "vmdk", KindDom0, ""},
		{"host_device is not an image format", "host_device", KindDom0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.checkFormat(context.Background(), tt.format, tt.kind)
			if tt.want == "" {
				requireType(t, err, ErrFormatMismatch, false, tt.format)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got, "checkFormat(%q, %s)", tt.format, tt.kind)
		})
	}
}

func TestResolveRoots(t *testing.T) {
	base := testenv.SocketDir(t)
	file := filepath.Join(base, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	realDir := filepath.Join(base, "real")
	require.NoError(t, os.Mkdir(realDir, 0o755))
	link := filepath.Join(base, "link")
	require.NoError(t, os.Symlink(realDir, link))
	tests := []struct {
		name string
		dirs []string
		want string // resolved root, or the error text
		ok   bool
	}{
		{"a folder", []string{realDir}, realDir, true},
		{"a symlink to a folder", []string{link}, realDir, true},
		{"relative", []string{"isos"}, "not an absolute path", false},
		{"missing", []string{filepath.Join(base, "nope")}, "create it, or fix --iso-root", false},
		{"a file", []string{file}, "is not a folder (it is a regular file)", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roots, err := resolveRoots(tt.dirs)
			if !tt.ok {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.want)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, roots[0].resolved, "resolveRoots(%v)", tt.dirs)
		})
	}
}

func TestNewErrors(t *testing.T) {
	base := testenv.SocketDir(t)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no host", Config{ISORoots: []string{base}}, "no host name"},
		{"no roots", Config{Host: "h"}, "no ISO roots"},
		{"missing root", Config{Host: "h", ISORoots: []string{base + "/nope"}}, "ISO root " + base + "/nope"},
		{"no xenstored", Config{Host: "h", ISORoots: []string{base}, XenstorePath: base + "/xs.sock"}, "is xenstored running?"},
		{"root /", Config{Host: "h", ISORoots: []string{"/"}}, "ISO root / is too broad"},
		{"root in /proc", Config{Host: "h", ISORoots: []string{"/proc/self"}}, "is too broad: it is, lies in or holds /proc"},
		{"root holds the run folder", Config{Host: "h", ISORoots: []string{base}, QMPDir: base + "/run"}, "holds " + base + "/run"},
		{"broad root forced", Config{Host: "h", ISORoots: []string{"/"}, AllowBroadRoots: true, XenstorePath: base + "/xs.sock"}, "is xenstored running?"},
		{"raw images of no root", Config{Host: "h", ISORoots: []string{base}, RawImageRoots: []string{"/srv"}}, "--allow-raw-images /srv is not one of the ISO roots"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(testenv.Context(t, 10*time.Second), tt.cfg)
			require.Error(t, err)
			assert.Nil(t, a)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// TestAllowRawImages: a root named in RawImageRoots serves any raw image; another root still
// wants CD images.
func TestAllowRawImages(t *testing.T) {
	base := testenv.SocketDir(t)
	strict, lax := filepath.Join(base, "strict"), filepath.Join(base, "lax")
	for _, d := range []string{strict, lax} {
		require.NoError(t, os.Mkdir(d, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(d, "disk.img"), make([]byte, 64<<10), 0o644))
	}
	roots, err := resolveRoots([]string{strict, lax})
	require.NoError(t, err)
	t.Cleanup(func() { closeRoots(roots) })
	require.NoError(t, allowRawImages(roots, []string{lax}))
	a := &Activities{roots: roots}
	ctx := context.Background()
	_, err = a.openMedium(ctx, filepath.Join(strict, "disk.img"), "raw", false)
	requireType(t, err, ErrFormatMismatch, false, "is not a CD image")
	m, err := a.openMedium(ctx, filepath.Join(lax, "disk.img"), "raw", false)
	require.NoError(t, err, "openMedium(raw image in a root that allows them)")
	m.File.Close()
}

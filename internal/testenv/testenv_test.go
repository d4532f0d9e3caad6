package testenv

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recorder is a testing.TB that records how a helper ended it instead of ending the test.
type recorder struct {
	testing.TB // the real test, for everything not recorded
	fatal      string
	skip       string
	logs       []string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }
func (r *recorder) Skip(args ...any)                  { r.skip = fmt.Sprint(args...) }
func (r *recorder) Log(args ...any)                   { r.logs = append(r.logs, fmt.Sprint(args...)) }

func TestUnavailable(t *testing.T) {
	tests := []struct {
		name      string
		ci        string
		wantFatal bool
	}{
		{name: "CI=true fails", ci: "true", wantFatal: true},
		{name: "no CI skips", ci: ""},
		{name: "CI=1 is not CI", ci: "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := &recorder{TB: t}
			Unavailable(r, "no %s here: install it", "frob")
			if tt.wantFatal {
				assert.Contains(t, r.fatal, "no frob here: install it")
				assert.Contains(t, r.fatal, "CI=true")
				assert.Empty(t, r.skip, "Unavailable skipped under CI")
			} else {
				assert.Equal(t, "no frob here: install it", r.skip)
				assert.Empty(t, r.fatal, "Unavailable failed outside CI")
			}
			assert.Equal(t, tt.wantFatal, InCI(), "InCI() with CI=%q", tt.ci)
		})
	}
}

func TestRequire(t *testing.T) {
	t.Setenv("CI", "")
	r := &recorder{TB: t}
	Require(r, "loop devices", nil)
	assert.Empty(t, r.skip+r.fatal, "Require(nil) ended the test")
	Require(r, "loop devices", errors.New("not root"))
	assert.Equal(t, "this test needs loop devices: not root", r.skip)
}

func TestRequireCommand(t *testing.T) {
	t.Setenv("CI", "true")
	r := &recorder{TB: t}
	p := RequireCommand(r, "sh", "dash")
	assert.Empty(t, r.fatal, "RequireCommand(sh)")
	assert.True(t, strings.HasSuffix(p, "/sh"), "RequireCommand(sh) = %q, want a path ending in /sh", p)

	p = RequireCommand(r, "cdswap-no-such-program", "cdswap-pkg")
	assert.Empty(t, p)
	assert.Contains(t, r.fatal, "cdswap-no-such-program")
	assert.Contains(t, r.fatal, "apt-get install cdswap-pkg")
}

func TestSocketDir(t *testing.T) {
	var dir string
	t.Run("use", func(t *testing.T) {
		dir = SocketDir(t)
		assert.LessOrEqual(t, len(dir), maxSocketDir, "SocketDir() = %s", dir)
		fi, err := os.Stat(dir)
		require.NoError(t, err)
		assert.True(t, fi.IsDir())
	})
	_, err := os.Stat(dir)
	assert.True(t, errors.Is(err, os.ErrNotExist), "after cleanup, Stat(%s) = %v, want not exist", dir, err)
}

func TestContext(t *testing.T) {
	ctx := Context(t, time.Hour)
	_, ok := ctx.Deadline()
	assert.True(t, ok, "Context has no deadline")
	assert.NoError(t, ctx.Err())
}

func TestBuffer(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	assert.Equal(t, strings.Repeat("x", 800), b.String())
}

func TestLogger(t *testing.T) {
	r := &recorder{TB: t}
	Logger(r).Debug("hello", "domid", 7)
	require.Len(t, r.logs, 1)
	assert.Contains(t, r.logs[0], "msg=hello domid=7")
	assert.False(t, strings.HasSuffix(r.logs[0], "\n"), "log line %q ends in a newline", r.logs[0])
}

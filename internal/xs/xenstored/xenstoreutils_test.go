package xenstored

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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

// utils are the xenstore-utils binaries these tests run (dpkg -L xenstore-utils).
var utils = []string{
	"xenstore-write", "xenstore-read", "xenstore-ls", "xenstore-list", "xenstore-exists",
	"xenstore-rm", "xenstore-chmod", "xenstore-watch",
}

// needUtils finds Debian's xenstore clients: a missing one fails the test under CI=true and
// skips it otherwise.
func needUtils(t *testing.T) {
	t.Helper()
	for _, u := range utils {
		testenv.RequireCommand(t, u, "xenstore-utils")
	}
}

// result is what one run of a client printed and its exit code.
type result struct {
	stdout, stderr string
	code           int
}

// tool runs a xenstore client against the server at sock.
func tool(t *testing.T, sock string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "XENSTORED_PATH="+sock)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		require.NoError(t, err, "%s %v", name, args)
	}
	require.NoError(t, ctx.Err(), "%s %v did not finish", name, args)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func TestXenstoreUtils(t *testing.T) {
	needUtils(t)
	s, sock := start(t, Config{})
	run := func(name string, args ...string) result { return tool(t, sock, name, args...) }

	tests := []struct {
		name string
		tool string
		args []string
		want result // stderr is matched as a substring
	}{
		{"write one", "xenstore-write", []string{"/cds/a", "hello"}, result{}},
		{"write several in a transaction", "xenstore-write", []string{"/cds/b", "world", "/cds/dir/x", "1"}, result{}},
		{"write escapes", "xenstore-write", []string{"/cds/esc", `tab\there`}, result{}},
		{"write relative", "xenstore-write", []string{"cds-rel", "dom0"}, result{}},
		{"read", "xenstore-read", []string{"/cds/a"}, result{stdout: "hello\n"}},
		{"read several", "xenstore-read", []string{"/cds/a", "/cds/b"}, result{stdout: "hello\nworld\n"}},
		{"read with prefix", "xenstore-read", []string{"-p", "/cds/dir/x"}, result{stdout: "/cds/dir/x: 1\n"}},
		{"read escaped", "xenstore-read", []string{"/cds/esc"}, result{stdout: "tab\\there\n"}},
		{"read relative", "xenstore-read", []string{"cds-rel"}, result{stdout: "dom0\n"}},
		{"read seeded dom0 name", "xenstore-read", []string{"/local/domain/0/name"}, result{stdout: "Domain-0\n"}},
		{"read absent", "xenstore-read", []string{"/cds/none"}, result{code: 1, stderr: "couldn't read path /cds/none"}},
		{"exists", "xenstore-exists", []string{"/cds/a"}, result{}},
		{"exists absent", "xenstore-exists", []string{"/cds/none"}, result{code: 1}},
		{"list", "xenstore-list", []string{"/cds"}, result{stdout: "a\nb\ndir\nesc\n"}},
		{"list with prefix", "xenstore-list", []string{"-p", "/cds/dir"}, result{stdout: "/cds/dir/x\n"}},
		{"list absent", "xenstore-list", []string{"/cds/none"}, result{code: 1, stderr: "could not list path /cds/none"}},
		{"ls", "xenstore-ls", []string{"/cds"}, result{stdout: "a = \"hello\"\nb = \"world\"\ndir = \"\"\n x = \"1\"\nesc = \"tab\\there\"\n"}},
		{"ls flat", "xenstore-ls", []string{"-f", "/cds/dir"}, result{stdout: "/cds/dir/x = \"1\"\n"}},
		{"chmod", "xenstore-chmod", []string{"/cds/a", "n0", "r5"}, result{}},
		{"ls with perms", "xenstore-ls", []string{"-p", "/cds/dir"}, result{stdout: `x = "1" ` + strings.Repeat(" .", 26) + "  (n0)\n"}},
		{"chmod recursive", "xenstore-chmod", []string{"-r", "/cds/dir", "b0", "w7"}, result{}},
		{"ls with changed perms", "xenstore-ls", []string{"-p", "/cds/dir"}, result{stdout: `x = "1" ` + strings.Repeat(" .", 26) + "  (b0,w7)\n"}},
		{"rm", "xenstore-rm", []string{"/cds/b"}, result{}},
		{"rm absent with parent", "xenstore-rm", []string{"/cds/b"}, result{}},
		{"rm absent without parent", "xenstore-rm", []string{"/cds/none/deeper"}, result{code: 1, stderr: "could not remove path /cds/none/deeper"}},
		{"exists after rm", "xenstore-exists", []string{"/cds/b"}, result{code: 1}},
		{"rm tidy removes empty parents", "xenstore-rm", []string{"-t", "/cds/dir/x"}, result{}},
		{"list after rm", "xenstore-list", []string{"/cds"}, result{stdout: "a\nesc\n"}},
	}
	for _, tt := range tests {
		got := run(tt.tool, tt.args...)
		assert.Equal(t, tt.want.code, got.code, "%s: %s %v exit code (stderr %q)", tt.name, tt.tool, tt.args, got.stderr)
		assert.Equal(t, tt.want.stdout, got.stdout, "%s: %s %v stdout", tt.name, tt.tool, tt.args)
		if tt.want.stderr == "" {
			assert.Empty(t, got.stderr, "%s: %s %v stderr", tt.name, tt.tool, tt.args)
		} else {
			assert.Contains(t, got.stderr, tt.want.stderr, "%s: %s %v stderr", tt.name, tt.tool, tt.args)
		}
	}

	// What the clients wrote is in the store, with the values and perms they gave.
	v, err := s.Read("/local/domain/0/cds-rel")
	require.NoError(t, err)
	assert.Equal(t, "dom0", v, "relative xenstore-write landed below /local/domain/0")
	v, err = s.Read("/cds/esc")
	require.NoError(t, err)
	assert.Equal(t, "tab\there", v, "xenstore-write unescaped the value")
	perms, err := s.GetPerms("/cds/a")
	require.NoError(t, err)
	assert.Equal(t, []xs.Perm{{DomID: 0, Access: xs.AccessNone}, {DomID: 5, Access: xs.AccessRead}}, perms, "perms after xenstore-chmod")
	assert.Positive(t, s.Stats().Commits, "xenstore-write and -rm use transactions")
}

// xenstore-list falls back to DIRECTORY_PART when DIRECTORY answers E2BIG.
func TestXenstoreListBigDirectory(t *testing.T) {
	needUtils(t)
	s, sock := start(t, Config{})
	var want strings.Builder
	for i := range 300 {
		name := fmt.Sprintf("child-%014d", i)
		require.NoError(t, s.Write("/big/"+name, "v"))
		want.WriteString(name + "\n")
	}
	got := tool(t, sock, "xenstore-list", "/big")
	assert.Equal(t, 0, got.code, "xenstore-list /big exit code (stderr %q)", got.stderr)
	assert.Equal(t, want.String(), got.stdout, "xenstore-list /big")
}

func TestXenstoreWatch(t *testing.T) {
	needUtils(t)
	s, sock := start(t, Config{})
	require.NoError(t, s.Write("/cds/w", ""))

	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, "xenstore-watch", "-n", "3", "/cds/w")
	cmd.Env = append(os.Environ(), "XENSTORED_PATH="+sock)
	var errb testenv.Buffer
	cmd.Stderr = &errb
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := bufio.NewScanner(stdout)
	next := func(what string) string {
		t.Helper()
		require.True(t, lines.Scan(), "xenstore-watch ended before %s (stderr %q, err %v)", what, errb.String(), lines.Err())
		return lines.Text()
	}

	assert.Equal(t, "/cds/w", next("the initial event"), "initial event")
	// The watch is set now: the initial event comes after the WATCH reply.
	require.NoError(t, s.Write("/cds/w/x", "1"))
	assert.Equal(t, "/cds/w/x", next("the write event"), "event for a write below")

	// A transaction's change shows only on commit, and a change elsewhere not at all.
	r := dialRaw(t, sock)
	tx := r.begin()
	r.ok(xs.OpWrite, tx, []byte("/cds/w/y\x001"))
	r.ok(xs.OpWrite, 0, []byte("/cds/other\x001"))
	require.Equal(t, "OK", r.end(tx, true))
	assert.Equal(t, "/cds/w/y", next("the commit event"), "event for a committed write")

	require.NoError(t, cmd.Wait(), "xenstore-watch -n 3 exit (stderr %q)", errb.String())
	assert.Empty(t, errb.String(), "xenstore-watch stderr")
}

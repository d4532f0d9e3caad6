package integration

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/termtext"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// TestCLIBadInputs runs hostile and mistaken inputs (paths, identifiers, text fields, and
// faults of the environment) through the cdswap binary against the dev server and xensim:
// each must end with its exit code (2 for a command line the CLI refuses itself, 1 for a
// refusal by the worker or the environment) and a message that says what was wrong, print
// nothing that could steer a terminal, and leave both drives as they were.
// refusedBeforeAnyRun bounds the time of a refusal made by the CLI's own checks. A run that
// reaches a worker-less host waits 10 s for ResolveDrive's schedule-to-start timeout; the
// CLI's checks take well under a second, so 5 s tells the two apart on a loaded machine.
const refusedBeforeAnyRun = 5 * time.Second

func TestCLIBadInputs(t *testing.T) {
	need(t)
	t.Parallel()
	h := startHost(t, xensim.Config{HostName: hostName("badin"), StubdomGuests: 1, Dom0Guests: 1, QEMU: xensim.QEMUFake})
	startWorker(t, h, workerOpts{})
	stub, dom0 := domainOf(t, h, xensim.KindStubdom), domainOf(t, h, xensim.KindDom0)
	tools := iso(h, xensim.ISOTools)

	folder := filepath.Join(h.ISODir(), "folder.iso")
	require.NoError(t, os.Mkdir(folder, 0o755))
	linkOut := filepath.Join(h.ISODir(), "passwd.iso")
	require.NoError(t, os.Symlink("/etc/passwd", linkOut))
	// A path of 3,000 bytes inside the root: longer than a Keyword search attribute holds,
	// short enough for Linux. The file does not exist: the worker must say so, not Temporal
	// ("exceeds limit").
	deep := h.ISODir() + strings.Repeat("/"+strings.Repeat("d", 99), 29) + "/deep-missing.iso"
	require.Greater(t, len(deep), workflows.MaxKeyword)
	require.LessOrEqual(t, len(deep), workflows.MaxMedium)
	tooLong := h.ISODir() + "/" + strings.Repeat("x", workflows.MaxMedium)
	free := freeAddr(t)

	host, vdev := h.Name(), "hdc"
	insertOn := func(dom, medium string, extra ...string) []string {
		return append([]string{"insert", "--host", host, "--domain", dom, "--vdev", vdev, "--medium", medium, "--wait", "--timeout", "1m"}, extra...)
	}
	insert := func(medium string, extra ...string) []string { return insertOn(stub.Name, medium, extra...) }
	insertAs := func(hostArg, dom, vdevArg string) []string {
		return []string{"insert", "--host", hostArg, "--domain", dom, "--vdev", vdevArg, "--medium", tools, "--wait", "--timeout", "1m"}
	}
	long := func(n int) string { return strings.Repeat("a", n) }
	nobody := hostName("nobody")

	cases := []struct {
		name string
		args []string
		code int
		want []string // in stderr, case-insensitive
		fast bool     // refused before any workflow run starts
	}{
		// Paths.
		{"relative path", insert("x.iso"), 2, []string{`--medium "x.iso" must be an absolute path`}, true},
		{"path not UTF-8", insert(h.ISODir() + "/\xff\xfe.iso"), 2, []string{"--medium", `\xff\xfe.iso" is not valid utf-8`}, true},
		{"path with U+FFFD", insert(h.ISODir() + "/\ufffd.iso"), 2, []string{"--medium", "u+fffd"}, true},
		{"path with a newline", insert(h.ISODir() + "/a\nb.iso"), 2, []string{"--medium", `control character '\n'`}, true},
		{"path with ESC", insert(h.ISODir() + "/a\x1b[2J.iso"), 2, []string{"--medium", `'\x1b'`}, true},
		{"path with DEL", insert(h.ISODir() + "/a\x7f.iso"), 2, []string{"--medium", `'\x7f'`}, true},
		{"path with C1 CSI", insert(h.ISODir() + "/a\u009b.iso"), 2, []string{"--medium", `'\u009b'`}, true},
		{"path with RLO", insert(h.ISODir() + "/osi.\u202eexe"), 2, []string{"--medium", `'\u202e'`}, true},
		{"path over PATH_MAX", insert(tooLong), 2, []string{"--medium is 4", "at most 4095"}, true},
		{"path over the search attribute's limit", insert(deep), 1, []string{"deep-missing.iso"}, false},
		{"outside the roots", insert("/etc/passwd"), 1, []string{"/etc/passwd", "outside"}, false},
		{"proc magic link", insert("/proc/self/fd/1"), 1, []string{"/proc/self/fd/1"}, false},
		{"dot dot out of the root", insert(h.ISODir() + "/../../../etc/passwd"), 1, []string{"refused"}, false},
		{"symlink out of the root", insert(linkOut), 1, []string{"passwd.iso", "refused"}, false},
		{"missing file", insert(iso(h, "missing.iso")), 1, []string{"missing.iso"}, false},
		{"folder", insert(folder), 1, []string{folder}, false},
		{"qcow2 for a stubdom guest", insert(iso(h, xensim.QCOW2Image), "--format", "qcow2"), 1, []string{"raw"}, false},
		{"format with options", insert(tools, "--format", "raw,x"), 2, []string{"--format", "only letters"}, true},
		{"empty format", insert(tools, "--format", ""), 2, []string{"--format is empty"}, true},
		// Identifiers.
		{"host too long", insertAs(long(65), stub.Name, vdev), 2, []string{"--host is 65 bytes long: at most 64"}, true},
		{"host with a newline", insertAs(host+"\nx", stub.Name, vdev), 2, []string{"--host", "only letters"}, true},
		{"host with ESC", insertAs("h\x1b]0;t\a", stub.Name, vdev), 2, []string{"--host", `\x1b`}, true},
		{"host with a space", insertAs("two words", stub.Name, vdev), 2, []string{"--host", `" "`}, true},
		{"host with a slash", insertAs("a/b", stub.Name, vdev), 2, []string{"--host", "only letters"}, true},
		{"host not UTF-8", insertAs("h\xff", stub.Name, vdev), 2, []string{"--host"}, true},
		{"unknown host", insertAs(nobody, stub.Name, vdev), 1, []string{"no cdswap-worker", nobody, "cdswap list", "start cdswap-worker"}, true},
		{"eject on an unknown host", []string{"eject", "--host", nobody, "--domain", stub.Name, "--vdev", vdev}, 1, []string{"no cdswap-worker", nobody}, true},
		{"domain too long", insertAs(host, long(65), vdev), 2, []string{"--domain is 65 bytes long: at most 64"}, true},
		{"domain with a newline", insertAs(host, "web\n1", vdev), 2, []string{"--domain", `'\n'`}, true},
		{"domain with RLO", insertAs(host, "web\u202e1", vdev), 2, []string{"--domain", `'\u202e'`}, true},
		{"unknown domain", insertAs(host, "no-such-guest", vdev), 1, []string{"no-such-guest"}, false},
		{"unknown domid", insertAs(host, "999", vdev), 1, []string{"999"}, false},
		{"vdev too long", insertAs(host, stub.Name, long(17)), 2, []string{"--vdev is 17 bytes long: at most 16"}, true},
		{"vdev with dot dot", insertAs(host, stub.Name, "../hdc"), 2, []string{"--vdev", "only letters"}, true},
		{"vdev with ESC", insertAs(host, stub.Name, "hd\x1bc"), 2, []string{"--vdev"}, true},
		{"no such vdev", insertAs(host, dom0.Name, "hdd"), 1, []string{"hdd"}, false},
		// Text fields.
		{"ticket too long", insert(tools, "--ticket", long(129)), 2, []string{"--ticket is 129 bytes long: at most 128"}, true},
		{"ticket with escapes", insert(tools, "--ticket", "x\x1b[2J\x1b]0;t\a\r\nfake line: outcome changed"), 2, []string{"--ticket", `'\x1b'`}, true},
		{"reason too long", insert(tools, "--reason", long(1025)), 2, []string{"--reason is 1025 bytes long: at most 1024"}, true},
		{"reason not UTF-8", insert(tools, "--reason", "caf\xe9"), 2, []string{"--reason", "not valid utf-8"}, true},
		{"reason with BEL", insert(tools, "--reason", "ding\a"), 2, []string{"--reason", `'\a'`}, true},
		{"requester too long", insert(tools, "--requester", long(257)), 2, []string{"--requester is 257 bytes long: at most 256"}, true},
		{"requester with C1 CSI", insert(tools, "--requester", "bob\u009b31m"), 2, []string{"--requester", `'\u009b'`}, true},
		{"cancel reason too long", []string{"cancel", workflows.WorkflowID(host, stub.DomID, vdev), "--reason", long(2000)}, 2, []string{"--reason is 2000 bytes long"}, true},
		// Swap ids and filters.
		{"status id with escapes", []string{"status", "cdswap-x\x1b[2J"}, 2, []string{"the swap ID", `'\x1b'`}, true},
		{"history id too long", []string{"history", long(1001)}, 2, []string{"the swap ID is 1001 bytes long"}, true},
		{"cancel unknown id", []string{"cancel", "cdswap-no-such-swap"}, 1, []string{"no swap", "cdswap-no-such-swap"}, true},
		{"status drive with a bad host", []string{"status", "--host", "h\x1b", "--domain", stub.Name, "--vdev", vdev}, 2, []string{"--host"}, true},
		{"list host with a newline", []string{"list", "--host", "a\nb"}, 2, []string{"--host"}, true},
		// The environment.
		{"no server", append(insert(tools), "--address", free, "--connect-timeout", "2s"), 1, []string{"cannot reach Temporal at " + free}, false},
		{"wrong namespace", append(insert(tools), "--namespace", "no-such-namespace"), 1, []string{`namespace "no-such-namespace" does not exist`}, true},
	}
	require.GreaterOrEqual(t, len(cases), 40)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			r := runCLI(t, c.args...)
			took := time.Since(start)
			assert.Equal(t, c.code, r.code, "exit code; stderr %s", r.stderr)
			for _, w := range c.want {
				assert.Contains(t, strings.ToLower(r.stderr), strings.ToLower(w), "the error does not say %q", w)
			}
			assert.NotContains(t, r.stderr, "exceeds limit", "Temporal's words, not ours")
			assert.NotContains(t, r.stderr, "grpc", "Temporal's words, not ours")
			if c.fast {
				// Refused by the CLI's own checks, before any run starts: not a speed
				// measurement, but the line between that path and the one that waits out
				// ResolveDrive's 10 s schedule-to-start timeout.
				assert.Less(t, took, refusedBeforeAnyRun, "the refusal took %s: did a run start?", took)
			}
			for i, ch := range r.stdout + r.stderr {
				if (ch == utf8.RuneError && !strings.HasPrefix((r.stdout + r.stderr)[i:], "\ufffd")) || (ch != '\n' && termtext.IsUnsafe(ch)) {
					t.Errorf("the output holds %q raw at byte %d", ch, i)
				}
			}
		})
	}

	for _, dom := range []xensim.DomainInfo{stub, dom0} {
		requireUntouched(t, h, dom)
		checkXenstore(t, h, dom, dom.Medium)
		checkConfig(t, dom, dom.Medium)
		assert.Equal(t, dom.Medium, qemuView(t, h, dom).file, "QEMU of %s holds another medium", dom.Name)
	}
}

// freeAddr is a loopback address where nothing listens.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

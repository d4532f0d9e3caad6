package qmptest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/qmp"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xensim/simqemu/qemuproc"
)

// The tests in this file run one script against the real QEMU and against the fake, and
// want the same bytes back, once timestamps, node names and descriptor numbers are
// normalised.

// startQEMU starts QEMU as libxl would for a guest with hdc: an empty read-only ide-cd
// "ide-5632" on ide.1 unit 0, plus one QMP monitor per socket; bootDisk, when set, is an IDE
// disk to boot from. It returns once QEMU listens on every socket.
func startQEMU(ctx context.Context, t *testing.T, bootDisk string, socks ...string) {
	t.Helper()
	p, err := qemuproc.Start(ctx, qemuproc.Config{Binary: testenv.RequireQEMU(t),
		CDROMs: []xen.DevID{5632}, BootDisk: bootDisk, Monitors: socks})
	if err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	t.Cleanup(func() { p.Stop() })
}

var normalisers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`"timestamp": \{"seconds": \d+, "microseconds": \d+\}`), `"timestamp": {"seconds": S, "microseconds": U}`},
	{regexp.MustCompile(`"#block\d+"`), `"#blockN"`},
	{regexp.MustCompile(`"fd": \d+`), `"fd": N`},
}

func normalise(line string) string {
	line = strings.TrimSuffix(line, "\r\n")
	for _, n := range normalisers {
		line = n.re.ReplaceAllString(line, n.with)
	}
	return line
}

// player runs a script on one QEMU, real or fake, and records what it reads.
type player struct {
	t       *testing.T
	ctx     context.Context
	socks   []string
	clients []*rawClient
	// settle waits until the QEMU has seen a client's hang-up; it may do nothing.
	settle func()
	lines  []string
}

func (p *player) dial(mon int) {
	c, greeting := dialRaw(p.ctx, p.t, p.socks[mon])
	p.clients[mon] = c
	p.lines = append(p.lines, fmt.Sprintf("%d< %s", mon, normalise(greeting)))
}

func (p *player) hangUp(mon int) {
	p.clients[mon].uc.Close()
	p.clients[mon] = nil
	p.lines = append(p.lines, fmt.Sprintf("%d: hang up", mon))
	p.settle()
}

// send writes text (with f's descriptor when f is not nil) and reads until n replies came,
// recording events and replies. Events other than DEVICE_TRAY_MOVED, STOP and RESUME are
// left out: they are the guest's business (RESET from the firmware, for one).
func (p *player) send(mon int, text string, f *os.File, n int) {
	p.t.Helper()
	c := p.clients[mon]
	p.lines = append(p.lines, fmt.Sprintf("%d> %s", mon, text))
	if err := c.write([]byte(text+"\r\n"), f); err != nil {
		p.t.Fatalf("write %q: %v", text, err)
	}
	for got := 0; got < n; {
		line, err := c.readLine()
		if err != nil {
			p.t.Fatalf("after %q: %v", text, err)
		}
		if ev, ok := parseEvent(line); ok {
			switch ev["event"] {
			case "DEVICE_TRAY_MOVED", "STOP", "RESUME":
			default:
				continue
			}
		} else {
			got++
		}
		p.lines = append(p.lines, fmt.Sprintf("%d< %s", mon, normalise(line)))
	}
}

func (p *player) exec(mon int, text string) { p.t.Helper(); p.send(mon, text, nil, 1) }

// TestAgainstQEMU plays the medium change and fd set life cycle on both and compares.
func TestAgainstQEMU(t *testing.T) {
	testenv.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := testenv.SocketDir(t)
	a := writeImage(t, dir, "a.iso", 1<<20)
	b := writeImage(t, dir, "b.iso", 2<<20)

	script := func(p *player) {
		open := func(name string, flag int) *os.File { return openFile(t, name, flag) }
		p.dial(0)
		p.exec(0, `{"execute": "query-status", "id": "pre"}`)
		p.exec(0, `{"execute": "qmp_capabilities"}`)
		p.dial(1)
		p.exec(1, `{"execute": "qmp_capabilities", "id": 1}`)
		p.exec(0, `{"execute": "query-block", "id": 2}`)
		p.exec(0, `{"execute": "query-version"}`)
		p.send(0, `{"execute": "add-fd", "arguments": {"opaque": "stub-devid:5632"}}`, open(a, os.O_RDONLY), 1)
		p.send(1, `{"execute": "add-fd", "arguments": {"fdset-id": 3}}`, open(b, os.O_RDWR), 1)
		p.send(1, `{"execute": "add-fd", "arguments": {"fdset-id": 3, "opaque": "ro"}}`, open(b, os.O_RDONLY), 1)
		p.send(1, `{"execute": "add-fd", "arguments": {}}`, nil, 1)
		p.exec(0, `{"execute": "query-fdsets"}`)
		p.exec(0, `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "/dev/fdset/0", "format": "raw"}}`)
		p.exec(0, `{"execute": "query-block"}`)
		p.exec(0, `{"execute": "remove-fd", "arguments": {"fdset-id": 0}}`)
		p.exec(0, `{"execute": "query-fdsets"}`)
		p.exec(0, `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "`+b+`"}}`)
		p.exec(0, `{"execute": "query-fdsets"}`)
		p.exec(0, `{"execute": "query-block"}`)
		p.exec(0, `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "/dev/fdset/3", "format": "raw"}}`)
		p.exec(0, `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "/dev/fdset/3", "format": "raw", "read-only-mode": "read-write"}}`)
		p.exec(0, `{"execute": "query-block"}`)
		p.exec(0, `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "`+a+`", "format": "raw"}}`)
		p.exec(0, `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "/dev/fdset/9", "format": "raw"}}`)
		p.exec(0, `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "`+a+`", "format": "host_device"}}`)
		p.exec(0, `{"execute": "eject", "arguments": {"id": "ide-5632"}}`)
		p.exec(0, `{"execute": "eject", "arguments": {"device": "ide-5632", "force": true}}`)
		p.exec(0, `{"execute": "query-block"}`)
		p.exec(0, `{"execute": "stop"}`)
		p.exec(1, `{"execute": "remove-fd", "arguments": {"fdset-id": 3}}`)
		p.exec(1, `{"execute": "query-fdsets"}`)
		p.exec(0, `{"execute": "cont"}`)
		p.exec(0, `{"execute": "cont"}`)
		p.exec(0, `{"execute": "query-fdsets"}`)
		p.exec(0, `{"execute": "remove-fd", "arguments": {"fdset-id": 3}}`)
		p.exec(0, `{"execute": "query-fdsets"}`)
		p.exec(0, `{"execute": "remove-fd", "arguments": {"fdset-id": 3}}`)
		// A set not in use does not survive the last monitor connection (QEMU < 9.1).
		p.send(1, `{"execute": "add-fd", "arguments": {"opaque": "lost"}}`, open(a, os.O_RDONLY), 1)
		p.exec(1, `{"execute": "query-fdsets"}`)
		p.hangUp(0)
		p.exec(1, `{"execute": "query-fdsets"}`)
		p.hangUp(1)
		p.dial(1)
		p.exec(1, `{"execute": "qmp_capabilities"}`)
		p.exec(1, `{"execute": "query-fdsets"}`)
		p.exec(1, `{"execute": "query-status"}`)
	}

	realQEMU := &player{t: t, ctx: ctx, clients: make([]*rawClient, 2), settle: func() {}}
	realQEMU.socks = []string{filepath.Join(dir, "r0.sock"), filepath.Join(dir, "r1.sock")}
	startQEMU(ctx, t, "", realQEMU.socks...)
	script(realQEMU)

	// The fake reports the real QEMU's version, so that greetings compare equal.
	var g struct {
		QMP struct {
			Version struct {
				Qemu    struct{ Major, Minor, Micro int }
				Package string
			}
		}
	}
	if err := json.Unmarshal([]byte(strings.SplitN(realQEMU.lines[0], "< ", 2)[1]), &g); err != nil {
		t.Fatalf("decode the real greeting: %v", err)
	}
	v := g.QMP.Version
	s := New(Options{Version: qmp.Version{Major: v.Qemu.Major, Minor: v.Qemu.Minor, Micro: v.Qemu.Micro, Package: v.Package},
		StrictHostDevice: true})
	t.Cleanup(func() { s.Close() })
	fake := &player{t: t, ctx: ctx, clients: make([]*rawClient, 2)}
	fake.socks = []string{filepath.Join(dir, "f0.sock"), filepath.Join(dir, "f1.sock")}
	for _, p := range fake.socks {
		if err := s.Listen(p); err != nil {
			t.Fatal(err)
		}
	}
	// The real QEMU is given time by the round trips of the script; the fake is waited for.
	fake.settle = func() {
		want := 0
		for _, c := range fake.clients {
			if c != nil {
				want++
			}
		}
		for s.Connections() > want && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
	}
	script(fake)
	compareTranscripts(t, realQEMU.lines, fake.lines)
}

// TestAgainstQEMULockedTray boots a guest that locks the tray (testdata/lockguest) and
// compares the refusals and the forced eject with the fake's LockTray.
func TestAgainstQEMULockedTray(t *testing.T) {
	testenv.RequireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := testenv.SocketDir(t)
	a := writeImage(t, dir, "a.iso", 1<<20)
	b := writeImage(t, dir, "b.iso", 1<<20)
	boot, err := os.ReadFile("testdata/lockguest/boot.bin")
	if err != nil {
		t.Fatal(err)
	}
	disk := writeImage(t, dir, "disk.img", 1<<20)
	if err := os.WriteFile(disk, append(boot, make([]byte, 1<<20-len(boot))...), 0o644); err != nil {
		t.Fatal(err)
	}

	script := func(p *player) {
		p.exec(0, `{"execute": "eject", "arguments": {"id": "ide-5632"}}`)
		p.exec(0, `{"execute": "eject", "arguments": {"device": "ide-5632"}}`)
		p.exec(0, `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "`+b+`", "format": "raw"}}`)
		p.exec(0, `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "`+dir+`/none", "format": "raw"}}`)
		p.exec(0, `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "`+b+`", "format": "raw", "force": true}}`)
		p.exec(0, `{"execute": "eject", "arguments": {"id": "ide-5632"}}`)
	}

	realQEMU := &player{t: t, ctx: ctx, clients: make([]*rawClient, 1), settle: func() {}}
	realQEMU.socks = []string{filepath.Join(dir, "r.sock")}
	startQEMU(ctx, t, disk, realQEMU.socks...)
	realQEMU.dial(0)
	realQEMU.exec(0, `{"execute": "qmp_capabilities"}`)
	realQEMU.exec(0, `{"execute": "blockdev-change-medium", "arguments": {"id": "ide-5632", "filename": "`+a+`", "format": "raw"}}`)
	for locked := false; !locked; {
		r := realQEMU.clients[0].exec("query-block", nil)
		var bi []qmp.BlockInfo
		if err := json.Unmarshal(r.Return, &bi); err != nil {
			t.Fatal(err)
		}
		for _, b := range bi {
			locked = locked || (b.Device == "ide-5632" && b.Locked)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the guest did not lock the tray: %v", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	realQEMU.lines = nil
	script(realQEMU)

	s, path := Start(t, Options{})
	fake := &player{t: t, ctx: ctx, clients: make([]*rawClient, 1), socks: []string{path}}
	fake.dial(0)
	fake.exec(0, `{"execute": "qmp_capabilities"}`)
	if err := s.Insert("ide-5632", a, "raw"); err != nil {
		t.Fatal(err)
	}
	s.LockTray("ide-5632", true)
	fake.lines = nil
	script(fake)
	compareTranscripts(t, realQEMU.lines, fake.lines)
}

func compareTranscripts(t *testing.T, qemu, fake []string) {
	t.Helper()
	for i := 0; i < len(qemu) || i < len(fake); i++ {
		var r, f string
		if i < len(qemu) {
			r = qemu[i]
		}
		if i < len(fake) {
			f = fake[i]
		}
		if r != f {
			t.Errorf("line %d:\nqemu %s\nfake %s", i, r, f)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("qemu transcript:\n%s", strings.Join(qemu, "\n"))
	}
}

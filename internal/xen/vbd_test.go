package xen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xs"
	"github.com/cdswap/cdswap/internal/xs/xenstored"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// stubVBD is the phy cdrom libxl gives stubdom 4 for hdc of guest 3.
var stubVBD = VBD{
	BackendDom:  0,
	FrontendDom: 4,
	Vdev:        "hdc",
	Type:        TypePhy,
	Params:      "/srv/isos/debian-12.iso",
}

// qdiskVBD is the cdrom of guest 3 with its QEMU in dom0.
var qdiskVBD = VBD{
	BackendDom:  0,
	FrontendDom: 3,
	Vdev:        "hdc",
	Type:        TypeQdisk,
	Params:      "aio:/srv/isos/debian-12.iso",
}

func vbdTree(t *testing.T, c *xs.Client, v VBD) []node {
	t.Helper()
	v, err := v.normalize()
	if err != nil {
		t.Fatal(err)
	}
	var out []node
	for _, p := range []string{v.BackendPath(), v.FrontendPath(), v.LibxlPath()} {
		out = append(out, dumpTree(t, c, p)...)
	}
	return out
}

func TestAddVBDGolden(t *testing.T) {
	tests := []struct {
		name   string
		vbd    VBD
		golden string
	}{
		{"phy cdrom of a stubdom", stubVBD, "addvbd-phy-stubdom.golden"},
		{"qdisk cdrom of a guest", qdiskVBD, "addvbd-qdisk.golden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, c := startXenstored(t)
			if err := AddVBD(testCtx(t), c, tt.vbd); err != nil {
				t.Fatalf("AddVBD = %v", err)
			}
			got := formatTree(vbdTree(t, c, tt.vbd))
			golden := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("AddVBD wrote:\n%s\nwant (%s):\n%s", got, golden, want)
			}
		})
	}
}

func TestAddVBDExists(t *testing.T) {
	_, _, c := startXenstored(t)
	ctx := testCtx(t)
	if err := AddVBD(ctx, c, stubVBD); err != nil {
		t.Fatalf("AddVBD = %v", err)
	}
	be := BackendPath(0, 4, KindVBD, 5632)
	mustWrite(t, c, be+"/state", "4")
	before := formatTree(vbdTree(t, c, stubVBD))

	other := stubVBD
	other.Params = "/srv/isos/other.iso"
	err := AddVBD(ctx, c, other)
	if !errors.Is(err, ErrDeviceExists) {
		t.Fatalf("second AddVBD = %v, want ErrDeviceExists", err)
	}
	if after := formatTree(vbdTree(t, c, stubVBD)); after != before {
		t.Errorf("a refused AddVBD changed xenstore:\n%s\nwas:\n%s", after, before)
	}

	// Only the /libxl copy counts, as in libxl: a stale backend alone is replaced.
	if err := c.Rm(ctx, LibxlPath(4, 5632)); err != nil {
		t.Fatal(err)
	}
	if err := AddVBD(ctx, c, other); err != nil {
		t.Fatalf("AddVBD over a stale backend = %v", err)
	}
	if got := mustRead(t, c, be+"/state"); got != "1" {
		t.Errorf("stale backend state = %q, want it replaced by \"1\"", got)
	}
	if got := mustRead(t, c, be+"/params"); got != other.Params {
		t.Errorf("params = %q, want %q", got, other.Params)
	}
}

func TestAddVBDRejects(t *testing.T) {
	_, _, c := startXenstored(t)
	tests := []struct {
		name string
		edit func(v *VBD)
		is   error
	}{
		{"bad vdev", func(v *VBD) { v.Vdev = "hde" }, ErrBadVdev},
		{"devid mismatch", func(v *VBD) { v.DevID = 51744 }, nil},
		{"unknown type", func(v *VBD) { v.Type = "tap" }, nil},
		{"qdisk with a script", func(v *VBD) { v.Type = TypeQdisk; v.Script = "/bin/true" }, nil},
		{"bad mode", func(v *VBD) { v.Mode = "rw" }, nil},
		{"bad device type", func(v *VBD) { v.DeviceType = "floppy" }, nil},
		{"nul in params", func(v *VBD) { v.Params = "a\x00b" }, xs.ErrBadValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := stubVBD
			tt.edit(&v)
			err := AddVBD(testCtx(t), c, v)
			if err == nil || (tt.is != nil && !errors.Is(err, tt.is)) {
				t.Fatalf("AddVBD(%+v) = %v, want an error (%v)", v, err, tt.is)
			}
			if exists(t, c, LibxlPath(4, 5632)) || exists(t, c, FrontendPath(4, 5632)) {
				t.Fatalf("a refused AddVBD left nodes behind")
			}
		})
	}
}

func TestReadVBD(t *testing.T) {
	_, _, c := startXenstored(t)
	ctx := testCtx(t)
	for _, v := range []VBD{stubVBD, qdiskVBD} {
		if err := AddVBD(ctx, c, v); err != nil {
			t.Fatalf("AddVBD(%+v) = %v", v, err)
		}
	}
	disk := VBD{FrontendDom: 3, Vdev: "xvda", Type: TypeQdisk, Params: "qcow2:/srv/vm.qcow2", Mode: "w", DeviceType: "disk"}
	if err := AddVBD(ctx, c, disk); err != nil {
		t.Fatalf("AddVBD(disk) = %v", err)
	}

	tests := []struct {
		name     string
		dom      uint32
		devid    DevID
		want     VBD
		wantPath string
	}{
		{"stubdom phy", 4, 5632, VBD{FrontendDom: 4, DevID: 5632, Vdev: "hdc", Type: TypePhy, Params: stubVBD.Params, Mode: "r", DeviceType: "cdrom", Script: BlockScript}, stubVBD.Params},
		{"qdisk", 3, 5632, VBD{FrontendDom: 3, DevID: 5632, Vdev: "hdc", Type: TypeQdisk, Params: qdiskVBD.Params, Mode: "r", DeviceType: "cdrom"}, "/srv/isos/debian-12.iso"},
		{"qdisk disk", 3, 51712, VBD{FrontendDom: 3, DevID: 51712, Vdev: "xvda", Type: TypeQdisk, Params: disk.Params, Mode: "w", DeviceType: "disk"}, "/srv/vm.qcow2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadVBD(ctx, c, tt.dom, tt.devid)
			if err != nil || got != tt.want {
				t.Fatalf("ReadVBD(%d, %d) = %+v, %v, want %+v", tt.dom, tt.devid, got, err, tt.want)
			}
			if p := got.Path(); p != tt.wantPath {
				t.Errorf("Path() = %q, want %q", p, tt.wantPath)
			}
		})
	}

	if _, err := ReadVBD(ctx, c, 4, 51712); !errors.Is(err, ErrNoSuchVBD) {
		t.Errorf("ReadVBD of a missing vbd = %v, want ErrNoSuchVBD", err)
	}

	got, err := FindCDROM(ctx, c, 4, "hdc")
	if err != nil || got.DevID != 5632 {
		t.Errorf(`FindCDROM(4, "hdc") = %+v, %v, want devid 5632`, got, err)
	}
	// libxl compares the configured name: the stubdom's kernel calls it xvdc, xl does not.
	if _, err := FindCDROM(ctx, c, 4, "xvdc"); !errors.Is(err, ErrNoSuchVBD) || !strings.Contains(err.Error(), "hdc") {
		t.Errorf(`FindCDROM(4, "xvdc") = %v, want ErrNoSuchVBD listing hdc`, err)
	}
	if _, err := FindCDROM(ctx, c, 3, "xvda"); !errors.Is(err, ErrNoSuchVBD) {
		t.Errorf(`FindCDROM(3, "xvda") (a disk) = %v, want ErrNoSuchVBD`, err)
	}
	if _, err := FindCDROM(ctx, c, 9, "hdc"); !errors.Is(err, ErrNoSuchVBD) {
		t.Errorf(`FindCDROM(9, "hdc") = %v, want ErrNoSuchVBD`, err)
	}
	list, err := ListVBDs(ctx, c, 3)
	if err != nil || len(list) != 2 {
		t.Errorf("ListVBDs(3) = %+v, %v, want 2 vbds", list, err)
	}

	// Broken copies are reported, not guessed at.
	lp := LibxlPath(4, 5632)
	mustWrite(t, c, lp+"/backend", "/local/domain/0/backend/vbd/4/51712")
	if _, err := ReadVBD(ctx, c, 4, 5632); err == nil || !strings.Contains(err.Error(), "another device") {
		t.Errorf("ReadVBD with a foreign backend path = %v, want an error", err)
	}
	mustWrite(t, c, lp+"/backend", "/local/domain/0/backend/qdisk/4/5632")
	if _, err := ReadVBD(ctx, c, 4, 5632); err == nil || !strings.Contains(err.Error(), "kind") {
		t.Errorf("ReadVBD with a kind mismatch = %v, want an error", err)
	}
	mustWrite(t, c, lp+"/backend", "garbage")
	if _, err := ReadVBD(ctx, c, 4, 5632); err == nil {
		t.Errorf("ReadVBD with a bad backend path = nil error")
	}
	mustWrite(t, c, lp+"/backend", mustNormalize(t, stubVBD).BackendPath())
	if err := c.Rm(ctx, lp+"/dev"); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadVBD(ctx, c, 4, 5632); err == nil || !strings.Contains(err.Error(), "/dev") {
		t.Errorf("ReadVBD without dev = %v, want a missing-node error", err)
	}
}

func TestRemoveVBD(t *testing.T) {
	_, _, c := startXenstored(t)
	ctx := testCtx(t)
	be := mustNormalize(t, stubVBD).BackendPath()

	tests := []struct {
		name, state, want string
	}{
		{"connected", "4", "5"},
		{"initialising", "1", "5"},
		{"already closed stays closed", "6", "6"},
		{"garbage counts as not closed", "x", "5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resetStubVBD(ctx, t, c)
			mustWrite(t, c, be+"/state", tt.state)
			if err := RemoveVBD(ctx, c, be); err != nil {
				t.Fatalf("RemoveVBD = %v", err)
			}
			if got := mustRead(t, c, be+"/state"); got != tt.want {
				t.Errorf("state = %q, want %q", got, tt.want)
			}
			if got := mustRead(t, c, be+"/online"); got != "0" {
				t.Errorf("online = %q, want \"0\"", got)
			}
		})
	}

	if err := RemoveVBD(ctx, c, "/local/domain/0/backend/vbd/4/51712"); !errors.Is(err, ErrBackendGone) {
		t.Errorf("RemoveVBD of an absent backend = %v, want ErrBackendGone", err)
	}
	if exists(t, c, "/local/domain/0/backend/vbd/4/51712") {
		t.Errorf("RemoveVBD of an absent backend created nodes")
	}
}

// resetStubVBD destroys stubVBD and adds it again, so that a case starts from a new device.
func resetStubVBD(ctx context.Context, t *testing.T, c *xs.Client) {
	t.Helper()
	if err := DestroyVBD(ctx, c, mustNormalize(t, stubVBD)); err != nil {
		t.Fatal(err)
	}
	if err := AddVBD(ctx, c, stubVBD); err != nil {
		t.Fatal(err)
	}
}

func mustNormalize(t *testing.T, v VBD) VBD {
	t.Helper()
	n, err := v.normalize()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWaitBackendState(t *testing.T) {
	_, _, c := startXenstored(t)
	ctx := testCtx(t)
	if err := AddVBD(ctx, c, stubVBD); err != nil {
		t.Fatal(err)
	}
	be := mustNormalize(t, stubVBD).BackendPath()

	// A simulated blkback moves through the states while we wait for Closed.
	done := make(chan error, 1)
	go func() { done <- WaitBackendState(ctx, c, be, StateClosed) }()
	// Another client plays the backend, so the waiter's events come from real writes.
	for _, s := range []string{"2", "4", "5", "6"} {
		mustWrite(t, c, be+"/state", s)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitBackendState(Closed) = %v", err)
	}

	// Already there: returns at once.
	if err := WaitBackendState(ctx, c, be, StateClosed); err != nil {
		t.Fatalf("WaitBackendState(Closed) when closed = %v", err)
	}

	// Never reached: the deadline error names the last state.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	err := WaitBackendState(short, c, be, StateInitWait)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `"6"`) {
		t.Errorf("WaitBackendState(InitWait) = %v, want DeadlineExceeded naming state \"6\"", err)
	}

	// The backend disappears while we wait.
	done2 := make(chan error, 1)
	go func() { done2 <- WaitBackendState(ctx, c, be, StateInitWait) }()
	if err := DestroyVBD(ctx, c, mustNormalize(t, stubVBD)); err != nil {
		t.Fatal(err)
	}
	if err := <-done2; !errors.Is(err, ErrBackendGone) {
		t.Errorf("WaitBackendState on a removed backend = %v, want ErrBackendGone", err)
	}
}

// waitCase is one case of a wait for a new vbd: nodes written below its backend, one
// after the other, and the error the wait must end with (nil for success; else an error
// that is a *HotplugError whose Reason contains text).
type waitCase struct {
	name   string
	writes []string
	is     error
	text   string
}

// testWaits runs wait on the stub vbd's backend for each case, on a freshly added vbd.
func testWaits(t *testing.T, c *xs.Client, wait func(context.Context, *xs.Client, string) error, name string, tests []waitCase) {
	t.Helper()
	ctx := testCtx(t)
	be := mustNormalize(t, stubVBD).BackendPath()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resetStubVBD(ctx, t, c)
			done := make(chan error, 1)
			go func() { done <- wait(ctx, c, be) }()
			for i := 0; i+1 < len(tt.writes); i += 2 {
				mustWrite(t, c, be+"/"+tt.writes[i], tt.writes[i+1])
			}
			err := <-done
			if tt.is == nil {
				if err != nil {
					t.Fatalf("%s = %v, want nil", name, err)
				}
				return
			}
			var he *HotplugError
			if !errors.Is(err, tt.is) || !errors.As(err, &he) || !strings.Contains(err.Error(), tt.text) || !strings.Contains(he.Reason(), tt.text) {
				t.Fatalf("%s = %v, want a *HotplugError (%v) with %q", name, err, tt.is, tt.text)
			}
		})
	}
}

func TestWaitHotplug(t *testing.T) {
	_, _, c := startXenstored(t)
	ctx := testCtx(t)
	be := mustNormalize(t, stubVBD).BackendPath()

	testWaits(t, c, WaitHotplug, "WaitHotplug", []waitCase{
		{"connected", []string{"hotplug-status", "connected"}, nil, ""},
		{"error", []string{"hotplug-error", "/srv/isos/x.iso does not exist.", "hotplug-status", "error"}, ErrHotplug, "does not exist"},
		{"busy", []string{"hotplug-error", "Device /dev/loop0 is mounted in a guest domain", "hotplug-status", "busy"}, ErrHotplug, "mounted"},
		{"error without text", []string{"hotplug-status", "error"}, ErrHotplug, "no hotplug-error text"},
	})

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	mustWrite(t, c, be+"/hotplug-status", "")
	if err := WaitHotplug(short, c, be); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitHotplug with no script = %v, want DeadlineExceeded", err)
	}
}

func TestWaitAttached(t *testing.T) {
	_, _, c := startXenstored(t)
	ctx := testCtx(t)
	be := mustNormalize(t, stubVBD).BackendPath()

	testWaits(t, c, WaitAttached, "WaitAttached", []waitCase{
		{"connected, then InitWait", []string{"hotplug-status", "connected", "state", "2"}, nil, ""},
		{"InitWait, Connected, then the script", []string{"state", "2", "state", "4", "hotplug-status", "connected"}, nil, ""},
		{"error while Initialising", []string{"hotplug-error", "/srv/isos/x.iso does not exist.", "hotplug-status", "error"}, ErrHotplug, "does not exist"},
		{"busy without text", []string{"state", "2", "hotplug-status", "busy"}, ErrHotplug, "no hotplug-error text"},
	})

	// The script is done, but the backend went past Connected: not attached.
	resetStubVBD(ctx, t, c)
	mustWrite(t, c, be+"/hotplug-status", "connected", be+"/state", "5")
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := WaitAttached(short, c, be)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), `state "5", hotplug-status "connected"`) {
		t.Errorf("WaitAttached on a closing backend = %v, want DeadlineExceeded naming what it saw", err)
	}
}

func TestFindCDROMNotFound(t *testing.T) {
	_, _, c := startXenstored(t)
	ctx := testCtx(t)
	disk := VBD{FrontendDom: 3, Vdev: "xvda", Type: TypeQdisk, Params: "qcow2:/srv/vm.qcow2", Mode: "w", DeviceType: "disk"}
	for _, v := range []VBD{qdiskVBD, disk} {
		if err := AddVBD(ctx, c, v); err != nil {
			t.Fatalf("AddVBD(%+v) = %v", v, err)
		}
	}
	tests := []struct {
		name string
		dom  uint32
		vdev string
		want NoCDROMError
	}{
		{"another name", 3, "hdd", NoCDROMError{DomID: 3, Vdev: "hdd", CDROMs: []string{"hdc"}}},
		{"a disk", 3, "xvda", NoCDROMError{DomID: 3, Vdev: "xvda", DeviceType: "disk", CDROMs: []string{"hdc"}}},
		{"no vbd at all", 9, "hdc", NoCDROMError{DomID: 9, Vdev: "hdc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FindCDROM(ctx, c, tt.dom, tt.vdev)
			var nf *NoCDROMError
			if !errors.Is(err, ErrNoSuchVBD) || !errors.As(err, &nf) || !reflect.DeepEqual(*nf, tt.want) {
				t.Fatalf("FindCDROM(%d, %q) = %v, want %+v", tt.dom, tt.vdev, err, tt.want)
			}
		})
	}
}

func TestDestroyVBD(t *testing.T) {
	_, _, c := startXenstored(t)
	ctx := testCtx(t)
	mustWrite(t, c, "/local/domain/4/name", "win10-dm", "/libxl/3/dm-version", DMQemuXen)
	if err := AddVBD(ctx, c, stubVBD); err != nil {
		t.Fatal(err)
	}
	v := mustNormalize(t, stubVBD)
	if err := DestroyVBD(ctx, c, v); err != nil {
		t.Fatalf("DestroyVBD = %v", err)
	}
	// Each path goes, and so does every parent left empty, as libxl__xs_path_cleanup does.
	for _, p := range []string{v.BackendPath(), v.FrontendPath(), v.LibxlPath(),
		"/local/domain/4/device", "/libxl/4", "/local/domain/0/backend"} {
		if exists(t, c, p) {
			t.Errorf("after DestroyVBD, %s exists", p)
		}
	}
	for _, p := range []string{"/local/domain/4/name", "/libxl/3/dm-version"} {
		if !exists(t, c, p) {
			t.Errorf("DestroyVBD removed unrelated %s", p)
		}
	}
	if err := DestroyVBD(ctx, c, v); err != nil {
		t.Errorf("second DestroyVBD = %v, want nil", err)
	}
	if err := AddVBD(ctx, c, stubVBD); err != nil {
		t.Errorf("AddVBD after DestroyVBD = %v", err)
	}
	// DevID may come from Vdev.
	if err := DestroyVBD(ctx, c, VBD{FrontendDom: 4, Vdev: "hdc", Type: TypePhy}); err != nil {
		t.Errorf("DestroyVBD by vdev = %v", err)
	}
	if exists(t, c, v.LibxlPath()) {
		t.Errorf("DestroyVBD by vdev left %s", v.LibxlPath())
	}
	if err := DestroyVBD(ctx, c, VBD{FrontendDom: 4, DevID: 5632, Type: "tap"}); err == nil {
		t.Errorf("DestroyVBD of an unknown type = nil error")
	}
}

// TestVBDCycleUnderConflicts runs the detach/attach cycle of a cd change while the server
// fails half the commits with EAGAIN: every transaction must be retried to completion.
func TestVBDCycleUnderConflicts(t *testing.T) {
	srv, _, c := startXenstored(t)
	ctx := testCtx(t)
	srv.SetFaults(xenstored.Faults{AgainRatio: 0.5})
	v := mustNormalize(t, stubVBD)
	for i := range 5 {
		if err := AddVBD(ctx, c, stubVBD); err != nil {
			t.Fatalf("round %d: AddVBD = %v", i, err)
		}
		if err := RemoveVBD(ctx, c, v.BackendPath()); err != nil {
			t.Fatalf("round %d: RemoveVBD = %v", i, err)
		}
		if got := mustRead(t, c, v.BackendPath()+"/state"); got != "5" {
			t.Fatalf("round %d: state = %q, want 5", i, got)
		}
		if err := DestroyVBD(ctx, c, v); err != nil {
			t.Fatalf("round %d: DestroyVBD = %v", i, err)
		}
	}
	srv.SetFaults(xenstored.Faults{})
	if st := srv.Stats(); st.InjectedAgain == 0 || c.Stats().Retries == 0 {
		t.Fatalf("no commit was refused (server injected %d, client retried %d): the test tested nothing",
			st.InjectedAgain, c.Stats().Retries)
	}
	if exists(t, c, v.LibxlPath()) {
		t.Errorf("after the cycles, %s exists", v.LibxlPath())
	}
}

// xenstoreLsLine is one line of `xenstore-ls -f -p`: path = "value" . . . (perms).
var xenstoreLsLine = regexp.MustCompile(`^(/\S*) = "(.*)"[ .]*\((.*)\)$`)

// TestAddVBDXenstoreLs reads what AddVBD wrote with Debian's xenstore-ls, the way an
// operator would look at it, and checks it is the same tree.
func TestAddVBDXenstoreLs(t *testing.T) {
	bin := testenv.RequireCommand(t, "xenstore-ls", "xenstore-utils")
	_, sock, c := startXenstored(t)
	ctx := testCtx(t)
	if err := AddVBD(ctx, c, stubVBD); err != nil {
		t.Fatal(err)
	}
	for _, v := range []VBD{stubVBD} {
		v = mustNormalize(t, v)
		for _, root := range []string{v.BackendPath(), v.FrontendPath(), v.LibxlPath()} {
			want := dumpTree(t, c, root)[1:] // xenstore-ls lists below the root
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			cmd := exec.CommandContext(cctx, bin, "-f", "-p", root)
			cmd.Env = append(os.Environ(), "XENSTORED_PATH="+sock)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			cancel()
			if err != nil {
				t.Fatalf("xenstore-ls %s: %v: %s", root, err, stderr.String())
			}
			got := map[string]node{}
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				m := xenstoreLsLine.FindStringSubmatch(sc.Text())
				if m == nil {
					t.Fatalf("xenstore-ls line %q not understood", sc.Text())
				}
				got[m[1]] = node{m[1], m[2], m[3]}
			}
			if len(got) != len(want) {
				t.Errorf("xenstore-ls %s: %d nodes, want %d:\n%s", root, len(got), len(want), out)
			}
			for _, w := range want {
				if g, ok := got[w.path]; !ok || g != w {
					t.Errorf("xenstore-ls %s: %+v, want %+v", w.path, g, w)
				}
			}
		}
	}
}

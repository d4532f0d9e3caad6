package xensim

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cdswap/cdswap/internal/xensim/simqemu"
)

// Kind is how a guest's device model runs.
type Kind string

// The guest kinds.
const (
	// KindStubdom is qemu-xen in a Linux stub domain: the cdrom is a phy vbd of the stub
	// domain and the stub domain add-fd's it to its QEMU (libxl's path since Xen 4.20).
	KindStubdom Kind = "stubdom"
	// KindDom0 is qemu-xen in dom0: the cdrom is a qdisk backend and the toolstack add-fd's
	// the image itself.
	KindDom0 Kind = "dom0"
	// KindTraditional is qemu-xen-traditional (qemu-dm): no QMP socket, which the job refuses.
	KindTraditional Kind = "traditional"
)

// ParseKind parses a kind name: stubdom, dom0 or traditional (trad).
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "stubdom", "stub":
		return KindStubdom, nil
	case "dom0":
		return KindDom0, nil
	case "traditional", "trad":
		return KindTraditional, nil
	}
	return "", fmt.Errorf("guest kind %q: want stubdom, dom0 or traditional: %w", s, ErrBadConfig)
}

// DMVersion is the value libxl keeps in /libxl/<domid>/dm-version for the kind.
func (k Kind) DMVersion() string {
	if k == KindTraditional {
		return "qemu_xen_traditional"
	}
	return "qemu_xen"
}

// Limits of a host. Domain ids at or above DOMID_FIRST_RESERVED (0x7FF0, xen.h) are special,
// and a stubdom guest takes two ids, so MaxDomID bounds the count; each real QEMU costs
// memory, so Start also bounds the count of real QEMUs by MemAvailable.
const (
	MaxDomID = 0x7FF0 - 1 // 32751
	// MaxGuests bounds the guests of one host, whatever their kind: xenstored and the sockets
	// of thousands of guests are untested ground.
	MaxGuests = 4096
	// RealQEMUCost is the memory one idle real QEMU guest is budgeted: Debian's QEMU 7.2
	// with simqemu's small TCG PC measured 41 MiB RSS (about 20 MiB PSS, the binary and
	// libraries being shared) on 2026-11-28; the budget leaves some room.
	RealQEMUCost = 48 << 20
)

// Defaults of Config.
const (
	DefaultHostName   = "sim0"
	DefaultAgentDelay = 100 * time.Millisecond
	// DefaultMedium names the ISO (in DIR/isos) each guest starts with when its DomainSpec
	// says nothing.
	DefaultMedium = "debian-netinst.iso"
	// EmptyMedium as a DomainSpec.InitialMedium starts the guest with an empty drive.
	EmptyMedium = "empty"
)

// CDROMVdev and CDROMDevID are the one cdrom every simulated guest has: hdc, devid 5632
// ((22<<8) | (0<<6) | 0, libxl__device_disk_dev_number).
const (
	CDROMVdev  = "hdc"
	CDROMDevID = 5632
)

// QEMU modes, the simqemu.Mode values Config.QEMU and DomainSpec.QEMU take.
const (
	QEMUAuto = simqemu.ModeAuto // real when qemu-system-x86_64 is installed, else fake
	QEMUReal = simqemu.ModeReal // qemu-system-x86_64
	QEMUFake = simqemu.ModeFake // the qmptest fake, in process
)

// ErrBadConfig is wrapped by every error about a Config or a flag value that cannot work.
var ErrBadConfig = errors.New("bad xensim configuration")

// ErrInUse is wrapped by Start when another xensim holds DIR.
var ErrInUse = errors.New("xensim folder in use")

// ErrNoSuchDomain is returned for a domain name or id the host does not have.
var ErrNoSuchDomain = errors.New("no such domain")

// DomainSpec describes one guest to make.
type DomainSpec struct {
	// Name is the domain's name (default "<kind>-<n>", e.g. "stubdom-1"); unique, and made of
	// letters, digits, '-', '_' and '.'.
	Name string `json:"name"`
	// Kind is the device model kind (default KindStubdom).
	Kind Kind `json:"kind"`
	// InitialMedium is the medium in the cdrom at start: "" means DefaultMedium, EmptyMedium an
	// empty drive, a bare file name a file in DIR/isos, else a path to an existing file.
	InitialMedium string `json:"initial_medium,omitempty"`
	// QEMU overrides Config.QEMU for this guest ("" = Config.QEMU).
	QEMU simqemu.Mode `json:"qemu,omitempty"`
}

// Config says what host to simulate. The zero value works: a host "sim0" in a new temporary
// folder with one guest of each kind, real QEMU when installed.
type Config struct {
	// Dir is the host's folder (default: a new folder under os.TempDir(), removed by Close).
	// Unix socket paths must stay below 108 bytes, so keep it short.
	Dir string
	// HostName is the dom0 host's name (default DefaultHostName), the worker's --host.
	HostName string
	// ISODir is the folder of the ISO images (default DIR/isos, made anew at every start).
	// Hosts given the same ISODir share one library, as a fleet's shared ISO storage does, so
	// that one medium path is valid on every host: each makes the images missing there and
	// leaves those present as they are (another host's guest may be reading them), safely
	// when several start at once. No host removes it.
	ISODir string
	// Domains lists the guests to make, in domid order. When empty, StubdomGuests,
	// Dom0Guests and TradGuests say how many of each kind; when those are all zero too, one
	// guest of each kind is made.
	Domains []DomainSpec
	// StubdomGuests, Dom0Guests and TradGuests count guests of each kind (used only when
	// Domains is empty).
	StubdomGuests, Dom0Guests, TradGuests int
	// QEMU chooses the guests' QEMU: QEMUReal, QEMUFake or QEMUAuto (default:
	// real when qemu-system-x86_64 is installed). A stubdom guest whose QEMU would be real
	// gets the fake when no read-only loop device can be made here, and the host logs why.
	QEMU simqemu.Mode
	// AgentDelay is how long a stub domain agent waits after its vbd connects before it
	// add-fd's the device (default DefaultAgentDelay; negative means no delay).
	AgentDelay time.Duration
	// Faults are the fault knobs in force from the start (default none).
	Faults Faults
	// Logger receives the host's log (default: discard).
	Logger *slog.Logger
}

// resolved is a Config with its defaults filled in and its guests expanded.
type resolved struct {
	Config
	tempDir bool // Dir was made by Start and is removed by Close
}

// expandDomains returns the guest list a Config describes, with default names and kinds.
func (c *Config) expandDomains() ([]DomainSpec, error) {
	specs := append([]DomainSpec(nil), c.Domains...)
	if len(specs) == 0 {
		if c.StubdomGuests < 0 || c.Dom0Guests < 0 || c.TradGuests < 0 {
			return nil, fmt.Errorf("guest counts %d stubdom, %d dom0, %d traditional: counts cannot be negative: %w",
				c.StubdomGuests, c.Dom0Guests, c.TradGuests, ErrBadConfig)
		}
		s, d, t := c.StubdomGuests, c.Dom0Guests, c.TradGuests
		if s+d+t == 0 {
			s, d, t = 1, 1, 1
		}
		if s+d+t > MaxGuests {
			return nil, fmt.Errorf("%d guests: at most %d fit on one simulated host: %w", s+d+t, MaxGuests, ErrBadConfig)
		}
		for i := 1; i <= s; i++ {
			specs = append(specs, DomainSpec{Kind: KindStubdom})
		}
		for i := 1; i <= d; i++ {
			specs = append(specs, DomainSpec{Kind: KindDom0})
		}
		for i := 1; i <= t; i++ {
			specs = append(specs, DomainSpec{Kind: KindTraditional})
		}
	}
	if len(specs) > MaxGuests {
		return nil, fmt.Errorf("%d guests: at most %d fit on one simulated host: %w", len(specs), MaxGuests, ErrBadConfig)
	}
	count := map[Kind]int{}
	names := map[string]bool{}
	ids := 1 // Domain-0 has id 0
	for i := range specs {
		sp := &specs[i]
		if sp.Kind == "" {
			sp.Kind = KindStubdom
		}
		k, err := ParseKind(string(sp.Kind))
		if err != nil {
			return nil, fmt.Errorf("domain %d: %w", i+1, err)
		}
		sp.Kind = k
		count[k]++
		if sp.Name == "" {
			sp.Name = fmt.Sprintf("%s-%d", k, count[k])
		}
		if err := checkName(sp.Name); err != nil {
			return nil, err
		}
		if names[sp.Name] || names[sp.Name+"-dm"] || strings.HasSuffix(sp.Name, "-dm") && names[strings.TrimSuffix(sp.Name, "-dm")] {
			return nil, fmt.Errorf("domain name %q is used twice (a stubdom guest's stub domain is named <guest>-dm): %w", sp.Name, ErrBadConfig)
		}
		names[sp.Name] = true
		if sp.QEMU != "" {
			if _, err := ParseQEMUMode(string(sp.QEMU)); err != nil {
				return nil, fmt.Errorf("domain %s: %w", sp.Name, err)
			}
		}
		ids++
		if k == KindStubdom {
			ids++
		}
	}
	if ids-1 > MaxDomID {
		return nil, fmt.Errorf("%d guests need %d domain ids (a stubdom guest takes two), but domids stop at %d (DOMID_FIRST_RESERVED is 32752): %w",
			len(specs), ids-1, MaxDomID, ErrBadConfig)
	}
	return specs, nil
}

func checkName(name string) error {
	if len(name) > 64 {
		return fmt.Errorf("domain name %q is longer than 64 characters: %w", name, ErrBadConfig)
	}
	for _, r := range name {
		if !nameChar(r) {
			return fmt.Errorf("domain name %q: use letters, digits, '-', '_' and '.': %w", name, ErrBadConfig)
		}
	}
	if name == "" || name == "Domain-0" || name[0] == '-' {
		return fmt.Errorf("domain name %q is not allowed: %w", name, ErrBadConfig)
	}
	return nil
}

// ParseQEMUMode parses real, fake or auto ("" means auto).
func ParseQEMUMode(s string) (simqemu.Mode, error) {
	switch simqemu.Mode(strings.ToLower(strings.TrimSpace(s))) {
	case "", QEMUAuto:
		return QEMUAuto, nil
	case QEMUReal:
		return QEMUReal, nil
	case QEMUFake:
		return QEMUFake, nil
	}
	return "", fmt.Errorf("QEMU mode %q: want real, fake or auto: %w", s, ErrBadConfig)
}

// resolve fills in a Config's defaults and checks it, before anything is made.
func resolve(cfg Config) (*resolved, []DomainSpec, error) {
	r := &resolved{Config: cfg}
	if r.HostName == "" {
		r.HostName = DefaultHostName
	}
	if err := checkHostName(r.HostName); err != nil {
		return nil, nil, err
	}
	mode, err := ParseQEMUMode(string(r.QEMU))
	if err != nil {
		return nil, nil, err
	}
	r.QEMU = mode
	if r.AgentDelay == 0 {
		r.AgentDelay = DefaultAgentDelay
	} else if r.AgentDelay < 0 {
		r.AgentDelay = 0
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if err := r.Faults.check(); err != nil {
		return nil, nil, err
	}
	specs, err := r.expandDomains()
	if err != nil {
		return nil, nil, err
	}
	if r.Dir != "" {
		abs, err := filepath.Abs(r.Dir)
		if err != nil {
			return nil, nil, fmt.Errorf("folder %q: %w: %w", r.Dir, err, ErrBadConfig)
		}
		r.Dir = abs
		if err := checkSocketRoom(r.Dir); err != nil {
			return nil, nil, err
		}
	}
	if r.ISODir != "" {
		abs, err := filepath.Abs(r.ISODir)
		if err != nil {
			return nil, nil, fmt.Errorf("ISO folder %q: %w: %w", r.ISODir, err, ErrBadConfig)
		}
		r.ISODir = abs
	}
	return r, specs, nil
}

func checkHostName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("host name %q: want 1 to 64 characters: %w", name, ErrBadConfig)
	}
	for _, r := range name {
		if !nameChar(r) {
			return fmt.Errorf("host name %q: use letters, digits, '-', '_' and '.': %w", name, ErrBadConfig)
		}
	}
	return nil
}

// longestSocket is the longest socket name under DIR: run/stubdom-cdrom.<domid>.qmp with a
// five-digit domid.
const longestSocket = len("/run/stubdom-cdrom.32751.qmp")

// checkSocketRoom refuses a folder whose sockets would not fit sockaddr_un.sun_path.
func checkSocketRoom(dir string) error {
	if len(dir)+longestSocket >= 108 {
		return fmt.Errorf("folder %q is too long for unix sockets (%d bytes; the sockets under it need it below %d): use a shorter --dir: %w",
			dir, len(dir), 108-longestSocket, ErrBadConfig)
	}
	return nil
}

// memAvailable reads MemAvailable from /proc/meminfo, in bytes (0 when unknown).
func memAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// nameChar reports whether r may appear in a host or domain name: a letter, a digit, '-',
// '_' or '.'.
func nameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
}

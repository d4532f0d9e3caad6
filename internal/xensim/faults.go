package xensim

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Faults are the host's fault knobs. The zero value breaks nothing.
type Faults struct {
	// AgainRatio is the share (0..1) of xenstore transaction commits that xenstored answers
	// EAGAIN although nothing conflicted.
	AgainRatio float64 `json:"again_ratio"`
	// All applies to every guest that has no entry in Domains.
	All DomainFaults `json:"all"`
	// Domains holds per-guest knobs by guest name; an entry replaces All for that guest.
	Domains map[string]DomainFaults `json:"domains,omitempty"`
}

// DomainFaults are the knobs of one guest.
type DomainFaults struct {
	// NeverAddFD: the stub domain never add-fd's its new vbd (libxl then polls query-fdsets
	// until its 40 s timeout).
	NeverAddFD bool `json:"never_add_fd"`
	// AddFDDelay: the stub domain add-fd's this much later than Config.AgentDelay.
	AddFDDelay Duration `json:"add_fd_delay"`
	// AddFDTwice: the stub domain add-fd's every new vbd twice, into two fdsets with the same
	// opaque.
	AddFDTwice bool `json:"add_fd_twice"`
	// NeverClose: blkback never moves a vbd of this guest (or of its stub domain) to Closed.
	NeverClose bool `json:"never_close"`
	// HotplugFails: the block hotplug script fails for every new vbd of this guest or of its
	// stub domain (hotplug-status "error").
	HotplugFails bool `json:"hotplug_fails"`
	// DropAfter: the guest's QMP connection drops right after the next reply to this command
	// (one shot, armed each time it is set; Faults reports the last value set).
	DropAfter string `json:"drop_after,omitempty"`
	// LockTray: the guest OS holds the tray locked (fake QEMU only: a real QEMU runs no guest
	// OS that could lock it).
	LockTray bool `json:"lock_tray"`
	// Paused: the guest is paused (QMP stop), as `xl pause` leaves it.
	Paused bool `json:"paused"`
	// KillQEMU: the guest's QEMU is killed (SIGKILL for a real one: its QMP socket file stays
	// and refuses connections, and its recorded pid is dead; the fake stops and its sockets
	// vanish). One way: a killed QEMU stays dead until the host stops.
	KillQEMU bool `json:"kill_qemu"`
}

// Duration is a time.Duration that reads and writes JSON as a Go duration string ("150ms").
type Duration time.Duration

// MarshalJSON writes the duration as a string such as "150ms".
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string, or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration %s: want a string such as \"150ms\"", b)
	}
	*d = Duration(n)
	return nil
}

// For returns the knobs in force for the guest named name.
func (f Faults) For(name string) DomainFaults {
	if df, ok := f.Domains[name]; ok {
		return df
	}
	return f.All
}

// clone returns a deep copy.
func (f Faults) clone() Faults {
	c := f
	if f.Domains != nil {
		c.Domains = make(map[string]DomainFaults, len(f.Domains))
		for k, v := range f.Domains {
			c.Domains[k] = v
		}
	}
	return c
}

func (f Faults) check() error {
	if f.AgainRatio < 0 || f.AgainRatio > 1 || f.AgainRatio != f.AgainRatio {
		return fmt.Errorf("again-ratio %v: want a share between 0 and 1: %w", f.AgainRatio, ErrBadConfig)
	}
	check := func(who string, d DomainFaults) error {
		if d.AddFDDelay < 0 {
			return fmt.Errorf("%s: add-fd-delay %v cannot be negative: %w", who, time.Duration(d.AddFDDelay), ErrBadConfig)
		}
		return nil
	}
	if err := check("all guests", f.All); err != nil {
		return err
	}
	for name, d := range f.Domains {
		if err := check(name, d); err != nil {
			return err
		}
	}
	return nil
}

// Knob names, as SetFault, the control socket, `xensim ctl set` and `xensim --fault` take
// them.
const (
	KnobAgainRatio   = "again-ratio"
	KnobNeverAddFD   = "never-add-fd"
	KnobAddFDDelay   = "add-fd-delay"
	KnobAddFDTwice   = "add-fd-twice"
	KnobNeverClose   = "never-close"
	KnobHotplugFails = "hotplug-fails"
	KnobDropAfter    = "drop-after"
	KnobLockTray     = "lock-tray"
	KnobPaused       = "paused"
	KnobKillQEMU     = "kill-qemu"
)

// Knobs lists the knob names with what each does, for help texts.
var Knobs = []struct{ Name, Value, Help string }{
	{KnobAgainRatio, "0..1", "share of xenstore commits answered EAGAIN (host-wide)"},
	{KnobNeverAddFD, "bool", "the stub domain never add-fd's its new vbd"},
	{KnobAddFDDelay, "duration", "the stub domain add-fd's this much later (e.g. 45s)"},
	{KnobAddFDTwice, "bool", "the stub domain add-fd's every new vbd twice"},
	{KnobNeverClose, "bool", "blkback never reaches Closed on detach"},
	{KnobHotplugFails, "bool", "the block hotplug script fails (hotplug-status error)"},
	{KnobDropAfter, "QMP command", "the QMP connection drops after the next reply to it (one shot)"},
	{KnobLockTray, "bool", "the guest OS locks the tray (fake QEMU only)"},
	{KnobPaused, "bool", "the guest is paused (QMP stop / cont)"},
	{KnobKillQEMU, "bool", "the guest's QEMU is killed, for good (a dead device model)"},
}

// KnobHelp is a one-knob-a-line description of Knobs.
func KnobHelp() string {
	var b strings.Builder
	for _, k := range Knobs {
		fmt.Fprintf(&b, "  %-14s %-12s %s\n", k.Name, k.Value, k.Help)
	}
	return b.String()
}

// setKnob changes one knob of d; the again-ratio knob is host-wide and handled by the caller.
func setKnob(d *DomainFaults, knob, value string) error {
	parseBool := func() (bool, error) {
		if value == "" {
			return true, nil
		}
		v, err := strconv.ParseBool(value)
		if err != nil {
			return false, fmt.Errorf("knob %s=%q: want true or false: %w", knob, value, ErrBadConfig)
		}
		return v, nil
	}
	var err error
	switch knob {
	case KnobNeverAddFD:
		d.NeverAddFD, err = parseBool()
	case KnobAddFDTwice:
		d.AddFDTwice, err = parseBool()
	case KnobNeverClose:
		d.NeverClose, err = parseBool()
	case KnobHotplugFails:
		d.HotplugFails, err = parseBool()
	case KnobLockTray:
		d.LockTray, err = parseBool()
	case KnobPaused:
		d.Paused, err = parseBool()
	case KnobKillQEMU:
		d.KillQEMU, err = parseBool()
	case KnobAddFDDelay:
		v, perr := time.ParseDuration(value)
		if perr != nil || v < 0 {
			return fmt.Errorf("knob %s=%q: want a duration such as 45s: %w", knob, value, ErrBadConfig)
		}
		d.AddFDDelay = Duration(v)
	case KnobDropAfter:
		if strings.ContainsAny(value, " \t\"") {
			return fmt.Errorf("knob %s=%q: want a QMP command name such as blockdev-change-medium: %w", knob, value, ErrBadConfig)
		}
		d.DropAfter = value
	default:
		return fmt.Errorf("unknown fault knob %q: want one of %s: %w", knob, knobNames(), ErrBadConfig)
	}
	return err
}

func knobNames() string {
	var names []string
	for _, k := range Knobs {
		names = append(names, k.Name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// ParseKnob splits "KNOB=VALUE" or "DOMAIN:KNOB=VALUE" (a bare "KNOB" means KNOB=true).
func ParseKnob(s string) (domain, knob, value string, err error) {
	kv := s
	if d, rest, ok := strings.Cut(s, ":"); ok && !strings.Contains(d, "=") {
		domain, kv = d, rest
	}
	knob, value, _ = strings.Cut(kv, "=")
	knob = strings.TrimSpace(knob)
	if knob == "" {
		return "", "", "", fmt.Errorf("fault %q: want KNOB=VALUE or DOMAIN:KNOB=VALUE: %w", s, ErrBadConfig)
	}
	return domain, knob, strings.TrimSpace(value), nil
}

// Set changes one knob, named as in Knobs, for the guest named domain, or in All when domain
// is "" (again-ratio is host-wide and takes no domain). A guest without its own entry gets
// one, starting from All. Names are not checked against a host here; Host.SetFaults does.
func (f *Faults) Set(domain, knob, value string) error {
	if knob == KnobAgainRatio {
		if domain != "" {
			return fmt.Errorf("knob %s is host-wide: give no domain: %w", knob, ErrBadConfig)
		}
		r, err := strconv.ParseFloat(value, 64)
		if err != nil || r < 0 || r > 1 {
			return fmt.Errorf("knob %s=%q: want a share between 0 and 1: %w", knob, value, ErrBadConfig)
		}
		f.AgainRatio = r
		return nil
	}
	if domain == "" {
		return setKnob(&f.All, knob, value)
	}
	df := f.For(domain)
	if err := setKnob(&df, knob, value); err != nil {
		return err
	}
	if f.Domains == nil {
		f.Domains = map[string]DomainFaults{}
	}
	f.Domains[domain] = df
	return nil
}

// String lists the knobs that differ from the zero value, as KNOB=VALUE words ("none" when
// nothing is broken).
func (d DomainFaults) String() string {
	var ws []string
	add := func(on bool, knob, v string) {
		if on {
			ws = append(ws, knob+"="+v)
		}
	}
	add(d.NeverAddFD, KnobNeverAddFD, "true")
	add(d.AddFDDelay != 0, KnobAddFDDelay, time.Duration(d.AddFDDelay).String())
	add(d.AddFDTwice, KnobAddFDTwice, "true")
	add(d.NeverClose, KnobNeverClose, "true")
	add(d.HotplugFails, KnobHotplugFails, "true")
	add(d.DropAfter != "", KnobDropAfter, d.DropAfter)
	add(d.LockTray, KnobLockTray, "true")
	add(d.Paused, KnobPaused, "true")
	add(d.KillQEMU, KnobKillQEMU, "true")
	if len(ws) == 0 {
		return "none"
	}
	return strings.Join(ws, " ")
}

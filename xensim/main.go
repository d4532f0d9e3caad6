// Command xensim runs a simulated Xen dom0 host (package internal/xensim): our xenstored, a
// QEMU per guest (real qemu-system-x86_64 or the fake), blkback and the stub domain agents,
// laid out under one folder, until it is interrupted.
//
//	xensim --dir /tmp/xs0 --host sim0 --domains 4
//	xensim ctl --dir /tmp/xs0 set never-add-fd=true --domain stubdom-1
//	xensim bench --guests 1,10,50
//
// It prints the environment to use (export XENSTORED_PATH=...) and the flags that point a
// cdswap-worker at the host; --json prints a summary of the host for scripts instead. Bad
// input exits with status 2, other failures with 1.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cdswap/cdswap/internal/cmdexit"
	"github.com/cdswap/cdswap/internal/xensim"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program, returning the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "xensim: %v\n", err)
	// A run refused for what it was asked (a bad config, a folder in use, an unknown
	// domain) is bad input too.
	if cmdexit.IsRunFailure(err) && !errors.Is(err, xensim.ErrBadConfig) && !errors.Is(err, xensim.ErrInUse) &&
		!errors.Is(err, xensim.ErrNoSuchDomain) && !errors.Is(err, xensim.ErrRefused) {
		return 1
	}
	return 2
}

// hostFlags are the flags that describe a host.
type hostFlags struct {
	dir        string
	host       string
	isos       string
	domains    int
	stubdom    int
	dom0       int
	trad       int
	qemu       string
	agentDelay time.Duration
	faults     []string
	json       bool
	logLevel   string
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	var f hostFlags
	root := &cobra.Command{
		Use:   "xensim",
		Short: "Run a simulated Xen dom0 host for cdswap",
		Long: `xensim runs a simulated Xen dom0: an in-memory xenstored (Debian's xenstore-utils work
against it with XENSTORED_PATH), a QEMU per guest with libxl's QMP socket, blkback with the
block hotplug script, and the stub domains' add-fd agents, all under --dir, until it gets
SIGINT or SIGTERM.

Guests: --domains N makes N guests; those not given a kind by --stubdom, --dom0 and --trad
alternate stubdom and dom0. Without any count it makes one guest of each kind.

Fault knobs (--fault [DOMAIN:]KNOB=VALUE, or at run time with xensim ctl):
` + xensim.KnobHelp(),
		Example: `  xensim --dir /tmp/xs0 --domains 4
  xensim --dir /tmp/xs0 --stubdom 2 --trad 1 --qemu fake --fault stubdom-1:never-add-fd=true
  xensim --dir /tmp/xs0 --json > /tmp/xs0.json &
  xensim --dir /tmp/xs1 --host sim1 --isos /tmp/isos & xensim --dir /tmp/xs2 --host sim2 --isos /tmp/isos &`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: cmdexit.RunE(func(cmd *cobra.Command, _ []string) error {
			return runHost(cmd.Context(), f, stdout, stderr)
		}),
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(stdout)
	root.SetErr(stderr)
	fl := root.Flags()
	fl.StringVar(&f.dir, "dir", "", "the host's folder (default /tmp/xensim-<host>)")
	fl.StringVar(&f.host, "host", xensim.DefaultHostName, "the dom0 host's name, the worker's --host")
	fl.StringVar(&f.isos, "isos", "", "an ISO library shared with other hosts: its images are made there if missing, and the worker's --iso-root (default <dir>/isos, this host's own)")
	fl.IntVar(&f.domains, "domains", 0, "number of guests (0: the sum of --stubdom, --dom0 and --trad)")
	fl.IntVar(&f.stubdom, "stubdom", 0, "guests with qemu-xen in a Linux stub domain")
	fl.IntVar(&f.dom0, "dom0", 0, "guests with qemu-xen in dom0")
	fl.IntVar(&f.trad, "trad", 0, "guests with qemu-xen-traditional (no QMP, refused by cdswap)")
	fl.StringVar(&f.qemu, "qemu", "auto", "guest QEMU: real, fake or auto (real when qemu-system-x86_64 is installed)")
	fl.DurationVar(&f.agentDelay, "agent-delay", xensim.DefaultAgentDelay, "how long a stub domain waits before it add-fd's a new vbd")
	fl.StringArrayVar(&f.faults, "fault", nil, "a fault knob in force from the start, [DOMAIN:]KNOB=VALUE (repeatable)")
	fl.BoolVar(&f.json, "json", false, "print a JSON summary of the host (domains, sockets, worker flags) instead of the text")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level on stderr: debug, info, warn or error")

	root.AddCommand(newCtl(stdout), newBench(stdout, stderr))
	return root
}

// config turns the flags into a xensim.Config.
func (f hostFlags) config(logger *slog.Logger) (xensim.Config, error) {
	cfg := xensim.Config{Dir: f.dir, HostName: f.host, ISODir: f.isos, AgentDelay: f.agentDelay, Logger: logger}
	if cfg.Dir == "" {
		cfg.Dir = "/tmp/xensim-" + f.host
	}
	mode, err := xensim.ParseQEMUMode(f.qemu)
	if err != nil {
		return cfg, cmdexit.Usagef("--qemu %q: want real, fake or auto", f.qemu)
	}
	cfg.QEMU = mode
	if f.agentDelay < 0 {
		return cfg, cmdexit.Usagef("--agent-delay %v: cannot be negative", f.agentDelay)
	}
	if f.agentDelay == 0 {
		cfg.AgentDelay = -1 // no delay at all, not the default
	}
	for name, n := range map[string]int{"--domains": f.domains, "--stubdom": f.stubdom, "--dom0": f.dom0, "--trad": f.trad} {
		if n < 0 {
			return cfg, cmdexit.Usagef("%s %d: cannot be negative", name, n)
		}
	}
	s, d, t := f.stubdom, f.dom0, f.trad
	if f.domains > 0 {
		rest := f.domains - s - d - t
		if rest < 0 {
			return cfg, cmdexit.Usagef("--domains %d is fewer than --stubdom %d + --dom0 %d + --trad %d", f.domains, s, d, t)
		}
		s += (rest + 1) / 2
		d += rest / 2
	}
	if s+d+t > xensim.MaxGuests {
		return cfg, cmdexit.Usagef("%d guests do not fit: one simulated host takes at most %d (and domids stop at %d, two per stubdom guest)",
			s+d+t, xensim.MaxGuests, xensim.MaxDomID)
	}
	cfg.StubdomGuests, cfg.Dom0Guests, cfg.TradGuests = s, d, t
	for _, spec := range f.faults {
		dom, knob, value, err := xensim.ParseKnob(spec)
		if err != nil {
			return cfg, cmdexit.UsageError{Err: err}
		}
		if err := cfg.Faults.Set(dom, knob, value); err != nil {
			return cfg, cmdexit.UsageError{Err: fmt.Errorf("--fault %s: %w", spec, err)}
		}
	}
	return cfg, nil
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, cmdexit.Usagef("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func runHost(ctx context.Context, f hostFlags, stdout, stderr io.Writer) error {
	logger, err := newLogger(f.logLevel, stderr)
	if err != nil {
		return err
	}
	cfg, err := f.config(logger)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	h, err := xensim.Start(startCtx, cfg)
	cancel()
	if err != nil {
		return err
	}
	if f.json {
		if err := printJSON(stdout, h.Summary()); err != nil {
			h.Close()
			return err
		}
	} else {
		printText(stdout, h)
	}
	<-ctx.Done()
	fmt.Fprintln(stderr, "xensim: stopping")
	if err := h.Close(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	fmt.Fprintln(stderr, "xensim: stopped")
	return nil
}

func printText(w io.Writer, h *xensim.Host) {
	doms := h.Domains()
	fmt.Fprintf(w, "xensim: host %s up in %v on %s with %d guests\n", h.Name(), h.StartupTime().Round(time.Millisecond), h.Dir(), len(doms))
	for _, e := range h.Env() {
		fmt.Fprintf(w, "export %s\n", e)
	}
	fmt.Fprintf(w, "worker flags: %s\n", strings.Join(h.WorkerFlags(), " "))
	fmt.Fprintf(w, "isos: %s\n", strings.Join(h.ISOs(), " "))
	fmt.Fprintf(w, "%-6s %-16s %-12s %-8s %-5s %s\n", "DOMID", "NAME", "KIND", "STUBDOM", "QEMU", "MEDIUM")
	for _, d := range doms {
		stub := "-"
		if d.StubDomID != 0 {
			stub = fmt.Sprint(d.StubDomID)
		}
		medium := d.Medium
		if medium == "" {
			medium = "(empty)"
		}
		fmt.Fprintf(w, "%-6d %-16s %-12s %-8s %-5s %s\n", d.DomID, d.Name, d.Kind, stub, d.QEMU, medium)
	}
	fmt.Fprintf(w, "fault knobs: xensim ctl --dir %s show | set KNOB=VALUE [--domain NAME]\n", h.Dir())
	fmt.Fprintln(w, "running: stop with Ctrl-C (SIGINT) or SIGTERM")
}

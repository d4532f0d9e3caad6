package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/cdswap/cdswap/internal/cmdexit"
	"github.com/cdswap/cdswap/internal/xensim"
)

// ctlTimeout bounds one control request (pausing a real QEMU is the slowest).
const ctlTimeout = 30 * time.Second

func newCtl(stdout io.Writer) *cobra.Command {
	var dir, host, domain string
	var asJSON bool
	ctl := &cobra.Command{
		Use:   "ctl",
		Short: "Show or set the fault knobs of a running xensim, and show its medium counters",
		Long: `ctl talks to the xensim running on --dir through its control socket (DIR/control.sock).

show prints the knobs in force and the medium counters: for each drive, how many times its
QEMU carried out blockdev-change-medium and eject, and how many drives have their medium out
(ejected, not yet changed) now and had at most at once, counted from QEMU's own replies.

Knobs:
` + xensim.KnobHelp(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	ctl.PersistentFlags().StringVar(&dir, "dir", "", "the running host's folder (default /tmp/xensim-<host>)")
	ctl.PersistentFlags().StringVar(&host, "host", xensim.DefaultHostName, "the host's name, to find its default folder")
	ctl.PersistentFlags().BoolVar(&asJSON, "json", false, "print as JSON")
	folder := func() string {
		if dir != "" {
			return dir
		}
		return "/tmp/xensim-" + host
	}

	show := &cobra.Command{
		Use:   "show",
		Short: "Print the knobs in force and the medium counters",
		Args:  cobra.NoArgs,
		RunE: cmdexit.RunE(func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), ctlTimeout)
			defer cancel()
			c := xensim.NewControl(folder())
			f, err := c.Faults(ctx)
			if err != nil {
				return err
			}
			m, err := c.Media(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				// The knobs stay at the top level, as before the counters existed.
				return printJSON(stdout, struct {
					xensim.Faults
					Media xensim.MediaCounts `json:"media"`
				}{f, m})
			}
			if err := printFaults(stdout, f, false); err != nil {
				return err
			}
			printMedia(stdout, m)
			return nil
		}),
	}
	resetMedia := &cobra.Command{
		Use:   "reset-media",
		Short: "Zero the medium counters (drives out stay out) and print them as they were",
		Args:  cobra.NoArgs,
		RunE: cmdexit.RunE(func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), ctlTimeout)
			defer cancel()
			m, err := xensim.NewControl(folder()).ResetMedia(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(stdout, m)
			}
			printMedia(stdout, m)
			return nil
		}),
	}
	set := &cobra.Command{
		Use:   "set KNOB=VALUE...",
		Short: "Set knobs, for every guest or for --domain",
		Example: `  xensim ctl --dir /tmp/xs0 set never-add-fd=true --domain stubdom-1
  xensim ctl --dir /tmp/xs0 set again-ratio=0.3
  xensim ctl --dir /tmp/xs0 set drop-after=blockdev-change-medium --domain 3`,
		Args: cobra.MinimumNArgs(1),
		RunE: cmdexit.RunE(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), ctlTimeout)
			defer cancel()
			c := xensim.NewControl(folder())
			var f xensim.Faults
			for _, a := range args {
				d, knob, value, err := xensim.ParseKnob(a)
				if err != nil {
					return cmdexit.UsageError{Err: err}
				}
				if d == "" {
					d = domain
				}
				if f, err = c.SetFault(ctx, d, knob, value); err != nil {
					return err
				}
			}
			return printFaults(stdout, f, asJSON)
		}),
	}
	set.Flags().StringVar(&domain, "domain", "", "the guest (name or domid) the knobs are for; default every guest")
	ctl.AddCommand(show, set, resetMedia)
	return ctl
}

func printFaults(w io.Writer, f xensim.Faults, asJSON bool) error {
	if asJSON {
		return printJSON(w, f)
	}
	fmt.Fprintf(w, "%s=%v\n", xensim.KnobAgainRatio, f.AgainRatio)
	fmt.Fprintf(w, "all guests: %s\n", f.All)
	names := make([]string, 0, len(f.Domains))
	for n := range f.Domains {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "guest %s: %s\n", n, f.Domains[n])
	}
	return nil
}

// printMedia prints the medium counters: a summary line, then one line per drive.
func printMedia(w io.Writer, m xensim.MediaCounts) {
	at := ""
	if !m.MaxOutAt.IsZero() {
		at = " (" + m.MaxOutAt.Local().Format("15:04:05.000") + ")"
	}
	fmt.Fprintf(w, "media: %d changes, %d ejects; drives out now %d, at most %d%s\n", m.Changes, m.Ejects, m.Out, m.MaxOut, at)
	for _, d := range m.Drives {
		out := ""
		if d.Out {
			out = " out"
		}
		fmt.Fprintf(w, "  %s (%d) %s: changes=%d ejects=%d%s\n", d.Domain, d.DomID, d.Vdev, d.Changes, d.Ejects, out)
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/cdswap/cdswap/internal/xensim"
)

// ctlTimeout bounds one control request (pausing a real QEMU is the slowest).
const ctlTimeout = 30 * time.Second

func newCtl(stdout io.Writer) *cobra.Command {
	var dir, host, domain string
	var asJSON bool
	ctl := &cobra.Command{
		Use:   "ctl",
		Short: "Show or set the fault knobs of a running xensim",
		Long: `ctl talks to the xensim running on --dir through its control socket (DIR/control.sock).

Knobs:
` + xensim.KnobHelp(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	ctl.PersistentFlags().StringVar(&dir, "dir", "", "the running host's folder (default /tmp/xensim-<host>)")
	ctl.PersistentFlags().StringVar(&host, "host", xensim.DefaultHostName, "the host's name, to find its default folder")
	ctl.PersistentFlags().BoolVar(&asJSON, "json", false, "print the knobs as JSON")
	folder := func() string {
		if dir != "" {
			return dir
		}
		return "/tmp/xensim-" + host
	}

	show := &cobra.Command{
		Use:   "show",
		Short: "Print the knobs in force",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), ctlTimeout)
			defer cancel()
			f, err := xensim.NewControl(folder()).Faults(ctx)
			if err != nil {
				return err
			}
			return printFaults(stdout, f, asJSON)
		}),
	}
	set := &cobra.Command{
		Use:   "set KNOB=VALUE...",
		Short: "Set knobs, for every guest or for --domain",
		Example: `  xensim ctl --dir /tmp/xs0 set never-add-fd=true --domain stubdom-1
  xensim ctl --dir /tmp/xs0 set again-ratio=0.3
  xensim ctl --dir /tmp/xs0 set drop-after=blockdev-change-medium --domain 3`,
		Args: cobra.MinimumNArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), ctlTimeout)
			defer cancel()
			c := xensim.NewControl(folder())
			var f xensim.Faults
			for _, a := range args {
				d, knob, value, err := xensim.ParseKnob(a)
				if err != nil {
					return usageError{err}
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
	ctl.AddCommand(show, set)
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

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

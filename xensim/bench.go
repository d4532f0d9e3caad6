package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cdswap/cdswap/internal/cmdexit"
	"github.com/cdswap/cdswap/internal/xensim"
)

// benchTimeout bounds one measured host's start.
const benchTimeout = 5 * time.Minute

func newBench(stdout, stderr io.Writer) *cobra.Command {
	var modes, guests string
	var settle time.Duration
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure start-up time and memory of hosts with 1, 10, 50... guests",
		Long: `bench starts xensim as a user would (this binary, --json, in a fresh folder) once per
QEMU mode and guest count, and reports the time until the host is up, the memory of the
xensim process and of its QEMUs (RSS and PSS, from /proc), and the time to stop. Guests
alternate stubdom and dom0.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: cmdexit.RunE(func(cmd *cobra.Command, _ []string) error {
			var counts []int
			for _, s := range strings.Split(guests, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil || n < 1 {
					return cmdexit.Usagef("--guests %q: want counts such as 1,10,50", guests)
				}
				counts = append(counts, n)
			}
			var ms []string
			for _, m := range strings.Split(modes, ",") {
				m = strings.TrimSpace(m)
				if m != "real" && m != "fake" {
					return cmdexit.Usagef("--qemu %q: want real, fake or real,fake", modes)
				}
				ms = append(ms, m)
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find this binary: %w", err)
			}
			fmt.Fprintf(stdout, "%-5s %6s %10s %12s %12s %12s %14s %8s\n",
				"QEMU", "GUESTS", "START", "XENSIM RSS", "QEMU RSS", "QEMU PSS", "PSS/QEMU", "STOP")
			for _, m := range ms {
				for _, n := range counts {
					r, err := benchOne(cmd.Context(), self, m, n, settle)
					if err != nil {
						return fmt.Errorf("%s QEMU, %d guests: %w", m, n, err)
					}
					// A fake QEMU lives in the xensim process: its memory is in XENSIM RSS.
					rss, pss, per := "-", "-", "-"
					if r.qemus > 0 {
						rss, pss, per = mib(r.qemuRSS), mib(r.qemuPSS), mib(r.qemuPSS/int64(r.qemus))
					}
					fmt.Fprintf(stdout, "%-5s %6d %10v %12s %12s %12s %14s %8v\n", m, n,
						r.start.Round(time.Millisecond), mib(r.selfRSS), rss, pss, per,
						r.stop.Round(time.Millisecond))
				}
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&modes, "qemu", "fake,real", "QEMU modes to measure: real, fake or both")
	cmd.Flags().StringVar(&guests, "guests", "1,10,50", "guest counts to measure")
	cmd.Flags().DurationVar(&settle, "settle", 2*time.Second, "how long to let the host idle before reading memory")
	return cmd
}

type benchResult struct {
	start, stop               time.Duration
	selfRSS, qemuRSS, qemuPSS int64
	qemus                     int
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// benchOne starts one host in a new folder and measures it.
func benchOne(ctx context.Context, self, mode string, n int, settle time.Duration) (benchResult, error) {
	var r benchResult
	dir, err := os.MkdirTemp("", "xsb")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(ctx, benchTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "--dir", filepath.Join(dir, "h"), "--domains", strconv.Itoa(n),
		"--qemu", mode, "--json", "--log-level", "error")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return r, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	var sum xensim.Summary
	if err := json.NewDecoder(bufio.NewReader(out)).Decode(&sum); err != nil {
		return r, fmt.Errorf("read its summary: %w: %s", err, stderr.String())
	}
	r.start = time.Since(t0)
	time.Sleep(settle)
	r.selfRSS = procStatus(cmd.Process.Pid, "VmRSS")
	for _, d := range sum.Domains {
		if d.QEMUPID != 0 {
			r.qemus++
			r.qemuRSS += procStatus(d.QEMUPID, "VmRSS")
			r.qemuPSS += procPSS(d.QEMUPID)
		}
	}
	t1 := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		return r, err
	}
	if err := cmd.Wait(); err != nil {
		return r, fmt.Errorf("stop: %w: %s", err, stderr.String())
	}
	r.stop = time.Since(t1)
	return r, nil
}

// procStatus reads a "kB" field of /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	return kbField(string(b), field+":")
}

// procPSS reads the proportional set size of /proc/<pid>/smaps_rollup, in bytes: shared
// pages (the QEMU binary and libraries) are split between the processes that map them.
func procPSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	return kbField(string(b), "Pss:")
}

func kbField(text, prefix string) int64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			fs := strings.Fields(rest)
			if len(fs) > 0 {
				kb, _ := strconv.ParseInt(fs[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

package simqemu

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cdswap/cdswap/internal/testenv"
)

// Run with, for example:
//
//	go test -run '^$' -bench 'StartQEMU|IdleQEMU' ./internal/xensim/simqemu
//	go test ./internal/xensim/simqemu -run '^$' -bench IdleQEMU/real -benchtime 1x -simqemu.counts=100,200
var (
	benchCounts      = flag.String("simqemu.counts", "1,10,50", "how many QEMUs the benchmarks start at once, comma-separated")
	benchConcurrency = flag.Int("simqemu.concurrency", 4, "how many QEMUs start at the same time")
	benchSettle      = flag.Duration("simqemu.settle", 5*time.Second, "IdleQEMU: wait this long after start before sampling memory")
	benchIdle        = flag.Duration("simqemu.idle", 10*time.Second, "IdleQEMU: measure CPU over this long")
)

func counts(b *testing.B) []int {
	var ns []int
	for _, s := range strings.Split(*benchCounts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		require.NoError(b, err, "-simqemu.counts %q", *benchCounts)
		ns = append(ns, n)
	}
	return ns
}

func benchModes(b *testing.B) []Mode {
	modes := []Mode{ModeFake}
	if testenv.InCI() || hasQEMU() {
		modes = append([]Mode{ModeReal}, modes...)
	} else {
		b.Logf("%s not installed: real QEMUs not measured", DefaultBinary)
	}
	return modes
}

// startMany starts n QEMUs with two monitors each, at most *benchConcurrency at a time, and
// returns them with each one's Start latency.
func startMany(ctx context.Context, b *testing.B, mode Mode, n int) ([]*QEMU, []time.Duration) {
	b.Helper()
	dir := testenv.SocketDir(b)
	qs := make([]*QEMU, n)
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	sem := make(chan struct{}, max(*benchConcurrency, 1))
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			domid := uint32(i + 1)
			cfg := Config{
				Mode: mode, DomID: domid,
				Monitors: []string{
					filepath.Join(dir, fmt.Sprintf("qmp-libxl-%d", domid)),
					filepath.Join(dir, fmt.Sprintf("qmp-agent-%d", domid)),
				},
			}
			start := time.Now()
			qs[i], errs[i] = Start(ctx, cfg)
			lat[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			stopAll(b, qs)
			require.NoError(b, err, "Start QEMU %d of %d", i+1, n)
		}
	}
	return qs, lat
}

func stopAll(b *testing.B, qs []*QEMU) {
	for _, q := range qs {
		if q != nil {
			if err := q.Stop(); err != nil {
				b.Errorf("Stop() = %v", err)
			}
		}
	}
}

// benchEach runs f as a sub-benchmark "<mode>/n=<n>" for every mode and count; a real one
// ends (a failure under CI) when QEMU is missing.
func benchEach(b *testing.B, f func(b *testing.B, mode Mode, n int)) {
	for _, mode := range benchModes(b) {
		for _, n := range counts(b) {
			b.Run(fmt.Sprintf("%s/n=%d", mode, n), func(b *testing.B) {
				if mode == ModeReal {
					testenv.RequireQEMU(b)
				}
				f(b, mode, n)
			})
		}
	}
}

func hasQEMU() bool {
	_, err := exec.LookPath(DefaultBinary)
	return err == nil
}

// BenchmarkStartQEMU measures how long n QEMUs take to start until every monitor answers,
// n at once with bounded concurrency. ns/op is the wall time for all n.
func BenchmarkStartQEMU(b *testing.B) {
	benchEach(b, func(b *testing.B, mode Mode, n int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		var sum, worst time.Duration
		for i := 0; i < b.N; i++ {
			qs, lat := startMany(ctx, b, mode, n)
			b.StopTimer()
			for _, l := range lat {
				sum += l
				worst = max(worst, l)
			}
			stopAll(b, qs)
			b.StartTimer()
		}
		b.ReportMetric(float64(sum.Microseconds())/1000/float64(b.N*n), "ms-start/qemu")
		b.ReportMetric(float64(worst.Microseconds())/1000, "ms-start-max")
	})
}

// BenchmarkIdleQEMU starts n QEMUs, lets them settle, and reports what an idle one costs:
// its memory (VmRSS, RssAnon and PSS, which shares library pages out), its CPU over the idle
// period, and what it costs this process (the proxies, or the whole fake). One iteration
// takes settle + idle; run it with -benchtime 1x.
func BenchmarkIdleQEMU(b *testing.B) {
	benchEach(b, func(b *testing.B, mode Mode, n int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		for i := 0; i < b.N; i++ {
			selfRSS0 := procStatusKB(b, "self", "VmRSS")
			qs, _ := startMany(ctx, b, mode, n)
			time.Sleep(*benchSettle)

			var rss, anon, pss float64
			pids := []string{}
			for _, q := range qs {
				if q.PID() == 0 {
					continue
				}
				pid := strconv.Itoa(q.PID())
				pids = append(pids, pid)
				rss += procStatusKB(b, pid, "VmRSS")
				anon += procStatusKB(b, pid, "RssAnon")
				pss += smapsRollupKB(b, pid, "Pss")
			}
			selfRSS := procStatusKB(b, "self", "VmRSS") - selfRSS0

			cpu0, self0, t0 := cpuTicks(b, pids), selfCPU(), time.Now()
			time.Sleep(*benchIdle)
			cpu1, self1, el := cpuTicks(b, pids), selfCPU(), time.Since(t0)
			stopAll(b, qs)

			nf := float64(n)
			if len(pids) > 0 {
				b.ReportMetric(rss/1024/nf, "MiB-VmRSS/qemu")
				b.ReportMetric(anon/1024/nf, "MiB-RssAnon/qemu")
				b.ReportMetric(pss/1024/nf, "MiB-PSS/qemu")
				b.ReportMetric(100*float64(cpu1-cpu0)/float64(clockTicks)/el.Seconds()/nf, "cpu%/qemu")
			}
			b.ReportMetric(selfRSS/1024/nf, "MiB-self/qemu")
			b.ReportMetric(100*(self1-self0).Seconds()/el.Seconds()/nf, "cpu%-self/qemu")
		}
	})
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat; 100 on Linux.
const clockTicks = 100

// procStatusKB reads a "kB" field of /proc/<pid>/status.
func procStatusKB(b *testing.B, pid, field string) float64 {
	return procKB(b, "/proc/"+pid+"/status", field)
}

// smapsRollupKB reads a "kB" field of /proc/<pid>/smaps_rollup.
func smapsRollupKB(b *testing.B, pid, field string) float64 {
	return procKB(b, "/proc/"+pid+"/smaps_rollup", field)
}

func procKB(b *testing.B, path, field string) float64 {
	f, err := os.Open(path)
	require.NoError(b, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == field {
			n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			require.NoError(b, err, "%s %s", path, field)
			return n
		}
	}
	require.NoError(b, sc.Err())
	b.Fatalf("%s has no %s", path, field)
	return 0
}

// cpuTicks sums utime and stime of the processes, in clock ticks.
func cpuTicks(b *testing.B, pids []string) int64 {
	var sum int64
	for _, pid := range pids {
		data, err := os.ReadFile("/proc/" + pid + "/stat")
		require.NoError(b, err)
		// The command name (field 2) may hold spaces; the fields after ")" are plain.
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		utime, err := strconv.ParseInt(fields[11], 10, 64) // field 14 of the whole line
		require.NoError(b, err)
		stime, err := strconv.ParseInt(fields[12], 10, 64) // field 15
		require.NoError(b, err)
		sum += utime + stime
	}
	return sum
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

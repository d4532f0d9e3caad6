// Command cdswap-worker is the dom0 worker of cdswap: it runs on one Xen host, polls that
// host's Temporal task queue (activities.TaskQueue(--host)) and runs the ChangeMedium and
// ResolveDrive workflows and their activities against the host's xenstored, its guests' QEMU
// monitors and libxl's files. It also polls the batch queue that every worker shares
// (workflows.BatchTaskQueue), where the FleetSwap batches and their plan pages run.
//
//	cdswap-worker --host xen1 --iso-root /srv/isos
//	cdswap-worker --host sim0 --xenstore /tmp/xs0/xenstored.sock --qmp-dir /tmp/xs0/run \
//	    --libxl-dir /tmp/xs0/lib --iso-root /tmp/xs0/isos --address 127.0.0.1:7233
//
// Its defaults are a real dom0's (/var/run/xenstored/socket, /var/run/xen, /var/lib/xen);
// `xensim` prints the flags that point it at a simulated host. It serves media only from
// the --iso-root folders. It checks at start that xenstored answers, the ISO roots exist and
// the Temporal server is reachable, and stops gracefully on SIGINT or SIGTERM (running
// activities get WorkerStopTimeout to finish). Bad flags exit with status 2, other failures
// with 1. With --metrics-listen ADDR it serves Prometheus metrics at ADDR/metrics: the
// Temporal SDK's and cdswap's own (internal/metrics).
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/cmdexit"
	"github.com/cdswap/cdswap/internal/fleetround"
	"github.com/cdswap/cdswap/internal/metrics"
	"github.com/cdswap/cdswap/internal/plan"
	"github.com/cdswap/cdswap/internal/temporalclient"
	"github.com/cdswap/cdswap/internal/xen"
	"github.com/cdswap/cdswap/internal/xs"
	"github.com/cdswap/cdswap/workflows"
)

// Worker tuning (shared/DESIGN.md "Temporal": 8 pollers of each kind cut a step's
// scheduled-to-started hop to a few ms).
const (
	taskPollers       = 8
	workerStopTimeout = 10 * time.Second
	// stickyTimeout is how long a workflow task waits for this worker's sticky queue before
	// any worker of the host may take it: after a crash, that is the stall between the
	// crashed step's retry ending and the swap's next step (the SDK's default is 5 s; 2 s
	// made it most of the recovery time, BENCHMARKS.md). A miss under load only costs a
	// replay of a short history.
	stickyTimeout = 1 * time.Second
	// startTimeout bounds the checks and the connection to Temporal at start.
	startTimeout = 30 * time.Second
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// options are the flags.
type options struct {
	host string
	// temporal reads the connection flags, shared with the CLI, and their environment;
	// serve adds the identity and the logger.
	temporal  *temporalclient.Flags
	xenstore  string
	qmpDir    string
	libxlDir  string
	isoRoots  []string
	rawRoots  []string
	broadRoot bool
	logLevel  string
	logFormat string
	// metricsListen is the address to serve Prometheus metrics on ("" = none).
	metricsListen string
	// grpcGzip compresses the worker's gRPC messages to Temporal, as the SDK does unless told
	// not to (grpcCompression).
	grpcGzip bool
}

// run is the whole program; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	cmd := &cobra.Command{
		Use:   "cdswap-worker --host NAME --iso-root DIR [flags]",
		Short: "Run cdswap's workflows and activities for one Xen dom0 host",
		Long: `cdswap-worker runs on a Xen dom0 host. It polls the host's Temporal task queue
(cdswap-host-<host>) and changes the CD-ROM media of the host's guests, serving media only
from its --iso-root folders. Its defaults are a real dom0's; xensim prints the flags that
point it at a simulated host.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: cmdexit.RunE(func(cmd *cobra.Command, _ []string) error {
			return serve(cmd.Context(), o, stderr)
		}),
	}
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	f := cmd.Flags()
	f.StringVar(&o.host, "host", "", "this dom0 host's name, as operators give it to cdswap (required)")
	o.temporal = temporalclient.AddFlags(f)
	f.StringVar(&o.xenstore, "xenstore", xs.DefaultPath(), "xenstored's socket, or the xenbus device ($XENSTORED_PATH)")
	f.StringVar(&o.qmpDir, "qmp-dir", xen.DefaultRunDir, "libxl's run folder: the qmp-libxl-<domid> sockets and empty-cdrom files")
	f.StringVar(&o.libxlDir, "libxl-dir", xen.DefaultLibDir, "libxl's userdata folder: the domains' JSON configs and lock files")
	f.StringArrayVar(&o.isoRoots, "iso-root", nil, "a folder media may be served from (repeatable; at least one)")
	f.StringArrayVar(&o.rawRoots, "allow-raw-images", nil,
		"an --iso-root whose raw media may be any raw image, not only CD images (ISO 9660, UDF) (repeatable; default none)")
	f.BoolVar(&o.broadRoot, "allow-broad-root", false,
		"accept an --iso-root that is, lies in or holds a system folder (/, /etc, /proc, /var/lib/xen ...), which is refused by default")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. :9464 (default: off)")
	f.BoolVar(&o.grpcGzip, "grpc-gzip", false,
		"compress gRPC messages to and from Temporal with gzip, for a server across a slow link (default: off, they are small)")
	cmd.SetArgs(args)
	cmd.SetContext(ctx)
	err := cmd.Execute()
	code := cmdexit.Code(err)
	if code == cmdexit.OK {
		return code
	}
	fmt.Fprintf(stderr, "cdswap-worker: %v\n", err)
	if code == cmdexit.Usage {
		fmt.Fprintln(stderr, "Run 'cdswap-worker --help' for the flags.")
	}
	return code
}

// check refuses flags that cannot work, before anything is dialled, and returns the
// connection settings the flags and the environment give.
func (o *options) check() (temporalclient.Config, error) {
	switch {
	case o.host == "":
		return temporalclient.Config{}, cmdexit.Usagef("--host is required: the name of this dom0 host, the one operators pass to `cdswap --host`")
	case len(o.isoRoots) == 0:
		return temporalclient.Config{}, cmdexit.Usagef("--iso-root is required: give at least one folder media may be served from (e.g. --iso-root /srv/isos)")
	}
	tc, err := o.temporal.Config(nil)
	if err != nil {
		return temporalclient.Config{}, cmdexit.UsageError{Err: err}
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return temporalclient.Config{}, cmdexit.Usagef("--log-format %q: want text or json", o.logFormat)
	}
	if _, err := parseLevel(o.logLevel); err != nil {
		return temporalclient.Config{}, err
	}
	return tc, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, cmdexit.Usagef("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// newLogger builds the worker's slog logger on w.
func (o *options) newLogger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(o.logLevel)
	hopts := &slog.HandlerOptions{Level: level}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, hopts))
	}
	return slog.New(slog.NewTextHandler(w, hopts))
}

// grpcCompression is the compression of the worker's gRPC messages. The SDK gzips every
// request (and the server its replies) unless told not to; a worker's messages are a few KB,
// to a server in the same site, and gzip cost the worker 5 % and the server 2 % of their CPU
// in the fleet benchmark (`make bench-fleet`), for no time saved. --grpc-gzip turns it back on.
func (o *options) grpcCompression() client.GrpcCompression {
	if o.grpcGzip {
		return &client.GrpcCompressionGzip{}
	}
	return &client.GrpcCompressionNone{}
}

// serve checks the host, connects to Temporal and runs the worker until ctx ends or a
// signal asks it to stop.
func serve(ctx context.Context, o options, stderr io.Writer) error {
	tc, err := o.check()
	if err != nil {
		return err
	}
	log := o.newLogger(stderr)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	// The TLS files are read here, before anything is dialled: a bad one is a bad flag.
	tc.Identity = fmt.Sprintf("cdswap-worker@%s:%d", o.host, os.Getpid())
	tc.Logger = log
	copts, err := tc.Options()
	if err != nil {
		return cmdexit.UsageError{Err: err}
	}
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	acts, err := activities.New(sctx, activities.Config{
		Host:            o.host,
		XenstorePath:    o.xenstore,
		QMPDir:          o.qmpDir,
		LibxlDir:        o.libxlDir,
		ISORoots:        o.isoRoots,
		RawImageRoots:   o.rawRoots,
		AllowBroadRoots: o.broadRoot,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := activities.Close(acts); err != nil {
			log.Warn("Closing the host's connections and locks reported an error", "error", err)
		}
	}()

	interceptors := []interceptor.WorkerInterceptor{activities.NewHeartbeatInterceptor(), stepLog()}
	if o.metricsListen != "" {
		m := metrics.New(o.host)
		defer m.Close()
		mctx, stopMetrics := context.WithCancel(ctx)
		addr, served, err := m.Serve(mctx, o.metricsListen, log)
		if err != nil {
			stopMetrics()
			return cmdexit.UsageError{Err: err}
		}
		defer func() {
			stopMetrics()
			if err := <-served; err != nil {
				log.Warn("The metrics server ended with an error", "error", err)
			}
		}()
		log.Info("serving metrics", "metrics_addr", addr.String(), "path", metrics.Path)
		copts.MetricsHandler = m.SDKHandler()
		interceptors = append(interceptors, activities.NewMetricsInterceptor(m),
			m.WorkflowInterceptor(metrics.Swaps{Types: []string{workflows.ChangeMediumName}, Ended: swapEnd}))
	}

	copts.ConnectionOptions.GrpcCompression = o.grpcCompression()
	c, err := client.DialContext(sctx, copts)
	if err != nil {
		return fmt.Errorf("connect to Temporal at %s (namespace %s): %w: start the server, or fix --address", copts.HostPort, copts.Namespace, err)
	}
	defer c.Close()
	cancel()

	tq := activities.TaskQueue(o.host)
	w := worker.New(c, tq, worker.Options{
		MaxConcurrentWorkflowTaskPollers: taskPollers,
		MaxConcurrentActivityTaskPollers: taskPollers,
		WorkerStopTimeout:                workerStopTimeout,
		StickyScheduleToStartTimeout:     stickyTimeout,
		// Heartbeats let the server retry a regular step whose worker died within seconds
		// (local steps have none: they run again with their workflow task); the step log
		// says when each step starts; the metrics' interceptors time the steps and count
		// the swaps.
		Interceptors: interceptors,
	})
	workflows.Register(w)
	workflows.RegisterInventory(w)
	w.RegisterActivity(acts)
	// Every worker also runs batches (FleetSwap and its plan pages) on the shared batch
	// queue: a batch goes on while any host's worker runs.
	bw := worker.New(c, workflows.BatchTaskQueue, worker.Options{
		MaxConcurrentWorkflowTaskPollers: taskPollers,
		MaxConcurrentActivityTaskPollers: taskPollers,
		WorkerStopTimeout:                workerStopTimeout,
		StickyScheduleToStartTimeout:     stickyTimeout,
	})
	workflows.RegisterFleet(bw)
	bw.RegisterActivity(&plan.PageReader{Client: c})
	bw.RegisterActivityWithOptions((&fleetround.Rounds{Client: c}).FleetRound, activity.RegisterOptions{Name: workflows.FleetRoundName})
	if err := bw.Start(); err != nil {
		return fmt.Errorf("worker for task queue %s: %w", workflows.BatchTaskQueue, err)
	}
	defer bw.Stop()

	log.Info("cdswap-worker serving", "host", o.host, "task_queue", tq, "temporal", copts.HostPort, "namespace", copts.Namespace,
		"xenstore", o.xenstore, "qmp_dir", o.qmpDir, "libxl_dir", o.libxlDir, "iso_roots", o.isoRoots)
	interrupt := make(chan any)
	go func() {
		<-ctx.Done()
		close(interrupt)
	}()
	if err := w.Run(interrupt); err != nil {
		return fmt.Errorf("worker for task queue %s: %w", tq, err)
	}
	log.Info("cdswap-worker stopped", "host", o.host)
	return nil
}

// swapEnd reads how a ChangeMedium run ended, for the metrics: its result, or the result its
// error carries; a run that ended without one (a panic, a cancellation before its first
// step) counts as "canceled" or "error".
func swapEnd(result any, err error) (metrics.SwapEnd, bool) {
	var res workflows.ChangeMediumResult
	switch r := result.(type) {
	case workflows.ChangeMediumResult:
		res = r
	case *workflows.ChangeMediumResult:
		if r != nil {
			res = *r
		}
	}
	if err != nil {
		r, ok := workflows.ResultFromError(err)
		switch {
		case ok:
			res = r
		case temporal.IsCanceledError(err):
			res.Outcome = workflows.OutcomeCanceled
		default:
			res.Outcome = "error"
		}
	}
	if res.Outcome == "" {
		return metrics.SwapEnd{}, false
	}
	end := metrics.SwapEnd{Outcome: string(res.Outcome), Kind: string(res.Kind), RestoreFailed: res.Outcome == workflows.OutcomeRestoreFailed}
	for _, s := range res.Steps {
		end.Restored = end.Restored || (s.Restore && !end.RestoreFailed)
	}
	return end, true
}

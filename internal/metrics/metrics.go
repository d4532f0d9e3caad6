// Package metrics is what cdswap-worker serves to Prometheus (--metrics-listen): the
// Temporal SDK's own metrics (workflow and activity task latencies, polls, failures), reported
// through the SDK's tally contrib and tally's Prometheus reporter, and cdswap's, registered
// directly with client_golang in the same registry:
//
//	cdswap_swaps_total{host,outcome,kind}            swaps ended, by outcome and guest kind
//	cdswap_swaps_in_flight{host}                     swaps this worker runs now
//	cdswap_restores_total{host,result}               restores of the old medium (ok, failed)
//	cdswap_step_duration_seconds{host,step,result}   each activity attempt, by activity type
//	cdswap_fdset_wait_seconds{host,result}           WaitFdset: a stubdom's new fdset showing up
//	cdswap_batch_drives{batch,state,...}             a batch's drives by state (BatchProgress)
//
// A Metrics is made once per worker (New) and handed to the worker's interceptors: the
// activity side (activities.NewMetricsInterceptor, through StepObserver) and the workflow
// side (WorkflowInterceptor), which counts a swap's end only outside replay, as the SDK's
// own workflow metrics do.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/uber-go/tally/v4"
	tallyprom "github.com/uber-go/tally/v4/prometheus"
	"go.temporal.io/sdk/client"
	sdktally "go.temporal.io/sdk/contrib/tally"
)

// Path is where Serve answers.
const Path = "/metrics"

// sdkReportInterval is how often the SDK's metrics reach the registry (tally flushes its
// scope at this period).
const sdkReportInterval = time.Second

// Step results other than an error type: a step's result label is "ok", the type of the
// application error it failed with (activities.ErrTrayLocked...), or errOther.
const (
	ResultOK = "ok"
	errOther = "error"
)

// stepBuckets are the bounds of the step histograms, in seconds: from a QMP round trip
// (1 ms) to a WaitFdset that runs to its end (about 30 s).
var stepBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// sanitizeOptions are the SDK contrib's Prometheus rules for names and tag keys, with tag
// values that keep '-', '.', ':', '@' and '/' (Prometheus allows any text there): a task
// queue "cdswap-host-xen1" or a batch id stays as it is, rather than "cdswap_host_xen1".
var sanitizeOptions = func() tally.SanitizeOptions {
	o := sdktally.PrometheusSanitizeOptions
	o.ValueCharacters = tally.ValidCharacters{Ranges: tally.AlphanumericRange, Characters: []rune{'_', '-', '.', ':', '@', '/'}}
	return o
}()

// Metrics are one worker's metrics. Its methods are safe for concurrent use.
type Metrics struct {
	host string
	reg  *prometheus.Registry

	swaps     *prometheus.CounterVec
	inFlight  prometheus.Gauge
	restores  *prometheus.CounterVec
	steps     *prometheus.HistogramVec
	fdsetWait *prometheus.HistogramVec

	sdkScope  tally.Scope
	sdkCloser io.Closer

	mu   sync.Mutex
	runs map[string]bool // guards nothing else: the run ids of the swaps in flight
}

// New returns the metrics of the worker of host, with Go's and the process's own
// collectors, and the SDK's scope reporting into the same registry (SDKHandler).
func New(host string) *Metrics {
	reg := prometheus.NewRegistry()
	hostLabel := prometheus.Labels{"host": host}
	m := &Metrics{
		host: host,
		reg:  reg,
		swaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdswap_swaps_total", Help: "Swaps (ChangeMedium runs) ended, by outcome and guest kind.", ConstLabels: hostLabel,
		}, []string{"outcome", "kind"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdswap_swaps_in_flight", Help: "Swaps this worker runs now (started, not ended).", ConstLabels: hostLabel,
		}),
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdswap_restores_total", Help: "Restores of a drive's old medium after a failed or canceled swap, by result.", ConstLabels: hostLabel,
		}, []string{"result"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cdswap_step_duration_seconds", Help: "Duration of each attempt of a swap's steps, by activity type and result.",
			ConstLabels: hostLabel, Buckets: stepBuckets,
		}, []string{"step", "result"}),
		fdsetWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cdswap_fdset_wait_seconds", Help: "Time a stubdom guest's QEMU took to publish the new medium's fdset (WaitFdset attempts).",
			ConstLabels: hostLabel, Buckets: stepBuckets,
		}, []string{"result"}),
		runs: map[string]bool{},
	}
	reg.MustRegister(m.swaps, m.inFlight, m.restores, m.steps, m.fdsetWait,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reporter := tallyprom.NewReporter(tallyprom.Options{
		Registerer:       reg,
		Gatherer:         reg,
		DefaultTimerType: tallyprom.HistogramTimerType,
		// A metric the SDK reports with another set of tags than before cannot be
		// registered again; it is dropped rather than ending the worker.
		OnRegisterError: func(error) {},
	})
	m.sdkScope, m.sdkCloser = tally.NewRootScope(tally.ScopeOptions{
		CachedReporter:  reporter,
		Separator:       tallyprom.DefaultSeparator,
		SanitizeOptions: &sanitizeOptions,
	}, sdkReportInterval)
	return m
}

// SDKHandler is the handler for client.Options.MetricsHandler: the SDK's metrics, and
// those workflows report through workflow.GetMetricsHandler (BatchProgress), go to the same
// registry.
func (m *Metrics) SDKHandler() client.MetricsHandler { return sdktally.NewMetricsHandler(m.sdkScope) }

// Handler serves the registry in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Close stops the SDK scope's reporting, after a last flush.
func (m *Metrics) Close() error { return m.sdkCloser.Close() }

// Serve answers Path on addr until ctx ends. It returns once it listens, with the address
// it listens on (addr may have port 0) and a channel that receives the server's end.
func (m *Metrics) Serve(ctx context.Context, addr string, log *slog.Logger) (net.Addr, <-chan error, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen for metrics on %s: %w: pick a free address for --metrics-listen", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("Stopping the metrics server", "error", err)
		}
	}()
	return ln.Addr(), done, nil
}

// ObserveStep records one attempt of a step (an activity) that took d and ended with err.
func (m *Metrics) ObserveStep(step string, d time.Duration, err error) {
	m.steps.WithLabelValues(step, ResultOf(err)).Observe(d.Seconds())
}

// ObserveFdsetWait records one WaitFdset attempt.
func (m *Metrics) ObserveFdsetWait(d time.Duration, err error) {
	m.fdsetWait.WithLabelValues(ResultOf(err)).Observe(d.Seconds())
}

// SwapEnd is how a swap ended, for SwapEnded.
type SwapEnd struct {
	// Outcome is the swap's outcome (changed, failed-restored...).
	Outcome string
	// Kind is the guest's kind (stubdom, dom0; "" = unknown).
	Kind string
	// Restored says the old medium was put back (a restore ran and ended well);
	// RestoreFailed that a restore ran and failed.
	Restored, RestoreFailed bool
}

// SwapEnded counts a swap's end.
func (m *Metrics) SwapEnded(e SwapEnd) {
	kind := e.Kind
	if kind == "" {
		kind = "unknown"
	}
	m.swaps.WithLabelValues(e.Outcome, kind).Inc()
	switch {
	case e.RestoreFailed:
		m.restores.WithLabelValues("failed").Inc()
	case e.Restored:
		m.restores.WithLabelValues(ResultOK).Inc()
	}
}

// swapRunning marks the run runID in flight; it may be called again for the same run (a
// replay after the run left the worker's cache).
func (m *Metrics) swapRunning(runID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.runs[runID] = true
	m.inFlight.Set(float64(len(m.runs)))
}

// swapDone marks the run runID no longer in flight.
func (m *Metrics) swapDone(runID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.runs, runID)
	m.inFlight.Set(float64(len(m.runs)))
}

// ResultOf is the result label of an error: ResultOK for nil, the type of the application
// error in its chain (activities.ErrTrayLocked...), else "error". The types are the
// activities' constants, so the label's values stay few.
func ResultOf(err error) string {
	if err == nil {
		return ResultOK
	}
	var typed interface{ Type() string }
	if errors.As(err, &typed) && typed.Type() != "" {
		return typed.Type()
	}
	return errOther
}

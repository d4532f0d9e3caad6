package simqemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/cdswap/cdswap/internal/xensim/simqemu/qemuproc"
)

// realQEMU is a qemu-system-x86_64 process and the proxies in front of its monitors.
type realQEMU struct {
	proc    *qemuproc.Process
	drops   *dropSet
	proxies []*proxy
	privDir string // QEMU's monitor sockets, behind the proxies; removed by stop

	stopOnce sync.Once
	stopErr  error
}

// startReal starts QEMU, waits until its monitors are up, then serves the public monitors.
func startReal(ctx context.Context, cfg Config, log *slog.Logger) (_ *realQEMU, err error) {
	// QEMU's sockets live in a short private directory: the caller's paths may be close to
	// the 108-byte limit already, and nobody but the proxy may connect to them.
	privDir, err := os.MkdirTemp("", "simqemu")
	if err != nil {
		return nil, fmt.Errorf("make socket directory: %w", err)
	}
	r := &realQEMU{drops: newDropSet(), privDir: privDir}
	defer func() {
		if err != nil {
			_ = r.stop() // the start's own error says what went wrong
		}
	}()

	// Listen on the public paths before QEMU starts, so that a path in use fails fast;
	// clients that connect early wait in the backlog until the proxies serve.
	privMons := make([]string, len(cfg.Monitors))
	for i, pub := range cfg.Monitors {
		privMons[i] = filepath.Join(privDir, "mon"+strconv.Itoa(i))
		if len(privMons[i]) >= qemuproc.MaxSocketPath {
			return nil, fmt.Errorf("temporary directory %s is too long for unix sockets: set TMPDIR shorter", privDir)
		}
		p, err := listenProxy(pub, privMons[i], r.drops, cfg.OnCall, log)
		if err != nil {
			return nil, err
		}
		r.proxies = append(r.proxies, p)
	}

	r.proc, err = qemuproc.Start(ctx, qemuproc.Config{
		Binary:        cfg.Binary,
		Name:          cfg.Name,
		CDROMs:        cfg.CDROMs,
		InitialMedium: cfg.InitialMedium,
		Monitors:      privMons,
		Paused:        cfg.Paused,
		WorkDir:       cfg.WorkDir,
		Logger:        log,
	})
	if err != nil {
		return nil, err
	}
	for _, p := range r.proxies {
		p.serve()
	}
	return r, nil
}

func (r *realQEMU) pid() int { return r.proc.PID() }

// setPaused sends stop or cont on QEMU's own monitor.
func (r *realQEMU) setPaused(ctx context.Context, paused bool) error {
	return r.proc.SetPaused(ctx, paused)
}

// kill is stop that leaves the public socket files behind, as a QEMU that died leaves its
// own: a client's connect is then refused.
func (r *realQEMU) kill() error {
	for _, p := range r.proxies {
		p.ln.SetUnlinkOnClose(false)
	}
	return r.stop()
}

// stop kills QEMU (and waits for it), closes the proxies and removes the private sockets; it
// also undoes whatever a failed startReal got done. It may be called more than once.
func (r *realQEMU) stop() error {
	r.stopOnce.Do(func() { r.stopErr = r.cleanup() })
	return r.stopErr
}

func (r *realQEMU) cleanup() error {
	var errs []error
	if r.proc != nil {
		errs = append(errs, r.proc.Stop())
	}
	for _, p := range r.proxies {
		p.close()
	}
	if err := os.RemoveAll(r.privDir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", r.privDir, err))
	}
	return errors.Join(errs...)
}

package simqemu

import (
	"fmt"
	"log/slog"

	"github.com/cdswap/cdswap/internal/qmp/qmptest"
)

// startFake starts a qmptest server with cfg's drives, media and monitors.
func startFake(cfg Config, log *slog.Logger) (*qmptest.Server, error) {
	ids := make([]string, len(cfg.CDROMs))
	for i, d := range cfg.CDROMs {
		ids[i] = d.QEMUID()
	}
	opts := qmptest.Options{
		CDROMs:           ids,
		Paused:           cfg.Paused,
		StrictHostDevice: cfg.StrictHostDevice,
		Logger:           log,
	}
	if on := cfg.OnCall; on != nil {
		opts.OnCall = func(c qmptest.Call) { on(Call{Command: c.Command, Drive: c.Drive, OK: c.Err == nil}) }
	}
	srv := qmptest.New(opts)
	for d, m := range cfg.InitialMedium {
		if m.Path == "" {
			continue
		}
		if err := srv.Insert(d.QEMUID(), m.Path, m.QEMUFormat()); err != nil {
			srv.Close()
			return nil, fmt.Errorf("insert %s into %s: %w", m.Path, d.QEMUID(), err)
		}
	}
	for _, p := range cfg.Monitors {
		if err := srv.Listen(p); err != nil {
			srv.Close()
			return nil, fmt.Errorf("listen on %s: %w", p, err)
		}
	}
	return srv, nil
}

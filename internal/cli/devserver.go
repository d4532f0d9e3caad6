package cli

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/cdswap/cdswap/internal/devserver"
)

func (a *App) newDevServerCmd() *cobra.Command {
	var db string
	var ui bool
	var port, uiPort int
	cmd := &cobra.Command{
		Use:   "dev-server [--db FILE] [--ui] [--port 7233] [--ui-port 8233]",
		Short: "Run a local Temporal dev server tuned for cdswap, until interrupted",
		Long: `dev-server runs the Temporal CLI's dev server (` + devserver.CLIVersion + `, built once by make deps) on
127.0.0.1, tuned for short activities (see DESIGN.md "Temporal"), with cdswap's search
attributes registered, until interrupted. Without --db its state lives in memory.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if port < 0 || port > 65535 {
				return usagef("--port %d is not a TCP port (0 picks a free one)", port)
			}
			if uiPort <= 0 || uiPort > 65535 {
				return usagef("--ui-port %d is not a TCP port", uiPort)
			}
			hostPort := "" // port 0: devserver picks a free one
			if port != 0 {
				hostPort = fmt.Sprintf("127.0.0.1:%d", port)
			}
			ctx := cmd.Context()
			srv, err := devserver.Start(ctx, devserver.Options{
				HostPort:  hostPort,
				Namespace: a.cfg.NamespaceName(),
				DBFile:    db,
				UI:        ui,
				UIPort:    strconv.Itoa(uiPort),
				Output:    a.stderr(),
			})
			if err != nil {
				return devServerError(err)
			}
			state := "in memory (lost when it stops; --db FILE keeps it)"
			if db != "" {
				state = db
			}
			out := a.stdout()
			fmt.Fprintf(out, "Temporal dev server at %s, namespace %s\n", srv.FrontendHostPort(), a.cfg.NamespaceName())
			if ui {
				fmt.Fprintf(out, "Web UI: http://127.0.0.1:%d/namespaces/%s/workflows\n", uiPort, a.cfg.NamespaceName())
			}
			fmt.Fprintf(out, "state: %s\n", state)
			fmt.Fprintf(out, "stop it with Ctrl-C\n")
			select {
			case <-ctx.Done():
			case <-srv.Done():
				// It died under us (killed, or out of memory): say so rather than sit here
				// as if it served.
				return devServerError(srv.Err())
			}
			if err := srv.Stop(); err != nil {
				return fmt.Errorf("stop the dev server: %w", err)
			}
			fmt.Fprintln(out, "dev server stopped")
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&db, "db", "", "SQLite file to keep the server's state in (default: in memory)")
	fl.BoolVar(&ui, "ui", false, "serve the Temporal Web UI")
	fl.IntVar(&port, "port", 7233, "frontend port on 127.0.0.1 (0 picks a free one)")
	fl.IntVar(&uiPort, "ui-port", 8233, "Web UI port on 127.0.0.1")
	return cmd
}

// devServerError explains why the dev server did not start or stopped serving, naming
// the flag that moves a port another process holds.
func devServerError(err error) error {
	var inUse *devserver.PortInUseError
	if !errors.As(err, &inUse) {
		return &userError{msg: err.Error(), cause: err}
	}
	var what string
	switch inUse.Use {
	case devserver.UseFrontend:
		what = "pick another port with --port"
	case devserver.UseUI:
		what = "pick another port with --ui-port"
	default:
		what = "run the command again (the server picks such ports afresh)"
	}
	use := inUse.Use
	if use == "" {
		use = "a port the server picked itself"
	}
	hint := ""
	var exit *devserver.ExitError
	if errors.As(err, &exit) && exit.Line != "" {
		hint = fmt.Sprintf("the server (pid %d) ended with %s, saying: %q", exit.Pid, exit.State, exit.Line)
	}
	return &userError{
		msg: fmt.Sprintf("the Temporal dev server could not start: %s (%s) is already in use by another "+
			"process: stop that process (`ss -ltnp 'sport = :%d'` names it) or %s",
			inUse.Addr, use, inUse.Port, what),
		hint:  hint,
		cause: err,
	}
}

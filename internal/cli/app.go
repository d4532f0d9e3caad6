package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/internal/temporalclient"
	"github.com/cdswap/cdswap/workflows"
)

// DefaultPollInterval is how often --wait asks a running swap for its progress.
const DefaultPollInterval = 200 * time.Millisecond

// App is the cdswap CLI with its streams and tunables, so that tests can run it in-process.
// The zero value writes to os.Stdout and os.Stderr and reads the process environment. An
// App runs one command line at a time.
type App struct {
	// Stdout receives the commands' output (data); Stderr errors and, with --json,
	// progress.
	Stdout, Stderr io.Writer
	// Getenv reads the environment (nil = os.Getenv): TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
	// TEMPORAL_API_KEY, SUDO_USER, USER.
	Getenv func(string) string
	// TTY says Stdout is a terminal: --wait then redraws the running step's line in place
	// instead of printing one line per finished step.
	TTY bool
	// ResolveTimeout bounds the ResolveDrive run that finds the drive on the host's worker,
	// and so the wait before "no cdswap-worker is polling host H" (0 =
	// workflows.ResolveDriveTimeout).
	ResolveTimeout time.Duration
	// PollInterval is the period of --wait's progress query (0 = DefaultPollInterval).
	PollInterval time.Duration
	// ConnectTimeout bounds the first contact with Temporal (0 = DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// Location is the time zone of the times printed for a person (nil = time.Local).
	Location *time.Location

	cfg ClientConfig // set by the root command's PersistentPreRunE
}

// Main runs cdswap with args (without the program name) on the process's streams and
// returns the exit code.
func Main(ctx context.Context, args []string) int {
	a := &App{Stdout: os.Stdout, Stderr: os.Stderr, TTY: IsTerminal(os.Stdout)}
	return a.Run(ctx, args)
}

// Run runs one cdswap command line and returns its exit code (ExitOK, ExitFailure,
// ExitUsage). Errors go to Stderr as "cdswap: <what went wrong and what to do>".
func (a *App) Run(ctx context.Context, args []string) int {
	root := a.newRoot()
	root.SetArgs(args)
	root.SetOut(a.stdout())
	root.SetErr(a.stderr())
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	return a.report(cmd, err)
}

func (a *App) stdout() io.Writer {
	if a.Stdout == nil {
		return os.Stdout
	}
	return a.Stdout
}

func (a *App) stderr() io.Writer {
	if a.Stderr == nil {
		return os.Stderr
	}
	return a.Stderr
}

func (a *App) getenv(k string) string {
	if a.Getenv == nil {
		return os.Getenv(k)
	}
	return a.Getenv(k)
}

func (a *App) location() *time.Location {
	if a.Location == nil {
		return time.Local
	}
	return a.Location
}

func (a *App) pollInterval() time.Duration {
	if a.PollInterval <= 0 {
		return DefaultPollInterval
	}
	return a.PollInterval
}

func (a *App) resolveTimeout() time.Duration {
	if a.ResolveTimeout <= 0 {
		return workflows.ResolveDriveTimeout
	}
	return a.ResolveTimeout
}

// report prints err for a person and returns the exit code.
func (a *App) report(cmd *cobra.Command, err error) int {
	var run *runError
	var usage *UsageError
	if !errors.As(err, &run) || errors.As(err, &usage) {
		// Cobra's own errors (unknown command or flag, wrong arguments, a required flag
		// missing) and ours about the command line.
		fmt.Fprintf(a.stderr(), "cdswap: %s\n\n%s", clean(err.Error()), cmd.UsageString())
		return ExitUsage
	}
	err = run.err
	var uerr *userError
	if !errors.As(err, &uerr) {
		uerr = a.explain(err)
	}
	// The message may quote what a person or a guest wrote (a path, a name, an activity's
	// error about them): nothing in it may steer the terminal.
	fmt.Fprintf(a.stderr(), "cdswap: %s\n", clean(uerr.msg))
	if uerr.hint != "" {
		fmt.Fprintf(a.stderr(), "  %s\n", clean(uerr.hint))
	}
	return ExitFailure
}

// explain turns an error that no command explained into one for a person.
func (a *App) explain(err error) *userError {
	var canceled *serviceerror.Canceled
	var unavailable *serviceerror.Unavailable
	var deadline *serviceerror.DeadlineExceeded
	var nsNotFound *serviceerror.NamespaceNotFound
	switch {
	case errors.Is(err, context.Canceled), errors.As(err, &canceled):
		return &userError{msg: "interrupted", cause: err}
	case errors.As(err, &unavailable), errors.As(err, &deadline), errors.As(err, &nsNotFound):
		return explainServerError(a.cfg, err)
	}
	return &userError{msg: err.Error(), cause: err}
}

func (a *App) newRoot() *cobra.Command {
	var (
		conn           *temporalclient.Flags
		connectTimeout time.Duration
	)
	root := &cobra.Command{
		Use:   "cdswap",
		Short: "Change the CD-ROM media of Xen guests as durable Temporal workflows",
		Long: `cdswap changes or ejects the CD-ROM medium of a Xen guest the way xl cd-insert and
xl cd-eject do, as a Temporal workflow run by the cdswap-worker of the guest's dom0 host:
a worker that dies mid-swap is replaced and the swap finishes, or puts the old medium back.
Every swap records who asked and why; status, history and list read that record back.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.configure(cmd, conn, connectTimeout)
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	pf := root.PersistentFlags()
	conn = temporalclient.AddFlags(pf)
	pf.DurationVar(&connectTimeout, "connect-timeout", DefaultConnectTimeout, "how long to wait for the server to answer")
	root.AddCommand(
		a.newSwapCmd(false),
		a.newSwapCmd(true),
		a.newStatusCmd(),
		a.newHistoryCmd(),
		a.newCancelCmd(),
		a.newListCmd(),
		a.newAuditCmd(),
		a.newDevServerCmd(),
		a.newBatchCmd(),
	)
	return root
}

// configure fills a.cfg from the connection flags and the environment.
func (a *App) configure(cmd *cobra.Command, conn *temporalclient.Flags, connectTimeout time.Duration) error {
	tc, err := conn.Config(a.getenv)
	if err != nil {
		return usagef("%v", err)
	}
	cfg := ClientConfig{Config: tc, ConnectTimeout: connectTimeout}
	if a.ConnectTimeout > 0 && !cmd.Flags().Changed("connect-timeout") {
		cfg.ConnectTimeout = a.ConnectTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		return usagef("--connect-timeout must be positive, not %s", cfg.ConnectTimeout)
	}
	a.cfg = cfg
	host, _ := os.Hostname()
	// The requester depends on the connection's credentials (requesterOf), so a.cfg first.
	a.cfg.Identity = fmt.Sprintf("cdswap:%s@%s", a.requester(""), host)
	return nil
}

// requester is who asks (requesterOf): the identity the connection authenticates as, else
// the flag, else the user sudo ran as, else $USER.
func (a *App) requester(flag string) string {
	r, _ := a.requesterOf(flag)
	return r
}

// dial connects with a.cfg.
func (a *App) dial(ctx context.Context) (client.Client, error) {
	return Dial(ctx, a.cfg)
}

// runE wraps a command's body: its errors are the command's, not the command line's.
func runE(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := f(cmd, args); err != nil {
			var usage *UsageError
			if errors.As(err, &usage) {
				return usage
			}
			return &runError{err: err}
		}
		return nil
	}
}

// exactArgs is cobra.ExactArgs with a message that names what is expected.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("expected %s, got %d argument(s)", what, len(args))
		}
		return nil
	}
}

// requireFlags fails with a UsageError naming the required flags that were not given.
func requireFlags(flags *pflag.FlagSet, names ...string) error {
	var missing []string
	for _, n := range names {
		if f := flags.Lookup(n); f == nil || f.Value.String() == "" {
			missing = append(missing, "--"+n)
		}
	}
	if len(missing) > 0 {
		return usagef("missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// Command cdswap is the operator CLI of cdswap: insert, eject, status, history, cancel and
// list CD-ROM medium swaps of Xen guests, run as Temporal workflows by the cdswap-worker of
// each dom0 host, and dev-server to run a local Temporal server. `cdswap --help` lists the
// commands; package internal/cli holds the code.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cdswap/cdswap/internal/cli"
)

func main() {
	// An interrupt stops waiting (or the dev server), never a swap: that goes on in
	// Temporal, and `cdswap cancel` is how to stop it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

package integration

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/cdswap/cdswap/internal/devserver"
	"github.com/cdswap/cdswap/internal/testenv"
)

// Flags of this package's special runs (after -args).
var (
	recordFlag = flag.Bool("record", false, "TestRecordHistories: write workflows/testdata/histories/*.json from real runs")
	reportFlag = flag.Bool("report", false, "TestSwapLatencyReport: run -swaps swaps each way and print a markdown table")
	swapsFlag  = flag.Int("swaps", 50, "swaps per way for TestSwapLatencyReport")
)

// Namespace is the dev server namespace every test uses.
const namespace = "default"

// suite is what TestMain sets up once for every test of the package run.
type suite struct {
	srv       *devserver.Server
	client    client.Client
	address   string
	workerBin string // cdswap-worker
	cliBin    string // cdswap
	binDir    string

	// skip says why every test must skip (a prerequisite is missing and CI is not set).
	skip string
	// fail says why every test must fail (a build broke, or CI is set and a prerequisite
	// is missing).
	fail string
}

// the is the package's suite; TestMain fills it before any test runs.
var the suite

func TestMain(m *testing.M) {
	flag.Parse()
	// The tests wait on timeouts far more than they compute (a killed worker's step is
	// retried only at its StartToClose timeout), so run more of them at once than the
	// default of GOMAXPROCS, unless -parallel says otherwise.
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		_ = flag.Set("test.parallel", "16")
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// Building both binaries and starting the server take a minute at most on a cold cache.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	setUp(ctx)
	cancel()
	code := m.Run()
	tearDown()
	return code
}

// setUp starts the dev server and builds the binaries, recording in the why a test cannot run.
func setUp(ctx context.Context) {
	if _, err := devserver.CLIPath(); err != nil {
		why := fmt.Sprintf("the Temporal CLI dev server is needed: %v", err)
		if testenv.InCI() {
			the.fail = "CI=true and " + why
		} else {
			the.skip = why
		}
		return
	}
	dir, err := os.MkdirTemp("", "cdsbin")
	if err != nil {
		the.fail = fmt.Sprintf("make a folder for the binaries: %v", err)
		return
	}
	the.binDir = dir
	the.workerBin = filepath.Join(dir, "cdswap-worker")
	the.cliBin = filepath.Join(dir, "cdswap")
	for _, b := range []struct{ out, pkg string }{
		{the.workerBin, "github.com/cdswap/cdswap/worker"},
		{the.cliBin, "github.com/cdswap/cdswap/starter"},
	} {
		if err := goBuild(ctx, b.out, b.pkg); err != nil {
			the.fail = err.Error()
			return
		}
	}
	srv, err := devserver.Start(ctx, devserver.Options{Namespace: namespace})
	if err != nil {
		the.fail = fmt.Sprintf("start the dev server: %v", err)
		return
	}
	the.srv = srv
	the.client = srv.Client()
	the.address = srv.FrontendHostPort()
}

// goBuild builds pkg into out from the module's root (the parent of this package's folder,
// where `go test` runs us).
func goBuild(ctx context.Context, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = ".."
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build -o %s %s: %w\n%s", out, pkg, err, buf.String())
	}
	return nil
}

func tearDown() {
	if the.srv != nil {
		if err := the.srv.Stop(); err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(os.Stderr, "integration: stop the dev server: %v\n", err)
		}
	}
	if the.binDir != "" {
		os.RemoveAll(the.binDir)
	}
}

// need returns the suite, or ends t when the package cannot run: a skip when a
// prerequisite is missing, a failure under CI=true or when a binary did not build.
func need(t testing.TB) *suite {
	t.Helper()
	switch {
	case the.fail != "":
		t.Fatal(the.fail)
	case the.skip != "":
		t.Skip(the.skip)
	}
	return &the
}

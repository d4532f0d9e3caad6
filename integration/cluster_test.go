package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.yaml.in/yaml/v3"

	"github.com/cdswap/cdswap/activities"
	"github.com/cdswap/cdswap/internal/devserver"
	"github.com/cdswap/cdswap/internal/testenv"
	"github.com/cdswap/cdswap/internal/xensim"
	"github.com/cdswap/cdswap/workflows"
)

// clusterScript is scripts/cluster.sh, from this package's folder.
const clusterScript = "../scripts/cluster.sh"

// clusterPorts is how many ports from CLUSTER_PORT the script takes.
const clusterPorts = 16

// cluster is a Temporal cluster run by `scripts/cluster.sh up`: PostgreSQL and the four
// services as separate processes, in a state folder of its own.
type cluster struct {
	dir     string
	env     []string
	address string
	client  client.Client
	cmd     *exec.Cmd
	logs    *logBuffer
	done    chan struct{} // closed when `up` has exited and been waited for
}

// freeClusterPorts returns a CLUSTER_PORT whose whole range is free on the loopback: below
// 32768, as the script requires, and so outside Linux's ephemeral range.
func freeClusterPorts(t testing.TB) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.IntN(12000-clusterPorts)
		free := true
		for p := base; p < base+clusterPorts && free; p++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				free = false
				continue
			}
			l.Close()
		}
		if free {
			return base
		}
	}
	t.Fatalf("no %d free loopback ports in a row below 32768", clusterPorts)
	return 0
}

// startCluster runs the script's up in a new folder and process group, waits for its
// TEMPORAL_ADDRESS line, and dials it. At cleanup it runs the script's down and then kills
// whatever is left of the group; if the test binary dies, `up` dies with it (Pdeathsig) and
// takes its services along (each runs under setpriv --pdeathsig).
func startCluster(t *testing.T) *cluster {
	t.Helper()
	cli, err := devserver.CLIPath()
	testenv.Require(t, "the Temporal CLI", err)
	script, err := filepath.Abs(clusterScript)
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "cdscluster")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &cluster{dir: dir, logs: &logBuffer{}, done: make(chan struct{})}
	c.env = append(os.Environ(), "CLUSTER_DIR="+dir, "CLUSTER_PORT="+strconv.Itoa(freeClusterPorts(t)),
		"CLUSTER_UI=0", "CDSWAP_TEMPORAL_CLI="+cli)

	check := exec.Command("bash", script, "check")
	check.Env = c.env
	if out, err := check.CombinedOutput(); err != nil {
		testenv.Unavailable(t, "the cluster test needs what `make deps-cluster` installs: %s", strings.TrimSpace(string(out)))
	}

	dumpOnFailure(t, "scripts/cluster.sh up", c.logs)
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpServiceLogs(t)
		}
	})
	c.cmd = exec.Command("bash", script, "up")
	c.cmd.Env = c.env
	c.cmd.Stderr = c.logs
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := c.cmd.StdoutPipe()
	require.NoError(t, err)
	t0 := time.Now()
	require.NoError(t, c.cmd.Start())
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(c.logs, line)
			if a, ok := strings.CutPrefix(line, "TEMPORAL_ADDRESS="); ok {
				addr <- a
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(c.stop)

	select {
	case c.address = <-addr:
	case <-c.done:
		t.Fatalf("scripts/cluster.sh up exited before the cluster was ready: %v", c.cmd.ProcessState)
	case <-time.After(3 * time.Minute):
		t.Fatal("the cluster was not ready within 3 minutes")
	}
	t.Logf("cluster ready at %s in %s (state in %s)", c.address, time.Since(t0).Round(time.Millisecond), dir)
	c.client, err = client.Dial(client.Options{HostPort: c.address, Namespace: namespace, Logger: quietLogger})
	require.NoError(t, err, "dial the cluster at %s", c.address)
	t.Cleanup(c.client.Close)
	return c
}

// stop runs the script's down, then kills what is left of the process group.
func (c *cluster) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	down := exec.CommandContext(ctx, "bash", clusterScript, "down")
	down.Env = c.env
	down.Stdout, down.Stderr = c.logs, c.logs
	_ = down.Run()
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.done
}

// run runs one of the script's commands on the cluster (restart SVC, stop SVC...).
func (c *cluster) run(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{clusterScript}, args...)...)
	cmd.Env = c.env
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "scripts/cluster.sh %s: %s", strings.Join(args, " "), out)
	t.Logf("scripts/cluster.sh %s (%s): %s", strings.Join(args, " "), time.Since(t0).Round(time.Millisecond), bytes.TrimSpace(out))
}

// dumpServiceLogs logs the end of each service's log.
func (c *cluster) dumpServiceLogs(t testing.TB) {
	logs, _ := filepath.Glob(filepath.Join(c.dir, "logs", "[fhmpw]*.log")) // not schema.log: it only says what was set up
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		t.Logf("----- %s (last lines) -----\n%s", filepath.Base(p), strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
}

// useCluster points the package's helpers at c until t ends. It is why TestCluster must
// not call t.Parallel (see useServer).
func useCluster(t *testing.T, c *cluster) {
	useServer(t, c.client, c.address)
}

// clusterDrive is one guest's cdrom on one of the cluster test's hosts, and what it holds.
type clusterDrive struct {
	h      *xensim.Host
	dom    xensim.DomainInfo
	medium string
	// last is the drive's latest swap.
	last client.WorkflowRun
}

// nextMedium is the image that changes the drive: the other of two.
func (d *clusterDrive) nextMedium() string {
	if d.medium == iso(d.h, xensim.ISOTools) {
		return iso(d.h, xensim.ISORescue)
	}
	return iso(d.h, xensim.ISOTools)
}

// clusterFault is something that goes wrong in the cluster while swaps are held inside
// their ChangeMedium step.
type clusterFault struct {
	name string
	// inject breaks something and repairs it (or has the supervisor repair it).
	inject func(t *testing.T, c *cluster, workers map[string]*workerProc)
	// retried says the held step is run again (its worker died): QEMU then sees the medium
	// change twice, which is the same change (the step is idempotent).
	retried bool
}

// TestCluster runs cdswap on a real self-hosted cluster (scripts/cluster.sh: PostgreSQL,
// frontend, history, matching and worker as separate processes, archival on): three xensim
// hosts with a stubdom and a dom0 guest each and a cdswap-worker per host; a swap of every
// drive, checked against xensim's state; a batch across the three hosts that changes every
// drive again (`cdswap batch start --wait`), each drive checked the same way; then, with a
// swap of every drive held inside its ChangeMedium step, each fault in turn (the history
// service SIGKILLed, the matching service restarted, PostgreSQL restarted with a fast
// shutdown, every worker SIGKILLed): every swap must still end changed, with each step
// scheduled once, the drive as checkDrive wants it and, unless the worker died, QEMU asked
// to change the medium exactly once. Last, a swap is deleted from the primary store and
// `cdswap history` must still show it, from the archive.
//
// It must not call t.Parallel (see useCluster).
func TestCluster(t *testing.T) {
	need(t)
	t0 := time.Now()
	c := startCluster(t)
	useCluster(t, c)

	t.Run("search attributes", func(t *testing.T) {
		resp, err := c.client.OperatorService().ListSearchAttributes(testenv.Context(t, 30*time.Second),
			&operatorservice.ListSearchAttributesRequest{Namespace: namespace})
		require.NoError(t, err)
		for _, k := range workflows.SearchAttributeKeys() {
			assert.Contains(t, resp.GetCustomAttributes(), k.GetName(), "scripts/cluster.sh does not register search attribute %s", k.GetName())
		}
	})

	var drives []*clusterDrive
	workers := map[string]*workerProc{}
	var hosts []*xensim.Host
	for range 3 {
		h := startHost(t, xensim.Config{
			HostName: hostName("cluster"), StubdomGuests: 1, Dom0Guests: 1, QEMU: xensim.QEMUFake,
		})
		hosts = append(hosts, h)
		for _, k := range []xensim.Kind{xensim.KindStubdom, xensim.KindDom0} {
			dom := domainOf(t, h, k)
			drives = append(drives, &clusterDrive{h: h, dom: dom, medium: dom.Medium})
		}
	}
	for _, h := range hosts {
		workers[h.Name()] = startWorker(t, h, workerOpts{})
	}

	t.Run("swaps", func(t *testing.T) {
		for _, d := range drives {
			t.Run(d.h.Name()+"/"+string(d.dom.Kind), func(t *testing.T) {
				t.Parallel()
				medium := d.nextMedium()
				ctx := testenv.Context(t, 90*time.Second)
				run := startSwap(t, ctx, swapInput(d.h, d.dom, medium, ""))
				res, err := waitSwap(ctx, run)
				require.NoError(t, err, "result %+v", res)
				require.Equal(t, workflows.OutcomeChanged, res.Outcome, "result %+v", res)
				requireReplays(t, run)
				checkDrive(t, d.h, d.dom, medium, d.medium)
				d.medium, d.last = medium, run
			})
		}
	})
	if t.Failed() {
		return
	}
	t.Run("batch", func(t *testing.T) {
		clusterBatch(t, drives)
	})
	if t.Failed() {
		return
	}

	faults := []clusterFault{
		{name: "history SIGKILLed", inject: func(t *testing.T, c *cluster, _ map[string]*workerProc) {
			c.run(t, "restart", "history", "--kill")
		}},
		{name: "matching restarted", inject: func(t *testing.T, c *cluster, _ map[string]*workerProc) {
			c.run(t, "restart", "matching")
		}},
		{name: "postgres restarted", inject: func(t *testing.T, c *cluster, _ map[string]*workerProc) {
			c.run(t, "stop", "postgres")
			time.Sleep(time.Second)
			c.run(t, "start", "postgres")
		}},
		{name: "workers SIGKILLed", retried: true, inject: func(t *testing.T, c *cluster, ws map[string]*workerProc) {
			for _, h := range hosts {
				ws[h.Name()].kill()
				ws[h.Name()] = startWorker(t, h, workerOpts{})
			}
		}},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			ft := time.Now()
			swapThroughFault(t, c, drives, workers, f)
			t.Logf("%s: every swap finished %s after it started", f.name, time.Since(ft).Round(time.Millisecond))
		})
		if t.Failed() {
			return
		}
	}

	t.Run("archived history", func(t *testing.T) {
		checkArchivedHistory(t, c, drives[0].last)
	})
	t.Logf("TestCluster took %s", time.Since(t0).Round(time.Millisecond))
}

// clusterBatch changes every drive to its other image with one batch across the hosts,
// started and followed with the cdswap binary, and checks each drive against xensim's
// state, the batch's report and its history's replay.
func clusterBatch(t *testing.T, drives []*clusterDrive) {
	var b strings.Builder
	b.WriteString("host,domain,vdev,medium\n")
	want := map[string]string{} // swap id -> new medium
	for _, d := range drives {
		fmt.Fprintf(&b, "%s,%s,%s,%s\n", d.h.Name(), d.dom.Name, d.dom.Vdev, d.nextMedium())
		want[workflows.WorkflowID(d.h.Name(), d.dom.DomID, d.dom.Vdev)] = d.nextMedium()
	}
	r := runCLI(t, "batch", "start", "--plan", writePlan(t, "plan.csv", b.String()), "--per-host", "1",
		"--reason", "cluster batch", "--wait", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var res workflows.FleetSwapResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res), r.stdout)
	assert.Equal(t, workflows.FleetDone, res.Status)
	assert.Equal(t, len(drives), res.Changed, "%+v", res)
	for _, d := range drives {
		medium := d.nextMedium()
		checkDrive(t, d.h, d.dom, medium, d.medium)
		d.medium = medium
	}
	rows := batchReport(t, res.Batch)
	require.Len(t, rows, len(drives))
	for _, row := range rows {
		assert.Equal(t, string(workflows.OutcomeChanged), row.Outcome, "%+v", row)
		assert.Equal(t, want[row.SwapID], row.New, "%+v", row)
	}
	h, err := fetchHistory(testenv.Context(t, 30*time.Second), res.Batch, "")
	require.NoError(t, err)
	require.NoError(t, replay(h, registerAll), "replay of batch %s", res.Batch)
}

// swapThroughFault starts a swap of every drive, each held inside its ChangeMedium step (its
// QEMU answers blockdev-change-medium holdFor late), injects f, and checks every swap.
func swapThroughFault(t *testing.T, c *cluster, drives []*clusterDrive, workers map[string]*workerProc, f clusterFault) {
	const held = "blockdev-change-medium"
	ctx := testenv.Context(t, 3*time.Minute)
	runs := make([]client.WorkflowRun, len(drives))
	seen := make([]int, len(drives))
	for i, d := range drives {
		fake := d.h.QEMU(d.dom.DomID).Fake()
		require.NotNil(t, fake)
		fake.Delay(held, holdFor)
		seen[i] = len(fake.Commands())
		runs[i] = startSwap(t, ctx, swapInput(d.h, d.dom, d.nextMedium(), ""))
	}
	for i, run := range runs {
		waitStepStarted(t, testenv.Context(t, time.Minute), run, workers[drives[i].h.Name()], activities.NameChangeMedium)
	}
	f.inject(t, c, workers)
	for _, d := range drives {
		d.h.QEMU(d.dom.DomID).Fake().Delay(held, 0)
	}
	for i, d := range drives {
		medium := d.nextMedium()
		res, err := waitSwap(ctx, runs[i])
		require.NoError(t, err, "swap of %s on %s through %s: result %+v", d.dom.Vdev, d.dom.Name, f.name, res)
		assert.Equal(t, workflows.OutcomeChanged, res.Outcome, "result %+v", res)
		hist := requireReplays(t, runs[i])
		for _, step := range scheduledSteps(hist) {
			assert.Len(t, stepAttempts(hist, step), 1, "%s on %s: step %s scheduled more than once through %s", d.dom.Vdev, d.dom.Name, step, f.name)
		}
		attempts := stepAttempts(hist, activities.NameChangeMedium)
		changes := 0
		for _, cmd := range d.h.QEMU(d.dom.DomID).Fake().Commands()[seen[i]:] {
			if cmd == held {
				changes++
			}
		}
		switch {
		case f.retried && d.dom.Kind == xensim.KindDom0 && workflows.RunsLocal(activities.NameAddFD):
			// A dom0 swap is one workflow task: the held change ran after its worker died, and
			// the new worker's Inspect found it taken, so the run recorded it and did not
			// change (nor eject) the medium again.
			_, again := stepStarted(workers[d.h.Name()].logs.String(), runs[i], activities.NameRecord)
			assert.True(t, again, "%s on %s: the new worker did not record the change after the old one died", d.dom.Vdev, d.dom.Name)
			assert.Equal(t, 1, changes, "%s on %s: QEMU was asked to change the medium %d times through %s", d.dom.Vdev, d.dom.Name, changes, f.name)
		case f.retried && workflows.RunsLocal(activities.NameChangeMedium):
			// A local step leaves no attempts in the history: the new worker's own log shows
			// it ran the step again.
			_, again := stepStarted(workers[d.h.Name()].logs.String(), runs[i], activities.NameChangeMedium)
			assert.True(t, again, "%s on %s: the new worker did not run ChangeMedium again after the old one died", d.dom.Vdev, d.dom.Name)
		case f.retried:
			require.NotEmpty(t, attempts, "%s on %s: no ChangeMedium attempt in the history", d.dom.Vdev, d.dom.Name)
			assert.Greater(t, attempts[0], int32(1), "%s on %s: ChangeMedium was not retried after its worker died", d.dom.Vdev, d.dom.Name)
		default:
			assert.Equal(t, 1, changes, "%s on %s: QEMU was asked to change the medium %d times through %s (ChangeMedium attempts %v)", d.dom.Vdev, d.dom.Name, changes, f.name, attempts)
		}
		checkDrive(t, d.h, d.dom, medium, d.medium)
		d.medium, d.last = medium, runs[i]
	}
}

// scheduledSteps lists the activity types a history schedules, each once.
func scheduledSteps(h *historypb.History) []string {
	var out []string
	for _, e := range h.GetEvents() {
		if a := e.GetActivityTaskScheduledEventAttributes(); a != nil && !slices.Contains(out, a.GetActivityType().GetName()) {
			out = append(out, a.GetActivityType().GetName())
		}
	}
	return out
}

// checkArchivedHistory waits until run, the latest of its workflow ID, is in the namespace's
// visibility archive, deletes it from the primary store, and checks that `cdswap history ID`
// still shows it, read from the archive.
func checkArchivedHistory(t *testing.T, c *cluster, run client.WorkflowRun) {
	ctx := testenv.Context(t, 2*time.Minute)
	query := fmt.Sprintf("WorkflowId = '%s' and RunId = '%s'", run.GetID(), run.GetRunID())
	t0 := time.Now()
	for {
		resp, err := c.client.ListArchivedWorkflow(ctx, &workflowservice.ListArchivedWorkflowExecutionsRequest{PageSize: 10, Query: query})
		if err == nil && len(resp.GetExecutions()) == 1 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("run %s/%s is not in the visibility archive after %s: %v", run.GetID(), run.GetRunID(), time.Since(t0), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Logf("run %s archived %s after the check began", run.GetID(), time.Since(t0).Round(time.Millisecond))

	_, err := c.client.WorkflowService().DeleteWorkflowExecution(ctx, &workflowservice.DeleteWorkflowExecutionRequest{
		Namespace:         namespace,
		WorkflowExecution: &commonpb.WorkflowExecution{WorkflowId: run.GetID(), RunId: run.GetRunID()},
	})
	require.NoError(t, err)
	for {
		_, err := c.client.DescribeWorkflow(ctx, run.GetID(), run.GetRunID())
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("run %s is still in the primary store after DeleteWorkflowExecution: %v", run.GetID(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}

	checkHistoryText(t, run.GetID(), "Inspect", "ChangeMedium", "Verify", "changed", "IT-1")
	r := runCLI(t, "history", "--json", run.GetID())
	require.Equal(t, 0, r.code, r.stderr)
	var doc struct {
		RunID    string `json:"run_id"`
		Outcome  string `json:"outcome"`
		Archived bool   `json:"archived"`
		Steps    []struct {
			Name string `json:"name"`
		} `json:"steps"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc), "history --json: %s", r.stdout)
	assert.Equal(t, run.GetRunID(), doc.RunID)
	assert.Equal(t, string(workflows.OutcomeChanged), doc.Outcome)
	assert.True(t, doc.Archived, "cdswap history did not read run %s from the archive", run.GetID())
	assert.NotEmpty(t, doc.Steps)
}

// TestClusterDynamicConfig checks that the cluster's dynamic config (deploy/temporal, which
// scripts/cluster.sh and docker-compose.temporal.yml load) holds the dev server's tuning,
// value for value.
func TestClusterDynamicConfig(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../deploy/temporal/dynamicconfig.yaml")
	require.NoError(t, err)
	var file map[string][]struct {
		Value any `yaml:"value"`
	}
	require.NoError(t, yaml.Unmarshal(b, &file))
	for _, kv := range devserver.TunedDynamicConfig {
		key, val, ok := strings.Cut(kv, "=")
		require.True(t, ok, "devserver.TunedDynamicConfig entry %q is not KEY=VALUE", kv)
		var want any
		require.NoError(t, json.Unmarshal([]byte(val), &want), "value of %s", key)
		vs := file[key]
		if !assert.Len(t, vs, 1, "deploy/temporal/dynamicconfig.yaml: %s should have one value, %s as the dev server has", key, val) {
			continue
		}
		got, err := json.Marshal(vs[0].Value)
		require.NoError(t, err)
		wantJSON, _ := json.Marshal(want)
		assert.JSONEq(t, string(wantJSON), string(got), "deploy/temporal/dynamicconfig.yaml: %s", key)
	}
}

// readVersions reads a KEY=VALUE file such as internal/versions/versions.env.
func readVersions(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	out := map[string]string{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = v
		}
	}
	return out
}

// TestClusterComposeFile checks that docker-compose.temporal.yml, which is validated but not
// run here, describes the cluster scripts/cluster.sh runs: the same server, UI and
// PostgreSQL versions (internal/versions/versions.env), the four services each in its own
// container with the same dynamic config file, archival on, and cdswap's search attributes.
func TestClusterComposeFile(t *testing.T) {
	t.Parallel()
	versions := readVersions(t, "../internal/versions/versions.env")
	b, err := os.ReadFile("../docker-compose.temporal.yml")
	require.NoError(t, err)
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
			Command     []string          `yaml:"command"`
		} `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(b, &compose))
	server := "temporalio/server:" + strings.TrimPrefix(versions["TEMPORAL_SERVER_VERSION"], "v")
	for _, svc := range []string{"frontend", "history", "matching", "worker"} {
		s, ok := compose.Services[svc]
		if !assert.True(t, ok, "docker-compose.temporal.yml has no %s service", svc) {
			continue
		}
		assert.Equal(t, server, s.Image, "image of %s", svc)
		assert.Equal(t, svc, s.Environment["SERVICES"], "SERVICES of %s", svc)
		dc := s.Environment["DYNAMIC_CONFIG_FILE_PATH"]
		assert.Contains(t, s.Volumes, "./deploy/temporal/dynamicconfig.yaml:"+dc+":ro", "%s must load deploy/temporal/dynamicconfig.yaml", svc)
	}
	admin := "temporalio/admin-tools:" + strings.TrimPrefix(versions["TEMPORAL_SERVER_VERSION"], "v")
	assert.Equal(t, admin, compose.Services["temporal-schema"].Image)
	assert.Equal(t, admin, compose.Services["temporal-namespace"].Image)
	assert.Equal(t, "temporalio/ui:"+strings.TrimPrefix(versions["TEMPORAL_UI_VERSION"], "v"), compose.Services["temporal-ui"].Image)
	assert.Equal(t, "postgres:"+versions["POSTGRESQL_VERSION"], compose.Services["postgresql"].Image)

	setup := strings.Join(compose.Services["temporal-namespace"].Command, "\n")
	assert.Equal(t, 2, strings.Count(setup, "-archival-state enabled"), "the namespace must archive histories and visibility: %s", setup)
	for _, k := range workflows.SearchAttributeKeys() {
		assert.Contains(t, setup, k.GetName(), "docker-compose.temporal.yml does not register search attribute %s", k.GetName())
	}
}

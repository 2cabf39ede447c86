package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/syncio"
	"github.com/causalrm/causalrm/internal/tcpproxy"
)

// The elastic acceptance tests run real processes on 127.0.0.1: the
// coordinators and workers are this test binary acting as the CLI, so
// kill -9 is a real kill -9. Their oracle (docs/elastic.md): the final
// reward model is byte-identical to the one-process run of the same job,
// and the coordinators' step log holds every step of every epoch of every
// stage exactly once.

// proc is one child process of a test cluster.
// waitExited waits for each process to exit and fails on an unclean exit.
func waitExited(t *testing.T, ps ...*proc) {
	t.Helper()
	for _, p := range ps {
		<-p.done
		if p.err != nil {
			t.Fatalf("%s: %v", p.name, p.err)
		}
	}
}

// logSurvivors waits for the surviving workers to exit cleanly and logs
// the pauses each generation change caused them.
func logSurvivors(t *testing.T, ps ...*proc) {
	t.Helper()
	waitExited(t, ps...)
	for _, p := range ps {
		t.Logf("survivor %s pauses: %v", p.name, pauses(p.log.String()))
	}
}

type proc struct {
	name string
	args []string
	cmd  *exec.Cmd
	log  *syncio.Buffer
	done chan struct{}
	err  error
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// testCluster is a coordinator group and its workers, all processes.
type testCluster struct {
	t       *testing.T
	dir     string
	token   string
	raft    []string
	grpc    []string // where the coordinators listen
	adv     []string // what workers and clients dial: grpc, or a proxy in front of it
	proxies []*tcpproxy.Proxy
	coords  []*proc
	mu      sync.Mutex
	workers map[string]*proc
	client  *coordinator.Client
	env     []string
	// extra arguments of every process (coordinators, workers, CLI calls)
	// and the TLS of the test's own client, for the mTLS test.
	procArgs  []string
	clientTLS *tls.Config
	// extra arguments of the coordinators only (the registry test)
	coordArgs []string
}

func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var ls []net.Listener
	var out []string
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

func newTestCluster(t *testing.T, coordinators int, env ...string) *testCluster {
	return newProxiedCluster(t, coordinators, false, env...)
}

// newProxiedCluster starts the group; with proxied, every coordinator is
// reached through a user-space TCP proxy (its advertised address), so a
// test can cut it off from the workers while raft still connects it.
func newProxiedCluster(t *testing.T, coordinators int, proxied bool, env ...string) *testCluster {
	c := &testCluster{t: t, dir: t.TempDir(), token: "s3cret-job-token", workers: map[string]*proc{}, env: env}
	c.startGroup(coordinators, proxied)
	return c
}

// startGroup starts the coordinators (behind proxies if asked) and the
// test's client, and waits for a leader.
func (c *testCluster) startGroup(coordinators int, proxied bool) {
	t := c.t
	addrs := freeAddrs(t, 2*coordinators)
	c.raft, c.grpc = addrs[:coordinators], addrs[coordinators:]
	c.adv = c.grpc
	if proxied {
		c.adv = nil
		for _, a := range c.grpc {
			p := newTCPProxy(t, a)
			c.proxies = append(c.proxies, p)
			c.adv = append(c.adv, p.Addr())
		}
	}
	c.coords = make([]*proc, coordinators)
	for i := range c.coords {
		c.startCoordinator(i)
	}
	t.Cleanup(c.stopAll)
	client, err := coordinator.Dial(context.Background(), coordinator.ClientConfig{Addrs: c.adv, Token: c.token, TLS: c.clientTLS, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.client = client
	t.Cleanup(func() { client.Close() })
	c.waitStatus("a raft leader", 20*time.Second, func(st coordinator.Status) bool { return st.Leader != "" })
}

func (c *testCluster) start(name string, args ...string) *proc {
	self, err := os.Executable()
	if err != nil {
		c.t.Fatal(err)
	}
	args = append(args, c.procArgs...)
	p := &proc{name: name, args: args, log: &syncio.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(self, args...)
	p.cmd.Env = append(append(os.Environ(), "CAUSALRM_TOKEN="+c.token), c.env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p
}

// startCoordinator (re)starts coordinator i with its data directory.
func (c *testCluster) startCoordinator(i int) {
	var servers []string
	for j := range c.raft {
		servers = append(servers, fmt.Sprintf("c%d=%s/%s", j, c.raft[j], c.adv[j]))
	}
	args := []string{"coordinator", "--id", fmt.Sprintf("c%d", i), "--raft-addr", c.raft[i], "--grpc-addr", c.grpc[i],
		"--data-dir", filepath.Join(c.dir, fmt.Sprintf("c%d", i)), "--servers", strings.Join(servers, ","),
		"--heartbeat-timeout", "1s"}
	if i == 0 {
		args = append(args, "--bootstrap")
	}
	args = append(args, c.coordArgs...)
	c.coords[i] = c.start(fmt.Sprintf("c%d", i), args...)
}

func (c *testCluster) startWorker(id string) *proc {
	p := c.start(id, "worker", "--coordinators", strings.Join(c.adv, ","), "--id", id, "--quiet", "--op-timeout", "20s")
	c.mu.Lock()
	c.workers[id] = p
	c.mu.Unlock()
	return p
}

func (c *testCluster) stopAll() {
	var all []*proc
	c.mu.Lock()
	for _, p := range c.workers {
		all = append(all, p)
	}
	c.mu.Unlock()
	all = append(all, c.coords...)
	for _, p := range all {
		if p != nil && !p.exited() {
			_ = p.cmd.Process.Kill()
		}
	}
	for _, p := range all {
		if p != nil {
			<-p.done
		}
	}
	if c.t.Failed() {
		for _, p := range all {
			if p != nil {
				c.t.Logf("--- %s (%v):\n%s", p.name, p.err, tail(p.log.String(), 3000))
			}
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// waitStatus polls the coordinators until cond holds.
func (c *testCluster) waitStatus(what string, timeout time.Duration, cond func(coordinator.Status) bool) coordinator.Status {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last coordinator.Status
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := c.client.Status(ctx)
		cancel()
		if err == nil {
			last = st
			if st.JobStatus.Phase == state.JobFailed {
				c.t.Fatalf("waiting for %s: the job failed: %s", what, st.JobStatus.Message)
			}
			if cond(st) {
				return st
			}
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("timed out waiting for %s (last status: leader %q, job %+v, generation %+v, watermark %d, members %+v, rewinds %+v; err %v)",
		what, last.Leader, last.JobStatus, last.Generation, last.Watermark.GlobalStep, last.Members, last.Rewinds, lastErr)
	return last
}

// elasticJob is the job every elastic test trains, small but with enough
// steps (about 250 over the four stages) to change membership mid-stage.
var elasticJob = []string{"--max-epochs", "4", "--hidden", "16,8", "--batch", "64", "--shards", "16",
	"--method", "causalrm-dr", "--quiet"}

type reference struct {
	sha           string
	stepsPerEpoch map[string]int
	epochs        map[string]int
}

// elasticReference makes the data and trains the one-process reference.
func elasticReference(t *testing.T, dir string) (string, reference) {
	data := filepath.Join(dir, "data.safetensors")
	if out, err := run(t, "simulate", "--rows", "2000", "--test-rows", "300", "--dim", "16", "--latent", "4", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	ref := filepath.Join(dir, "ref")
	if out, err := run(t, append([]string{"train", "--data", data, "--out", ref}, elasticJob...)...); err != nil {
		t.Fatalf("reference: %v\n%s", err, out)
	}
	r := reference{stepsPerEpoch: map[string]int{}, epochs: map[string]int{}}
	r.sha, _ = fileSHA256(filepath.Join(ref, "reward.safetensors"))
	var rm RunMetrics
	raw, err := os.ReadFile(filepath.Join(ref, "metrics.json"))
	if err != nil || json.Unmarshal(raw, &rm) != nil {
		t.Fatalf("reference metrics: %v", err)
	}
	for _, s := range rm.Stages {
		r.stepsPerEpoch[s.Name] = int(math.Ceil(float64(s.Rows) / 64))
		r.epochs[s.Name] = s.Epochs
	}
	return data, r
}

func (c *testCluster) submit(data, out string, extra ...string) {
	args := append([]string{"submit", "--coordinators", strings.Join(c.adv, ","), "--token", c.token, "--data", data, "--out", out}, elasticJob...)
	if o, err := run(c.t, append(append(args, extra...), c.procArgs...)...); err != nil {
		c.t.Fatalf("submit: %v\n%s", err, o)
	}
}

// finish waits for the job to be done and checks the oracle.
func (c *testCluster) finish(out string, ref reference) coordinator.Status {
	c.t.Helper()
	st := c.waitStatus("the job to finish", 3*time.Minute, func(st coordinator.Status) bool { return st.JobStatus.Phase == state.JobDone })
	got, err := fileSHA256(filepath.Join(out, "reward.safetensors"))
	if err != nil {
		c.t.Fatal(err)
	}
	if got != ref.sha || st.JobStatus.RewardSHA256 != ref.sha {
		c.t.Fatalf("reward.safetensors sha256 %s (reported %s), the one-process run %s", got, st.JobStatus.RewardSHA256, ref.sha)
	}
	if err := state.CheckExactlyOnce(stepLog(st), ref.stepsPerEpoch, ref.epochs); err != nil {
		c.t.Fatalf("committed progress: %v", err)
	}
	return st
}

func stepLog(st coordinator.Status) []state.StepRange {
	out := make([]state.StepRange, len(st.Log))
	for i, e := range st.Log {
		out[i] = e.StepRange
	}
	return out
}

func members(n int) func(coordinator.Status) bool {
	return func(st coordinator.Status) bool { return st.Generation != nil && len(st.Generation.Members) == n }
}

func atLeast(step uint64) func(coordinator.Status) bool {
	return func(st coordinator.Status) bool { return st.Watermark.GlobalStep >= step }
}

var pauseRE = regexp.MustCompile(`generation change pause.*generation=(\d+).*pause=(\S+)`)

// pauses lists the pauses a worker's log reports, by generation.
func pauses(log string) []string {
	var out []string
	for _, m := range pauseRE.FindAllStringSubmatch(log, -1) {
		out = append(out, "gen "+m[1]+": "+m[2])
	}
	return out
}

// Scale 2 -> 4 -> 2 -> 4 -> 2 mid-stage, the scale-downs by SIGTERM: the
// survivors never restart, the leavers exit cleanly, and the oracle holds.
func TestElasticScaleUpAndDown(t *testing.T) {
	dir := t.TempDir()
	data, ref := elasticReference(t, dir)
	c := newTestCluster(t, 1, stepDelayEnv+"=30ms")
	out := filepath.Join(dir, "out")
	c.submit(data, out, "--min-workers", "2", "--report-every", "5")
	w1, w2 := c.startWorker("w1"), c.startWorker("w2")
	step := uint64(20)
	for round, ids := range [][2]string{{"w3", "w4"}, {"w5", "w6"}} {
		if st := c.waitStatus(fmt.Sprintf("round %d: step %d", round, step), time.Minute, atLeast(step)); st.RowsPerSec <= 0 {
			t.Fatalf("status shows %v rows/s while training", st.RowsPerSec)
		}
		a, b := c.startWorker(ids[0]), c.startWorker(ids[1])
		st := c.waitStatus("4 members", time.Minute, members(4))
		t.Logf("round %d: scaled up to 4 at global step %d (generation %d)", round, st.Watermark.GlobalStep, st.Generation.Number)
		c.waitStatus("progress with 4", time.Minute, atLeast(st.Watermark.GlobalStep+20))
		a.cmd.Process.Signal(syscall.SIGTERM)
		b.cmd.Process.Signal(syscall.SIGTERM)
		st = c.waitStatus("2 members", time.Minute, members(2))
		t.Logf("round %d: scaled down to 2 at global step %d (generation %d)", round, st.Watermark.GlobalStep, st.Generation.Number)
		for _, p := range []*proc{a, b} {
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				t.Fatalf("%s did not exit after SIGTERM", p.name)
			}
			if p.err != nil {
				t.Fatalf("%s left with an error: %v", p.name, p.err)
			}
		}
		step = st.Watermark.GlobalStep + 20
	}
	st := c.finish(out, ref)
	for _, p := range []*proc{w1, w2} {
		<-p.done
		if p.err != nil {
			t.Fatalf("survivor %s: %v", p.name, p.err)
		}
		if strings.Count(p.log.String(), "took the state from a peer") > 0 {
			t.Fatalf("survivor %s restarted from a peer's state", p.name)
		}
		t.Logf("survivor %s (pid %d, never restarted) pauses: %v", p.name, p.cmd.Process.Pid, pauses(p.log.String()))
	}
	t.Logf("final generation %d; %d committed ranges", st.Generation.Number, len(st.Log))
}

// killAndMeasure kills the given workers with SIGKILL at once and returns
// the time until the coordinators commit a step past the failure with the
// survivors (want members).
func (c *testCluster) killAndMeasure(want int, ps ...*proc) time.Duration {
	c.t.Helper()
	before := c.waitStatus("a status", 10*time.Second, func(coordinator.Status) bool { return true })
	start := time.Now()
	for _, p := range ps {
		_ = p.cmd.Process.Kill()
	}
	c.waitStatus(fmt.Sprintf("a generation of %d", want), time.Minute, members(want))
	// The next report after the one in flight at the kill.
	c.waitStatus("a step committed after the kill", time.Minute, atLeast(before.Watermark.GlobalStep+10))
	took := time.Since(start)
	for _, p := range ps {
		<-p.done
	}
	return took
}

// kill -9 of one worker mid-training, then of two of four at once: the
// survivors reconcile (no restart, no rollback) and the oracle holds.
func TestElasticKillWorkers(t *testing.T) {
	dir := t.TempDir()
	data, ref := elasticReference(t, dir)
	c := newTestCluster(t, 1, stepDelayEnv+"=30ms")
	out := filepath.Join(dir, "out")
	c.submit(data, out, "--min-workers", "4", "--report-every", "5")
	ws := map[string]*proc{}
	for _, id := range []string{"w1", "w2", "w3", "w4"} {
		ws[id] = c.startWorker(id)
	}
	c.waitStatus("step 25", time.Minute, atLeast(25))
	t.Logf("kill -9 of one worker of four: next committed step %v after the kill", c.killAndMeasure(3, ws["w4"]))
	ws["w5"] = c.startWorker("w5")
	st := c.waitStatus("w5 joined", time.Minute, members(4))
	c.waitStatus("progress with w5", time.Minute, atLeast(st.Watermark.GlobalStep+15))
	t.Logf("kill -9 of two workers of four at once: next committed step %v after the kill", c.killAndMeasure(2, ws["w2"], ws["w3"]))
	c.finish(out, ref)
	logSurvivors(t, ws["w1"], ws["w5"])
}

func (c *testCluster) coordinatorIndex(id string) int {
	for i := range c.coords {
		if fmt.Sprintf("c%d", i) == id {
			return i
		}
	}
	c.t.Fatalf("no coordinator %q", id)
	return -1
}

// kill -9 of the raft leader of three coordinators mid-training: a new
// leader is elected, the workers keep training and re-attach to it, the
// killed member restarts from its data directory, and the oracle holds.
func TestElasticCoordinatorLeaderKill(t *testing.T) {
	dir := t.TempDir()
	data, ref := elasticReference(t, dir)
	c := newTestCluster(t, 3, stepDelayEnv+"=30ms")
	out := filepath.Join(dir, "out")
	c.submit(data, out, "--min-workers", "2", "--report-every", "5")
	w1, w2 := c.startWorker("w1"), c.startWorker("w2")
	before := c.waitStatus("step 30", time.Minute, atLeast(30))
	old := before.Leader
	i := c.coordinatorIndex(old)
	start := time.Now()
	_ = c.coords[i].cmd.Process.Kill()
	<-c.coords[i].done
	st := c.waitStatus("a new leader", time.Minute, func(st coordinator.Status) bool { return st.Leader != "" && st.Leader != old })
	elected := time.Since(start)
	c.waitStatus("a step committed under the new leader", time.Minute, atLeast(st.Watermark.GlobalStep+10))
	t.Logf("leader %s killed at global step %d: %s elected after %v, next committed step after %v (workers kept generation %d)",
		old, before.Watermark.GlobalStep, st.Leader, elected.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), st.Generation.Number)
	if st.Generation.Number != before.Generation.Number {
		t.Fatalf("the failover changed the generation %d -> %d: a worker was dropped", before.Generation.Number, st.Generation.Number)
	}
	c.startCoordinator(i)
	c.finish(out, ref)
	waitExited(t, w1, w2)
}

// Every worker killed (kill -9) after a checkpoint: new workers resume
// from the last checkpoint, the coordinators rewind the step log to it,
// and the oracle holds. Then every coordinator is restarted while the
// workers train: they keep going and re-attach.
func TestElasticRestartFromCheckpoint(t *testing.T) {
	dir := t.TempDir()
	data, ref := elasticReference(t, dir)
	c := newTestCluster(t, 3, stepDelayEnv+"=30ms")
	out := filepath.Join(dir, "out")
	c.submit(data, out, "--min-workers", "2", "--report-every", "5", "--checkpoint-every", "20")
	w1, w2 := c.startWorker("w1"), c.startWorker("w2")
	st := c.waitStatus("progress past a checkpoint past step 40", time.Minute, func(st coordinator.Status) bool {
		return st.LastCheckpoint != nil && st.LastCheckpoint.GlobalStep >= 40 && st.Watermark.GlobalStep >= st.LastCheckpoint.GlobalStep+10
	})
	_ = w1.cmd.Process.Kill()
	_ = w2.cmd.Process.Kill()
	<-w1.done
	<-w2.done
	t.Logf("killed every worker at global step %d; last checkpoint at %d (%d bytes)",
		st.Watermark.GlobalStep, st.LastCheckpoint.GlobalStep, st.LastCheckpoint.Size)
	w3, w4 := c.startWorker("w3"), c.startWorker("w4")
	st = c.waitStatus("the restart", time.Minute, func(st coordinator.Status) bool {
		return st.Generation != nil && st.Generation.Cause.Has(state.ChangeRestart) && len(st.Rewinds) > 0
	})
	t.Logf("restarted in generation %d, step log rewound %+v", st.Generation.Number, st.Rewinds)
	c.waitStatus("progress after the restart", time.Minute, atLeast(st.Watermark.GlobalStep+20))
	// Restart every coordinator while the workers train.
	for i := range c.coords {
		_ = c.coords[i].cmd.Process.Kill()
		<-c.coords[i].done
	}
	down := time.Now()
	for i := range c.coords {
		c.startCoordinator(i)
	}
	st2 := c.waitStatus("a leader after restarting every coordinator", time.Minute, func(st coordinator.Status) bool { return st.Leader != "" })
	t.Logf("every coordinator restarted: leader %s after %v, generation %d", st2.Leader, time.Since(down).Round(time.Millisecond), st2.Generation.Number)
	// Then every process dies at once, past another checkpoint: the job
	// restarted from scratch processes resumes from the last checkpoint.
	st = c.waitStatus("progress past a later checkpoint", time.Minute, func(st coordinator.Status) bool {
		return st.LastCheckpoint != nil && st.LastCheckpoint.GlobalStep >= st2.Watermark.GlobalStep+20 && st.Watermark.GlobalStep >= st.LastCheckpoint.GlobalStep+5
	})
	for _, p := range append([]*proc{w3, w4}, c.coords...) {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	t.Logf("killed every process at global step %d; last checkpoint at %d", st.Watermark.GlobalStep, st.LastCheckpoint.GlobalStep)
	for i := range c.coords {
		c.startCoordinator(i)
	}
	w5, w6 := c.startWorker("w5"), c.startWorker("w6")
	st = c.waitStatus("the second restart", time.Minute, func(st coordinator.Status) bool {
		return st.Generation != nil && st.Generation.Index("w5") >= 0 && len(st.Rewinds) > 1
	})
	t.Logf("restarted in generation %d, rewinds %+v", st.Generation.Number, st.Rewinds)
	c.finish(out, ref)
	waitExited(t, w5, w6)
}

// Refusals: a wrong job token, a malformed job spec, a report or an
// activation naming a generation the worker is not in, and a second worker
// claiming a registered worker's id. None of them changes the job.
func TestElasticRefusals(t *testing.T) {
	dir := t.TempDir()
	data, _ := elasticReference(t, dir)
	c := newTestCluster(t, 1, stepDelayEnv+"=20ms")
	ctx := context.Background()

	// Wrong token: the CLI and a worker are refused.
	if out, err := run(t, "status", "--coordinators", strings.Join(c.adv, ","), "--token", "wrong"); err == nil || !strings.Contains(err.Error()+out, "token") {
		t.Fatalf("status with a wrong token: %v\n%s", err, out)
	}
	bad := c.start("intruder", "worker", "--coordinators", strings.Join(c.adv, ","), "--id", "intruder", "--token", "wrong", "--quiet")
	select {
	case <-bad.done:
		if bad.err == nil || !strings.Contains(bad.log.String(), "token") {
			t.Fatalf("worker with a wrong token: %v\n%s", bad.err, bad.log.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a worker with a wrong token kept running")
	}

	// Malformed specs, refused naming the field, by the CLI and the service.
	if out, err := run(t, "submit", "--coordinators", strings.Join(c.adv, ","), "--token", c.token, "--data", data,
		"--min-workers", "0"); err == nil || !strings.Contains(err.Error(), `"min_workers"`) {
		t.Fatalf("submit with min-workers 0: %v\n%s", err, out)
	}
	spec := state.JobSpec{ID: "job", Shards: 0, MinWorkers: 1}
	if err := c.client.SubmitJob(ctx, spec); err == nil || !strings.Contains(err.Error(), `"shards"`) {
		t.Fatalf("spec with 0 shards: %v", err)
	}
	if st, _ := c.client.Status(ctx); st.Job != nil {
		t.Fatalf("a refused spec was stored: %+v", st.Job)
	}

	out := filepath.Join(dir, "out")
	c.submit(data, out, "--min-workers", "2", "--report-every", "5")
	c.startWorker("w1")
	c.startWorker("w2")
	st := c.waitStatus("step 10", time.Minute, atLeast(10))
	w1 := st.Generation.Members[st.Generation.Index("w1")]

	// A second process claiming w1's id from another address.
	if err := c.client.Register(ctx, "w1", "127.0.0.1:1"); err == nil {
		t.Fatal("a second registration of an active worker's id at another address was accepted")
	}
	// Stale or foreign generations.
	if err := c.client.Activated(ctx, "w1", st.Generation.Number+5); err == nil {
		t.Fatal("activation of a generation that does not exist was accepted")
	}
	if err := c.client.ReportProgress(ctx, state.Progress{WorkerID: "w1", Generation: st.Generation.Number + 5, GlobalStep: 1 << 40}); err == nil {
		t.Fatal("a report naming a future generation was accepted")
	}
	if err := c.client.ReportProgress(ctx, state.Progress{WorkerID: "ghost", Generation: st.Generation.Number, GlobalStep: 1 << 40}); err == nil {
		t.Fatal("a report from an unregistered worker was accepted")
	}
	after, _ := c.client.Status(ctx)
	if after.Watermark.GlobalStep >= 1<<40 || after.Generation.Members[after.Generation.Index("w1")] != w1 {
		t.Fatalf("a refused call changed the job: %+v", after.Watermark)
	}
}

// newTCPProxy starts a proxy to target, closed when the test ends.
func newTCPProxy(t *testing.T, target string) *tcpproxy.Proxy {
	p, err := tcpproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// The raft leader of three is cut off from the workers (its proxy drops
// and refuses their connections) while raft still reaches it: the workers
// keep training, the leader notices it hears none of them and hands
// leadership to a peer they reach; no step is lost and the oracle holds.
func TestElasticLeaderPartitionedFromWorkers(t *testing.T) {
	dir := t.TempDir()
	data, ref := elasticReference(t, dir)
	c := newProxiedCluster(t, 3, true, stepDelayEnv+"=30ms")
	out := filepath.Join(dir, "out")
	c.submit(data, out, "--min-workers", "2", "--report-every", "5")
	w1, w2 := c.startWorker("w1"), c.startWorker("w2")
	before := c.waitStatus("step 30", time.Minute, atLeast(30))
	i := c.coordinatorIndex(before.Leader)
	start := time.Now()
	c.proxies[i].Partition(true)
	st := c.waitStatus("a new leader the workers reach", time.Minute, func(st coordinator.Status) bool {
		return st.Leader != "" && st.Leader != before.Leader && st.Watermark.GlobalStep >= before.Watermark.GlobalStep+10
	})
	t.Logf("leader %s cut off from the workers at global step %d: %s leads and steps are committed again after %v (generation %d -> %d)",
		before.Leader, before.Watermark.GlobalStep, st.Leader, time.Since(start).Round(time.Millisecond), before.Generation.Number, st.Generation.Number)
	if st.Generation.Number != before.Generation.Number {
		t.Fatalf("the partition changed the generation %d -> %d", before.Generation.Number, st.Generation.Number)
	}
	c.proxies[i].Partition(false)
	c.finish(out, ref)
	waitExited(t, w1, w2)
}

// A worker that arrives after the job ended (a replacement started as the
// others finish) has nothing to join: it exits at once, cleanly, instead
// of waiting for a generation until its join timeout. Found by causalrm
// chaos as a process left behind.
func TestElasticLateWorkerExits(t *testing.T) {
	dir := t.TempDir()
	data, ref := elasticReference(t, dir)
	c := newTestCluster(t, 1)
	out := filepath.Join(dir, "out")
	c.submit(data, out, "--min-workers", "1")
	w1 := c.startWorker("w1")
	c.finish(out, ref)
	waitExited(t, w1)
	late := c.startWorker("late")
	select {
	case <-late.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("a worker started after the job ended is still running after 20 s:\n%s", tail(late.log.String(), 2000))
	}
	if late.err != nil {
		t.Fatalf("late worker: %v\n%s", late.err, tail(late.log.String(), 2000))
	}
}

// A worker registered while the job runs, but not yet in a generation when
// the job ends (here the coordinators batch membership changes for 30 s),
// exits when the job ends instead of waiting for a generation until its
// join timeout (10 minutes): the process chaos found left behind.
func TestElasticWorkerWaitingToJoinExitsWhenTheJobEnds(t *testing.T) {
	dir := t.TempDir()
	data, ref := elasticReference(t, dir)
	c := &testCluster{t: t, dir: t.TempDir(), token: "s3cret-job-token", workers: map[string]*proc{},
		env: []string{stepDelayEnv + "=20ms"}, coordArgs: []string{"--batch-window", "30s"}}
	c.startGroup(1, false)
	out := filepath.Join(dir, "out")
	c.submit(data, out, "--min-workers", "1")
	w1 := c.startWorker("w1")
	c.waitStatus("step 5", time.Minute, atLeast(5))
	late := c.startWorker("late")
	c.waitStatus("late registered", time.Minute, func(st coordinator.Status) bool {
		for _, w := range st.Members {
			if w.ID == "late" {
				return true
			}
		}
		return false
	})
	c.finish(out, ref)
	waitExited(t, w1)
	select {
	case <-late.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the waiting worker is still running 20 s after the job ended:\n%s", tail(late.log.String(), 2000))
	}
	if late.err != nil {
		t.Fatalf("late worker: %v\n%s", late.err, tail(late.log.String(), 2000))
	}
}

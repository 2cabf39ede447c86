package main

import (
	"bufio"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/coordinator/state"
)

// httpGet is one GET of http://addr+path: the status code and body.
func httpGet(addr, path string) (int, string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// families is one parsed scrape of /metrics.
type families map[string]*dto.MetricFamily

func scrape(t *testing.T, addr string) families {
	t.Helper()
	code, body, err := httpGet(addr, "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET %s/metrics: %d %v", addr, code, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse %s/metrics: %v", addr, err)
	}
	return fams
}

// sum is the sum of the samples of metric name whose labels include
// labels (name=value pairs); found is false when none matches.
func (f families) sum(name string, labels ...string) (v float64, found bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
outer:
	for _, m := range fam.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			ok := false
			for _, lp := range m.GetLabel() {
				ok = ok || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
			}
			if !ok {
				continue outer
			}
		}
		found = true
		switch {
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		case m.Untyped != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v, found
}

// must is sum, failing the test when the metric is missing.
func (f families) must(t *testing.T, who, name string, labels ...string) float64 {
	t.Helper()
	v, ok := f.sum(name, labels...)
	if !ok {
		t.Fatalf("%s: no %s%v in /metrics", who, name, labels)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		t.Fatalf("%s: %s%v = %v", who, name, labels, v)
	}
	return v
}

func waitCode(t *testing.T, addr, path string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var code int
	var body string
	var err error
	for time.Now().Before(deadline) {
		if code, body, err = httpGet(addr, path); err == nil && code == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s%s: want %d, last %d %q %v", addr, path, want, code, strings.TrimSpace(body), err)
}

// One coordinator and two workers with --metrics-addr: /healthz and
// /readyz answer as documented (a worker with no job yet is alive but not
// ready), and /metrics during training holds the metrics of issue 5 with
// sane values. One worker logs JSON (--log-format json).
func TestMetricsEndpoints(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data.safetensors")
	if out, err := run(t, "simulate", "--rows", "2000", "--test-rows", "300", "--dim", "16", "--latent", "4", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	maddr := freeAddrs(t, 3)
	c := &testCluster{t: t, dir: t.TempDir(), token: "s3cret-job-token", workers: map[string]*proc{},
		env: []string{stepDelayEnv + "=30ms"}, coordArgs: []string{"--metrics-addr", maddr[0], "--log-format", "json"}}
	c.startGroup(1, false)
	waitCode(t, maddr[0], "/healthz", 200, 10*time.Second)
	waitCode(t, maddr[0], "/readyz", 200, 10*time.Second)

	startWorker := func(id, addr string, extra ...string) *proc {
		p := c.start(id, append([]string{"worker", "--coordinators", strings.Join(c.adv, ","), "--id", id, "--quiet",
			"--op-timeout", "20s", "--metrics-addr", addr}, extra...)...)
		c.mu.Lock()
		c.workers[id] = p
		c.mu.Unlock()
		return p
	}
	// No job yet: w1 is alive but not ready.
	w1 := startWorker("w1", maddr[1])
	waitCode(t, maddr[1], "/healthz", 200, 10*time.Second)
	if code, body, err := httpGet(maddr[1], "/readyz"); err != nil || code != 503 {
		t.Fatalf("w1 /readyz with no job submitted: %d %q %v (want 503)", code, body, err)
	}
	if f := scrape(t, maddr[1]); f.must(t, "w1", "causalrm_generation") != 0 || f.must(t, "w1", "causalrm_worker_ready") != 0 {
		t.Fatalf("w1 before any job: generation or ready not 0")
	}

	out := filepath.Join(dir, "out")
	c.submit(data, out, "--min-workers", "2", "--report-every", "5", "--checkpoint-every", "10")
	if code, _, _ := httpGet(maddr[1], "/readyz"); code != 503 {
		t.Fatalf("w1 /readyz before the job's first generation: %d (want 503)", code)
	}
	w2 := startWorker("w2", maddr[2], "--log-format", "json")
	c.waitStatus("training past step 20", time.Minute, atLeast(20))

	// During training.
	for _, a := range maddr {
		waitCode(t, a, "/healthz", 200, 5*time.Second)
		waitCode(t, a, "/readyz", 200, 5*time.Second)
	}
	first := map[string]families{"w1": scrape(t, maddr[1]), "w2": scrape(t, maddr[2])}
	time.Sleep(1500 * time.Millisecond)
	for i, id := range []string{"w1", "w2"} {
		f := scrape(t, maddr[i+1])
		s0, s1 := first[id].must(t, id, "causalrm_worker_global_step"), f.must(t, id, "causalrm_worker_global_step")
		if s0 <= 0 || s1 <= s0 {
			t.Fatalf("%s: global step %v then %v: want > 0 and increasing", id, s0, s1)
		}
		rps := f.must(t, id, "causalrm_worker_rows_per_second")
		loss := f.must(t, id, "causalrm_worker_loss")
		sent := f.must(t, id, "causalrm_allreduce_bytes_total", "direction", "sent")
		recv := f.must(t, id, "causalrm_allreduce_bytes_total", "direction", "received")
		s2sent, _ := f.sum("causalrm_allreduce_bytes_total", "direction", "sent", "codec", "s2")
		secs := f.must(t, id, "causalrm_allreduce_seconds_total", "codec", "s2")
		ops := f.must(t, id, "causalrm_allreduce_ops_total")
		gen := f.must(t, id, "causalrm_generation")
		starts := f.must(t, id, "causalrm_generation_changes_total", "cause", "start")
		changes := f.must(t, id, "causalrm_generation_changes_total")
		rec := f.must(t, id, "causalrm_reconciliations_total")
		t.Logf("%s: step %v -> %v, rows/s %.0f, loss %.4f, allreduce sent %v (s2 %v) received %v bytes, %.2fs in %v ops, generation %v (%v changes, %v start), reconciliations %v",
			id, s0, s1, rps, loss, sent, s2sent, recv, secs, ops, gen, changes, starts, rec)
		switch {
		case rps <= 0:
			t.Fatalf("%s: rows/s %v", id, rps)
		case loss <= 0:
			t.Fatalf("%s: loss %v", id, loss)
		case sent <= 0 || recv <= 0 || s2sent <= 0:
			t.Fatalf("%s: all-reduce bytes sent %v (s2 %v), received %v", id, sent, s2sent, recv)
		case secs <= 0 || ops <= 0:
			t.Fatalf("%s: all-reduce %vs, %v ops", id, secs, ops)
		case gen < 1 || changes < 1 || rec != 0:
			t.Fatalf("%s: generation %v, %v changes, %v reconciliations", id, gen, changes, rec)
		}
		for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
			f.must(t, id, name)
		}
	}
	cf := scrape(t, maddr[0])
	leader := cf.must(t, "c0", "causalrm_raft_state", "state", "leader")
	follower := cf.must(t, "c0", "causalrm_raft_state", "state", "follower")
	commits := cf.must(t, "c0", "causalrm_raft_commit_seconds")
	jobStep := cf.must(t, "c0", "causalrm_job_global_step")
	lastIndex := cf.must(t, "c0", "causalrm_raft_last_index")
	cgen := cf.must(t, "c0", "causalrm_generation")
	cstart := cf.must(t, "c0", "causalrm_generation_changes_total", "cause", "start")
	active := cf.must(t, "c0", "causalrm_workers", "status", "active")
	rewinds := cf.must(t, "c0", "causalrm_rewinds_total")
	t.Logf("c0: leader %v, %v commits, job step %v, last index %v, generation %v (%v start), %v active workers, %v rewinds",
		leader, commits, jobStep, lastIndex, cgen, cstart, active, rewinds)
	switch {
	case leader != 1 || follower != 0:
		t.Fatalf("c0: raft_state leader %v follower %v", leader, follower)
	case commits <= 0 || jobStep <= 0 || lastIndex <= 0:
		t.Fatalf("c0: %v commits, job step %v, last index %v", commits, jobStep, lastIndex)
	case cgen < 1 || cstart != 1 || active != 2 || rewinds != 0:
		t.Fatalf("c0: generation %v, %v start commits, %v active workers, %v rewinds", cgen, cstart, active, rewinds)
	}

	// Checkpoints every 10 steps: the coordinator's record and the rank-0
	// worker's own upload both have an age.
	c.waitStatus("a checkpoint", time.Minute, func(st coordinator.Status) bool { return st.LastCheckpoint != nil })
	time.Sleep(200 * time.Millisecond)
	if age := scrape(t, maddr[0]).must(t, "c0", "causalrm_checkpoint_age_seconds"); age < 0 || age > 60 {
		t.Fatalf("c0: checkpoint age %v", age)
	}
	var ages []float64
	for i := range 2 {
		if a, ok := scrape(t, maddr[i+1]).sum("causalrm_checkpoint_age_seconds"); ok {
			ages = append(ages, a)
		}
	}
	if len(ages) != 1 || ages[0] < 0 || ages[0] > 60 {
		t.Fatalf("workers' checkpoint ages %v: want one (the rank-0 writer's), 0..60s", ages)
	}

	c.waitStatus("the job to finish", 3*time.Minute, func(st coordinator.Status) bool { return st.JobStatus.Phase == state.JobDone })
	for _, p := range []*proc{w1, w2} {
		select {
		case <-p.done:
		case <-time.After(time.Minute):
			t.Fatalf("%s did not exit after the job", p.name)
		}
		if p.err != nil {
			t.Fatalf("%s: %v", p.name, p.err)
		}
	}
	// The coordinator stops on SIGTERM, its metrics server with it.
	_ = c.coords[0].cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.coords[0].done:
	case <-time.After(30 * time.Second):
		t.Fatal("c0 did not exit after SIGTERM")
	}
	if err := c.coords[0].err; err != nil {
		t.Fatalf("c0: %v", err)
	}
	for i, a := range maddr {
		if _, _, err := httpGet(a, "/healthz"); err == nil {
			t.Fatalf("process %d still serves %s after exiting", i, a)
		}
	}
	// --log-format json: w2's and c0's log lines are JSON objects.
	for _, p := range []*proc{w2, c.coords[0]} {
		n := 0
		sc := bufio.NewScanner(strings.NewReader(p.log.String()))
		for sc.Scan() {
			line := sc.Text()
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("%s: log line %q is not JSON: %v", p.name, line, err)
			}
			if m["msg"] == nil || m["level"] == nil {
				t.Fatalf("%s: log line %q lacks msg or level", p.name, line)
			}
			n++
		}
		if n == 0 {
			t.Fatalf("%s logged nothing", p.name)
		}
		t.Logf("%s: %d JSON log lines", p.name, n)
	}
	if !strings.Contains(w1.log.String(), "level=INFO") {
		t.Fatalf("w1 (text logs) has no text log lines:\n%s", tail(w1.log.String(), 2000))
	}
}

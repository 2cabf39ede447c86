package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/causalrm/causalrm/chaos"
)

// The chaos tests run `causalrm chaos` for real (the test binary stands in
// for causalrm: TestMain): coordinators and workers are processes, the
// faults are kill -9 and SIGSTOP. Each run is small (a few seconds of
// training) and checked by chaos's oracle.

// chaosSmall is a small job and a short fault window.
var chaosSmall = []string{"--rows", "1200", "--test-rows", "200", "--dim", "16", "--hidden", "8,4", "--batch", "64",
	"--max-epochs", "3", "--shards", "12", "--step-delay", "50ms", "--duration", "3s", "--faults-per-run", "1",
	"--heartbeat-timeout", "1s", "--stall", "30s", "--run-timeout", "2m"}

// runChaos runs `causalrm chaos` with one fault kind and returns its summary.
func runChaos(t *testing.T, kind string, seed string) (*chaos.Summary, string, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "chaos")
	log, err := run(t, append([]string{"chaos", "--faults", kind, "--runs", "1", "--seed", seed, "--out", out}, chaosSmall...)...)
	raw, rerr := os.ReadFile(filepath.Join(out, "chaos.json"))
	if rerr != nil {
		t.Fatalf("chaos wrote no chaos.json: %v (%v)\n%s", rerr, err, log)
	}
	var sum chaos.Summary
	if err := json.Unmarshal(raw, &sum); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"chaos.md", "timeline.png", "run-01/timeline.png", "run-01/logs/c0.log", "run-01/logs/w1.log"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("missing output %s", f)
		}
	}
	return &sum, log, err
}

// checkInjected fails unless the run passed with its fault injected.
func checkInjected(t *testing.T, sum *chaos.Summary, log string, err error, kind chaos.Kind) {
	t.Helper()
	if err != nil || sum.Failed != 0 || len(sum.Runs) != 1 || !sum.Runs[0].Pass {
		t.Fatalf("chaos %s: %v\n%s", kind, err, log)
	}
	r := sum.Runs[0]
	if len(r.Faults) != 1 || r.Faults[0].Kind != kind || r.Faults[0].Skipped != "" || len(r.Faults[0].Targets) == 0 {
		t.Fatalf("chaos %s: the fault did not strike: %+v\n%s", kind, r.Faults, log)
	}
	if r.RewardSHA256 != sum.Reference.SHA256 || r.RewardSHA256 == "" {
		t.Fatalf("chaos %s: run's reward sha256 %q, reference %q", kind, r.RewardSHA256, sum.Reference.SHA256)
	}
	t.Logf("%s: %s, recovery %v s, %d calls reconciled, %d workers replaced, %.1fs",
		kind, r.Faults[0], deref(r.Faults[0].RecoveryS), r.Reconciled, r.Replacements, r.Seconds)
}

func deref(p *float64) any {
	if p == nil {
		return "none"
	}
	return *p
}

// A worker killed with kill -9 mid-training is replaced; the job still
// trains the one-process bytes with every step committed once.
func TestChaosKillWorker(t *testing.T) {
	sum, log, err := runChaos(t, "kill-worker", "1")
	checkInjected(t, sum, log, err, chaos.KillWorker)
	if sum.Runs[0].Replacements < 1 {
		t.Fatalf("the killed worker was not replaced:\n%s", log)
	}
}

// A worker stopped (SIGSTOP) for seconds, past the heartbeat timeout, and
// continued: the job goes on without it and the oracle holds.
func TestChaosPauseWorker(t *testing.T) {
	sum, log, err := runChaos(t, "pause-worker", "2")
	checkInjected(t, sum, log, err, chaos.PauseWorker)
}

// The oracle can fail: against a wrong expected hash, a run without
// faults fails, chaos.md says why and gives the replay command, and the
// command exits non-zero.
func TestChaosOracleFailsOnWrongReference(t *testing.T) {
	out := filepath.Join(t.TempDir(), "chaos")
	wrong := strings.Repeat("0", 64)
	log, err := run(t, "chaos", "--faults-per-run", "0", "--runs", "1", "--seed", "7", "--out", out, "--coordinators", "1",
		"--workers", "2", "--step-delay", "5ms", "--rows", "1200", "--hidden", "8,4", "--max-epochs", "2", "--expect-sha256", wrong)
	if err == nil || !strings.Contains(err.Error(), "1 of 1 runs failed") {
		t.Fatalf("a run against a wrong expected hash did not fail the command: %v\n%s", err, log)
	}
	raw, rerr := os.ReadFile(filepath.Join(out, "chaos.json"))
	if rerr != nil {
		t.Fatal(rerr)
	}
	var sum chaos.Summary
	if err := json.Unmarshal(raw, &sum); err != nil {
		t.Fatal(err)
	}
	r := sum.Runs[0]
	if r.Pass || !strings.Contains(strings.Join(r.Failures, "\n"), "reward.safetensors sha256") || r.RewardSHA256 != sum.Reference.SHA256 {
		t.Fatalf("failures %q (run's sha256 %s, reference %s)\n%s", r.Failures, r.RewardSHA256, sum.Reference.SHA256, log)
	}
	md, _ := os.ReadFile(filepath.Join(out, "chaos.md"))
	// the replay command: this seed, one run, the other flags as given
	if !strings.HasPrefix(r.Replay, "causalrm chaos --seed 7 --runs 1 ") || !strings.Contains(r.Replay, " --faults-per-run 0 ") ||
		!strings.Contains(r.Replay, " --expect-sha256 "+wrong) || !strings.Contains(r.Replay, " --out ") {
		t.Fatalf("replay command %q", r.Replay)
	}
	if !strings.Contains(string(md), "**FAIL**") || !strings.Contains(string(md), r.Replay) || !strings.Contains(log, r.Replay) {
		t.Fatalf("chaos.md or the progress does not give the replay command %q:\n%s\n%s", r.Replay, md, log)
	}
}

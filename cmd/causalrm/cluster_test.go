package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/causalrm/causalrm/causal"
)

// TestMain lets the test binary stand in for the causalrm binary, so that
// train --workers can start its worker processes from it.
func TestMain(m *testing.M) {
	if os.Getenv("CAUSALRM_TEST_AS_CLI") == "1" {
		main()
		os.Exit(0)
	}
	os.Setenv("CAUSALRM_TEST_AS_CLI", "1") // inherited by the workers only
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// N worker processes train the byte-identical model file of the one-process
// run, for every method and every exact codec (the design's oracle).
func TestWorkersMatchSingleProcess(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data.safetensors")
	if out, err := run(t, "simulate", "--rows", "800", "--test-rows", "200", "--dim", "16", "--latent", "4", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	common := []string{"--data", data, "--max-epochs", "3", "--hidden", "8,4", "--batch", "64", "--shards", "12", "--quiet"}
	for _, m := range causal.AllMethods() {
		ref := filepath.Join(dir, string(m)+"-ref")
		if out, err := run(t, append([]string{"train", "--method", string(m), "--out", ref}, common...)...); err != nil {
			t.Fatalf("%s: single process: %v\n%s", m, err, out)
		}
		want, _ := fileSHA256(filepath.Join(ref, "reward.safetensors"))
		for _, codec := range []string{"none", "s2", "zstd"} {
			for _, n := range []int{1, 2, 3} {
				out := filepath.Join(dir, fmt.Sprintf("%s-%s-%d", m, codec, n))
				log, err := run(t, append([]string{"train", "--method", string(m), "--out", out,
					"--workers", fmt.Sprint(n), "--codec", codec}, common...)...)
				if err != nil {
					t.Fatalf("%s, %d workers, codec %s: %v\n%s", m, n, codec, err, log)
				}
				got, _ := fileSHA256(filepath.Join(out, "reward.safetensors"))
				if got != want {
					t.Fatalf("%s, %d workers, codec %s: reward.safetensors sha256 %s, one process %s", m, n, codec, got, want)
				}
			}
		}
	}
}

// In a static ring (reduce fast with a lossy codec, where no state can be
// handed to a replacement) a worker that fails stops the whole job:
// nothing is written and no process is left behind. (The elastic launcher
// of exact mode replaces it instead: TestLauncherReplacesFailedWorkers.)
func TestWorkerFailureStopsAll(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data.safetensors")
	if out, err := run(t, "simulate", "--rows", "400", "--test-rows", "100", "--dim", "8", "--latent", "4", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "out")
	t.Setenv(faultEnv, "2")
	log, err := run(t, "train", "--data", data, "--out", out, "--workers", "3", "--reduce", "fast", "--codec", "int8", "--quiet")
	if err == nil {
		t.Fatalf("job with a failing worker succeeded:\n%s", log)
	}
	if !strings.Contains(log+err.Error(), "fault injected") {
		t.Fatalf("failure not reported: %v\n%s", err, log)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("failed job left files: %v", entries)
	}
}

// Cancelling the launcher (ctrl-C) stops every worker: the call returns the
// cancellation, nothing is written, and no worker process is left.
func TestClusterCancelStopsAll(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data.safetensors")
	if out, err := run(t, "simulate", "--rows", "4000", "--test-rows", "200", "--dim", "32", "--latent", "4", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "out")
	root := newRoot()
	var log strings.Builder
	root.SetOut(&log)
	root.SetErr(&log)
	root.SetArgs([]string{"train", "--data", data, "--out", out, "--workers", "3", "--quiet", "--patience", "1000"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err := root.ExecuteContext(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the cancellation, got %v\n%s", err, log.String())
	}
	if took := time.Since(start); took > 2*time.Second+workerGrace {
		t.Fatalf("stopping took %v", took)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("cancelled job left files: %v", entries)
	}
	// every worker was reaped: none of them is still a child of ours
	if b, err := exec.Command("pgrep", "-P", strconv.Itoa(os.Getpid())).Output(); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		t.Fatalf("workers still running: %s", b)
	}
}

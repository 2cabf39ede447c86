package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// causalrm --version prints the version, as causalrm version does.
func TestVersionFlag(t *testing.T) {
	out, err := run(t, "--version")
	if err != nil || !strings.HasPrefix(out, "causalrm "+version) {
		t.Fatalf("--version: %q, %v", out, err)
	}
}

// status and submit against an address where no coordinator listens fail
// within their --timeout and say what to check.
func TestControlWithoutCoordinatorFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	for _, args := range [][]string{
		{"status", "--coordinators", addr, "--timeout", "1s"},
		{"submit", "--coordinators", addr, "--timeout", "1s", "--data", "d.safetensors"},
	} {
		start := time.Now()
		_, err := run(t, args...)
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "no coordinator answered at "+addr+" within 1s") ||
			!strings.Contains(err.Error(), "causalrm coordinator") {
			t.Errorf("%v: %v", args, err)
		}
		if took > 5*time.Second {
			t.Errorf("%v: took %v with --timeout 1s", args, took)
		}
	}
}

// eval scores rows that have only an id and an embedding (no feedback, no
// split label), takes the run directory as --model, and split names in
// any case; train still refuses such a file, naming the missing field.
func TestEvalScoresUnlabelledRows(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "d.safetensors")
	if out, err := run(t, "simulate", "--rows", "400", "--test-rows", "50", "--dim", "4", "--latent", "2", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	runDir := filepath.Join(dir, "run")
	if out, err := run(t, "train", "--data", data, "--out", runDir, "--hidden", "4", "--max-epochs", "2", "--quiet"); err != nil {
		t.Fatalf("train: %v\n%s", err, out)
	}
	rows := filepath.Join(dir, "new.jsonl")
	if err := os.WriteFile(rows, []byte(`{"id":"a","x":[0.1,0.2,0.3,0.4]}`+"\n"+`{"id":"b","x":[0.4,0.3,0.2,0.1]}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	scores := filepath.Join(dir, "scores.jsonl")
	out, err := run(t, "eval", "--model", runDir, "--data", rows, "--scores", scores)
	if err != nil || !strings.Contains(out, "scored 2 rows") {
		t.Fatalf("eval of id and x only: %v\n%s", err, out)
	}
	raw, _ := os.ReadFile(scores)
	if n := strings.Count(string(raw), `"reward":`); n != 2 {
		t.Fatalf("scores: %q", raw)
	}
	// The same reward as scoring through reward.json.
	again := filepath.Join(dir, "again.jsonl")
	if _, err := run(t, "eval", "--model", filepath.Join(runDir, "reward.json"), "--data", rows, "--split", "TRAIN", "--scores", again); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(again); string(b) != string(raw) {
		t.Fatalf("--model DIR and --model DIR/reward.json differ:\n%s\n%s", raw, b)
	}
	if out, err := run(t, "eval", "--model", runDir, "--data", data, "--split", "Test"); err != nil || !strings.Contains(out, "AUROC") {
		t.Fatalf("--split Test: %v\n%s", err, out)
	}
	if _, err := run(t, "eval", "--model", runDir, "--data", data, "--split", "tset"); err == nil || !strings.Contains(err.Error(), "want train, val or test") {
		t.Fatalf("--split tset: %v", err)
	}
	_, err = run(t, "train", "--data", rows, "--out", filepath.Join(dir, "no"), "--quiet")
	if err == nil || !strings.Contains(err.Error(), `field "o": missing`) {
		t.Fatalf("train on rows without feedback: %v", err)
	}
}

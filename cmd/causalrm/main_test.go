package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/trainer"
)

// run executes the CLI in-process with the given arguments.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String() + errb.String(), err
}

func TestTrainEndToEndSameBytesAnyThreads(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "new", "dir", "data.safetensors") // parents are created
	if out, err := run(t, "simulate", "--rows", "1200", "--test-rows", "300", "--dim", "32", "--latent", "8", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	sums := map[string]string{}
	for _, th := range []string{"1", "2"} {
		out := filepath.Join(dir, "run"+th)
		log, err := run(t, "train", "--data", data, "--out", out, "--threads", th, "--max-epochs", "4",
			"--hidden", "16,8", "--batch", "128", "--method", "causalrm-dr")
		if err != nil {
			t.Fatalf("train --threads %s: %v\n%s", th, err, log)
		}
		for _, f := range []string{"reward.safetensors", "reward.json", "propensity.safetensors", "noise.safetensors",
			"imputation.safetensors", "metrics.json", "report.md", "job.yaml"} {
			if _, err := os.Stat(filepath.Join(out, f)); err != nil {
				t.Errorf("missing output %s", f)
			}
		}
		var m RunMetrics
		raw, _ := os.ReadFile(filepath.Join(out, "metrics.json"))
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		if m.Test == nil || m.FlipRates == nil || m.PropensityValMSE == nil || len(m.Stages) != 3+causal.DefaultFlipFolds*causal.DefaultFlipRepeats+trainer.DefaultRewardModels { // the noise stage's cross-fitting folds, every reward model
			t.Fatalf("metrics.json incomplete: %s", raw)
		}
		sums[th], _ = fileSHA256(filepath.Join(out, "reward.safetensors"))
		if sums[th] != m.RewardSHA256 {
			t.Fatalf("metrics.json sha256 %s, file %s", m.RewardSHA256, sums[th])
		}
	}
	if sums["1"] != sums["2"] {
		t.Fatalf("reward model differs between --threads 1 (%s) and 2 (%s)", sums["1"], sums["2"])
	}
	// eval scores the test split with the saved model and reports metrics.
	scores := filepath.Join(dir, "scores.jsonl")
	out, err := run(t, "eval", "--model", filepath.Join(dir, "run1", "reward.json"), "--data", data, "--scores", scores)
	if err != nil || !strings.Contains(out, "AUROC") {
		t.Fatalf("eval: %v\n%s", err, out)
	}
	raw, _ := os.ReadFile(scores)
	if n := strings.Count(string(raw), "\n"); n != 300 {
		t.Fatalf("scores file has %d lines, want 300", n)
	}
	// eval scores a plain file of rows (no split labels, no test split).
	plain := filepath.Join(dir, "plain.jsonl")
	var pb strings.Builder
	for i := 0; i < 7; i++ {
		fmt.Fprintf(&pb, `{"id":"p%d","x":[%s],"o":0}`+"\n", i, strings.TrimSuffix(strings.Repeat("0.5,", 32), ","))
	}
	os.WriteFile(plain, []byte(pb.String()), 0o644)
	if log, err := run(t, "eval", "--model", filepath.Join(dir, "run1", "reward.json"), "--data", plain, "--split", "train",
		"--scores", filepath.Join(dir, "plain-scores.jsonl")); err != nil || !strings.Contains(log, "scored 7 rows") {
		t.Fatalf("eval of a plain file: %v\n%s", err, log)
	}
	// eval's metrics equal the ones training wrote (same exact forward pass).
	var m RunMetrics
	mraw, _ := os.ReadFile(filepath.Join(dir, "run1", "metrics.json"))
	_ = json.Unmarshal(mraw, &m)
	if want := fmt.Sprintf("AUROC %.4f", m.Test.AUROC); !strings.Contains(out, want) {
		t.Fatalf("eval differs from training's %q:\n%s", want, out)
	}
}

// A failed run writes nothing: bad data leaves no output directory.
func TestTrainBadDataWritesNothing(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	row := `{"id":"a","x":[1,2],"o":1,"y":1,"split":"train"}` + "\n" +
		`{"id":"b","x":[1],"o":1,"y":0,"split":"train"}` + "\n"
	if err := os.WriteFile(bad, []byte(row), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	log, err := run(t, "train", "--data", bad, "--out", out)
	if err == nil {
		t.Fatalf("train on bad data succeeded:\n%s", log)
	}
	if !strings.Contains(err.Error(), "bad.jsonl") || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("error does not name file, line and field: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("failed run left files behind: %v", entries)
	}
}

func TestJobFileAndFlagOverride(t *testing.T) {
	dir := t.TempDir()
	job := filepath.Join(dir, "job.yaml")
	os.WriteFile(job, []byte("data:\n  train: x.safetensors\nmethod: naive\nbatch: 64\nbogus: 1\n"), 0o644)
	if _, err := run(t, "train", "--config", job); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("unknown job field not reported by name: %v", err)
	}
}

// simulate --from applies the protocol to a user's fully labelled file (a
// rating, no feedback columns); training on such a file directly is refused.
func TestSimulateFromLabelledFile(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "labelled.jsonl")
	var b strings.Builder
	for i := 0; i < 500; i++ {
		split := "train"
		if i >= 400 {
			split = "test"
		}
		g := i % 5
		fmt.Fprintf(&b, `{"id":"r%d","x":[%d,%d,1],"rating":%d,"split":"%s"}`+"\n", i, g, i%7, g, split)
	}
	os.WriteFile(src, []byte(b.String()), 0o644)
	out := filepath.Join(dir, "obs.safetensors")
	if log, err := run(t, "simulate", "--from", src, "--alpha", "0.5", "--out", out); err != nil {
		t.Fatalf("simulate --from: %v\n%s", err, log)
	}
	log, err := run(t, "train", "--data", out, "--out", filepath.Join(dir, "run"), "--max-epochs", "2", "--hidden", "4,2")
	if err != nil {
		t.Fatalf("train on the protocol's output: %v\n%s", err, log)
	}
	// The rating decides r: levels 3 and 4 are above the median level 2.
	if !strings.Contains(log, "test: R2") {
		t.Fatalf("no test metrics:\n%s", log)
	}
	src2 := filepath.Join(dir, "labelled_val.jsonl")
	os.WriteFile(src2, []byte(strings.ReplaceAll(b.String(), `"split":"train"`, `"split":"val"`)+
		`{"id":"t0","x":[1,1,1],"rating":1,"split":"train"}`+"\n"), 0o644)
	if _, err := run(t, "train", "--data", src2, "--out", filepath.Join(dir, "run2")); err == nil ||
		!strings.Contains(err.Error(), "simulate --from") {
		t.Fatalf("training on a file without feedback columns: want a pointer to simulate --from, got %v", err)
	}
}

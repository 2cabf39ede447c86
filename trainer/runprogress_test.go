package trainer

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/causalrm/causalrm/causal"
)

// Each stage's end is announced with why it ended, the epoch kept and
// where the whole run stands (stage k of n); a stage already trained (by
// an earlier Reward call) is not counted again.
func TestStageEndLines(t *testing.T) {
	var out strings.Builder
	cfg := smallConfig()
	cfg.Propensity, cfg.FlipRates, cfg.MaxEpochs, cfg.Patience = "learn", nil, 4, 1
	cfg.RewardModels = 1
	cfg.Progress = &out
	tr, err := New(cfg, smallData(t, 300, 6, 2), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Reward(context.Background(), causal.CausalDR); err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`(?m)^stage (\S+) +done after (\d+) epochs: (no improvement for 1 epochs \(patience\)|reached max_epochs 4); kept epoch (\d+) \(\S+\) \[stage (\d+) of (\d+), `)
	got := line.FindAllStringSubmatch(out.String(), -1)
	// The noise stage's cross-fitting folds (the default flip-rate
	// estimator) count as stages of their own, both deals' (the default 2).
	want := []string{"propensity", "noise", "noise-fold1", "noise-fold2", "noise-fold3", "noise-fold4", "noise-fold5",
		"noise-fold1-r2", "noise-fold2-r2", "noise-fold3-r2", "noise-fold4-r2", "noise-fold5-r2", "imputation", "reward/causalrm-dr"}
	if len(got) != len(want) {
		t.Fatalf("%d stage-end lines, want %d:\n%s", len(got), len(want), out.String())
	}
	for i, g := range got {
		if g[1] != want[i] || g[5] != strconv.Itoa(i+1) || g[6] != strconv.Itoa(len(want)) {
			t.Errorf("line %d: %q", i, g[0])
		}
	}
	if !strings.Contains(out.String(), "left for 13 more") {
		t.Errorf("no time-left estimate after the first stage:\n%s", out.String())
	}
	// naive then needs no auxiliary stage: one stage, 1 of 1.
	out.Reset()
	if _, err := tr.Reward(context.Background(), causal.Naive); err != nil {
		t.Fatal(err)
	}
	if got := line.FindAllStringSubmatch(out.String(), -1); len(got) != 1 || got[0][5] != "1" || got[0][6] != "1" {
		t.Fatalf("naive after causalrm-dr: %q", out.String())
	}
}

// compare's path: Prepare for several methods, then Reward for each. The
// count runs across them (aux stages, then each method's reward stages,
// two here) and the elapsed time is the run's, not the time since the
// zero time.
func TestStageEndLinesAcrossMethods(t *testing.T) {
	var out strings.Builder
	cfg := smallConfig()
	cfg.Propensity, cfg.FlipRates, cfg.MaxEpochs, cfg.Patience = "learn", &causal.Rates{Rho01: 0.1, Rho10: 0.2}, 2, 1
	cfg.RewardModels = 2
	cfg.Progress = &out
	tr, err := New(cfg, smallData(t, 300, 6, 2), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	methods := []causal.Method{causal.Naive, causal.CausalIPS, causal.CausalDR}
	if err := tr.Prepare(context.Background(), methods...); err != nil {
		t.Fatal(err)
	}
	for _, m := range methods {
		if _, err := tr.Reward(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	line := regexp.MustCompile(`(?m)^stage (\S+) +done after \d+ epochs: .*\[stage (\d+) of (\d+), (\S+?)[;\]]`)
	got := line.FindAllStringSubmatch(out.String(), -1)
	want := []string{"propensity", "imputation", "reward/naive", "reward/naive/2", "reward/causalrm-ips", "reward/causalrm-ips/2",
		"reward/causalrm-dr", "reward/causalrm-dr/2"}
	if len(got) != len(want) {
		t.Fatalf("%d stage-end lines, want %d:\n%s", len(got), len(want), out.String())
	}
	for i, g := range got {
		if g[1] != want[i] || g[2] != strconv.Itoa(i+1) || g[3] != strconv.Itoa(len(want)) || strings.Contains(g[4], "h") {
			t.Errorf("line %d: %q", i, g[0])
		}
	}
}

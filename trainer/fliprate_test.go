package trainer

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/shard"
)

func flipConfig() Config {
	cfg := smallConfig()
	cfg.Hidden = []int{16, 8}
	cfg.Batch = 128
	cfg.MaxEpochs = 3
	cfg.Shards = 8
	cfg.FlipRates = nil
	return cfg
}

// The cross-fitted estimate (the default) is the same bits on every holder
// of a sharded group as in one process, intervals included, and leaves no
// fold stage behind.
func TestCrossFitRatesHoldersMatchSingleProcess(t *testing.T) {
	cfg := flipConfig()
	one, err := New(cfg, smallData(t, 900, 24, 4), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := one.Prepare(context.Background(), causal.Noise); err != nil {
		t.Fatal(err)
	}
	want := one.Flip
	if want == nil || want.Method != causal.FlipCrossFit || want.Rates != one.Rates {
		t.Fatalf("one process: Flip %+v, Rates %+v", want, one.Rates)
	}
	if !(want.Lo.Rho01 <= want.Rates.Rho01 && want.Rates.Rho01 <= want.Hi.Rho01 &&
		want.Lo.Rho10 <= want.Rates.Rho10 && want.Rates.Rho10 <= want.Hi.Rho10) || want.N01 < 1 || want.N10 < 1 {
		t.Fatalf("interval does not hold its estimate: %+v", want)
	}
	folds := causal.DefaultFlipFolds * causal.DefaultFlipRepeats
	if len(one.Stages) != 1+folds || one.Stages[StageNoise] == nil || len(one.FoldStages()) != folds {
		t.Fatalf("stages after the noise stage: %v", one.Stages)
	}
	const n = 3
	g := newMemGroup(n)
	got := make([]*Trainer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for rank := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, err := holderTrainer(t, cfg, g, rank, n)
			if err == nil {
				err = tr.Prepare(context.Background(), causal.Noise)
			}
			got[rank], errs[rank] = tr, err
		}()
	}
	wg.Wait()
	for rank, tr := range got {
		if errs[rank] != nil {
			t.Fatalf("rank %d: %v", rank, errs[rank])
		}
		if tr.Flip == nil || *tr.Flip != *want || math.Float64bits(tr.Rates.Rho01) != math.Float64bits(one.Rates.Rho01) ||
			math.Float64bits(tr.Rates.Rho10) != math.Float64bits(one.Rates.Rho10) {
			t.Fatalf("rank %d: estimate %+v, one process %+v", rank, tr.Flip, want)
		}
	}
}

// FlipEstimator "anchor" is the paper's estimator exactly: the quantiles of
// the full noise model's logits over all training rows, with no interval.
func TestFlipEstimatorAnchorOption(t *testing.T) {
	cfg := flipConfig()
	cfg.FlipEstimator = causal.FlipAnchor
	ds := smallData(t, 900, 24, 4)
	tr, err := New(cfg, ds, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := tr.Prepare(ctx, causal.Noise); err != nil {
		t.Fatal(err)
	}
	z, err := tr.score(ctx, tr.Stages[StageNoise].Model, ds.Train, func(f float64) float64 { return f })
	if err != nil {
		t.Fatal(err)
	}
	if want := causal.EstimateFlipRates(z, cfg.Quantile); tr.Rates != want || tr.Flip != nil || !tr.RatesEstimated {
		t.Fatalf("anchor: rates %+v (flip %+v), want %+v", tr.Rates, tr.Flip, want)
	}
	cfg.FlipEstimator = "median"
	var fe *FieldError
	if err := cfg.Validate(); !errors.As(err, &fe) || fe.Field != "flip_estimator" {
		t.Fatalf("bad estimator: %v", err)
	}
	cfg.FlipEstimator = ""
	if err := cfg.Validate(); err != nil || cfg.flipEstimator() != causal.FlipCrossFit {
		t.Fatalf("empty estimator: %v, reads as %q", err, cfg.flipEstimator())
	}
	for _, bad := range []int{-1, causal.MaxFlipRepeats + 1} {
		cfg.FlipRepeats = bad
		if err := cfg.Validate(); !errors.As(err, &fe) || fe.Field != "flip_repeats" {
			t.Fatalf("flip_repeats %d: %v", bad, err)
		}
	}
	cfg.FlipRepeats = 0
	if err := cfg.Validate(); err != nil || cfg.flipRepeats() != causal.DefaultFlipRepeats {
		t.Fatalf("flip_repeats 0: %v, reads as %d", err, cfg.flipRepeats())
	}
}

// Repeated deals: each observed training row's logit is the mean of one
// out-of-fold logit per deal, and the second deal is another partition.
// Checked against the fold models applied to the rows directly: with one
// deal a row's logit is its fold model's (fold j mod K); with two, the mean
// of that and of exactly one second-deal model's, which for most rows is
// another fold number than the first deal's. (That the models which score
// a row never trained on it is TestCrossFitScoresAreOutOfFold's check.)
func TestCrossFitRepeatsAverageTheDeals(t *testing.T) {
	ctx := context.Background()
	logits := func(repeats int) (*Trainer, []float64) {
		cfg := flipConfig()
		cfg.FlipRepeats = repeats
		tr, err := New(cfg, smallData(t, 900, 24, 4), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		z, _, err := tr.crossFitLogits(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return tr, z
	}
	one, z1 := logits(1)
	two, z2 := logits(2)
	K := causal.DefaultFlipFolds
	id := func(f float64) float64 { return f }
	obs := shard.ObservedRows(one.ds.Train)
	// Every model's logits of every training row, by fold stage name.
	all := map[string][]float64{}
	for _, tr := range []*Trainer{one, two} {
		for name, res := range tr.Stages {
			if IsFoldStage(name) {
				z, err := tr.score(ctx, res.Model, tr.ds.Train, id)
				if err != nil {
					t.Fatal(err)
				}
				all[name] = z
			}
		}
	}
	moved := 0
	for j, r := range obs {
		first := all[FoldStageOf(0, j%K)][r]
		if math.Float64bits(z1[j]) != math.Float64bits(first) {
			t.Fatalf("one deal, row %d: logit %v, its fold model gives %v", j, z1[j], first)
		}
		// Exactly one second-deal model's logit makes the mean.
		found := 0
		for k := range K {
			if (first+all[FoldStageOf(1, k)][r])/2 == z2[j] {
				found++
				if k != j%K {
					moved++
				}
			}
		}
		if found != 1 {
			t.Fatalf("two deals, row %d: logit %v is the mean with %d second-deal models (want exactly 1)", j, z2[j], found)
		}
	}
	if moved < len(obs)/2 {
		t.Fatalf("the second deal puts only %d of %d rows in another fold than the first", moved, len(obs))
	}
}

// The noise stage's out-of-fold logits: every observed training row is
// scored by the one fold model that did not train on it, so its label
// cannot leak into its own score. Checked by training again with one
// row's label flipped: that row's score stays the same bits while other
// rows' scores move, and the validation rows come after the training rows.
func TestCrossFitScoresAreOutOfFold(t *testing.T) {
	cfg := flipConfig()
	run := func(flip int) ([]float64, []uint8) {
		ds := smallData(t, 900, 24, 4)
		obs := shard.ObservedRows(ds.Train)
		if flip >= 0 {
			ds.Train.Y[obs[flip]] ^= 1
		}
		tr, err := New(cfg, ds, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		z, y, err := tr.crossFitLogits(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(z) != len(obs)+ds.Val.Observed() || len(tr.FoldStages()) != causal.DefaultFlipFolds*causal.DefaultFlipRepeats {
			t.Fatalf("%d logits for %d + %d observed rows; stages left %v", len(z), len(obs), ds.Val.Observed(), tr.Stages)
		}
		return z, y
	}
	base, yb := run(-1)
	for _, j := range []int{0, 7} { // folds 0 and 2
		z, y := run(j)
		if y[j] == yb[j] {
			t.Fatalf("row %d: label not flipped", j)
		}
		if math.Float64bits(z[j]) != math.Float64bits(base[j]) {
			t.Fatalf("observed row %d: its out-of-fold logit moved from %v to %v when its label flipped", j, base[j], z[j])
		}
		moved := 0
		for i := range z {
			if z[i] != base[i] {
				moved++
			}
		}
		if moved == 0 {
			t.Fatalf("flipping row %d's label moved no logit", j)
		}
	}
}

// countingReducer is Local, counting the collective calls.
type countingReducer struct{ calls int }

func (c *countingReducer) MaxFloat64(context.Context, []float64) error { c.calls++; return nil }
func (c *countingReducer) SumInt64(context.Context, []int64) error     { c.calls++; return nil }
func (c *countingReducer) SumFloat32(context.Context, []float32) error { c.calls++; return nil }

// A trainer restored inside a cross-fitting fold (a joiner takes a peer's
// state at a step boundary) makes exactly the collective calls that the
// uninterrupted run makes from that boundary on. Scoring the completed
// folds again would be calls the ring made long before: the joiner's ring
// then fails with a shape mismatch (found by causalrm chaos).
func TestRestoredFoldMakesTheRingsCalls(t *testing.T) {
	cfg := elasticConfig()
	m := causal.CausalIPS
	at := func(b Boundary) bool {
		return (b.Stage == FoldStage(2) || b.Stage == FoldStage(4)) && b.Epoch == 2 && b.Step == 1
	}
	full := &countingReducer{}
	callsAt := map[uint64]int{}
	a, err := runPipeline(t, cfg, m, runOpts{red: full, snapAt: at, onStep: func(_ *Trainer, b Boundary) error {
		if at(b) {
			callsAt[b.GlobalStep] = full.calls
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.snaps) != 2 {
		t.Fatalf("%d snapshots, want 2 (inside folds 3 and 5)", len(a.snaps))
	}
	for gs, raw := range a.snaps {
		s, err := UnmarshalSnapshot(raw)
		if err != nil {
			t.Fatal(err)
		}
		rest := &countingReducer{}
		b, err := runPipeline(t, cfg, m, runOpts{red: rest, setup: func(tr *Trainer) error { return tr.Restore(s) }})
		if err != nil {
			t.Fatal(err)
		}
		if want := full.calls - callsAt[gs]; rest.calls != want {
			t.Fatalf("restored at global step %d: %d collective calls, the ring makes %d from there", gs, rest.calls, want)
		}
		checkResumed(t, m, a, b, gs)
	}
}

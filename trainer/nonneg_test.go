package trainer

import (
	"context"
	"testing"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/shard"
)

// With the non-negative correction the step gradient is the gradient of
// max(0, R1) + max(0, R0), R1 and R0 the batch's two class parts, checked by
// central finite differences over a float64 forward pass; and models driven
// to push a part below zero get that part's gradient dropped.
func TestNonNegativeGradient(t *testing.T) {
	ctx := context.Background()
	ds := smallData(t, 400, 10, 3)
	cfg := smallConfig()
	cfg.Risk = RiskNonNegative
	cfg.FlipRates = &causal.Rates{Rho01: 0.3, Rho10: 0.4} // large rates: negative parts are easy to reach
	tr, err := New(cfg, ds, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Prepare(ctx, causal.AllMethods()...); err != nil {
		t.Fatal(err)
	}
	dropped := 0
	for _, m := range []causal.Method{causal.CausalIPS, causal.CausalDR, causal.Noise} {
		for seed := uint64(1); seed <= 6; seed++ {
			st := tr.rewardStage(m, 0)
			model, _ := nn.New(tr.modelConfig(), seed)
			// Scale the last layer so logits are large: surrogate parts go negative.
			for i := range model.Wd(2) {
				model.Wd(2)[i] *= float32(seed * 4)
			}
			sp, _ := tr.newStepper(model)
			batch := shard.BatchRows(shard.EpochPerm(seed, "nn", 1, len(st.rows)), 0, cfg.Batch)
			if _, ok, err := tr.batchGradient(ctx, st, sp, batch); err != nil || !ok {
				t.Fatalf("%s: ok=%v err=%v", m, ok, err)
			}
			rb := newRefBatch(tr, st, m, model, batch)
			parts := func(params []float64) (float64, float64) {
				r1, r0 := 0.0, 0.0
				rb.each(params, func(f float64, in causal.RowInput) {
					wa, wb := m.Weights(in, tr.Rates)
					r1 += wa * causal.BCE(f, 1)
					r0 += wb * causal.BCE(f, 0)
				})
				return r1 / rb.norm, r0 / rb.norm
			}
			params := toF64(model.Params)
			r1, r0 := parts(params)
			if r1 < 0 || r0 < 0 {
				dropped++
			}
			obj := func(pp []float64) float64 {
				a, b := parts(pp)
				// the kept parts at the point itself (no switching inside the FD step)
				v := 0.0
				if r1 >= 0 {
					v += a
				}
				if r0 >= 0 {
					v += b
				}
				return v
			}
			if err := checkFD(params, sp.grad, obj, 15, seed); err != nil {
				t.Fatalf("%s seed %d (R1 %.4g, R0 %.4g): %v", m, seed, r1, r0, err)
			}
		}
	}
	if dropped == 0 {
		t.Fatal("no batch had a negative part: the test did not exercise the correction")
	}
}

// Model selection never keeps an epoch whose validation estimate is below
// zero (no real model's risk is): with the plain risk, large flip rates and
// a high learning rate the estimate goes negative, and the saved epoch is
// one whose estimate is not (or the first, when none is). With the default
// risk the estimate never goes below zero at all.
func TestSelectionSkipsNegativeEstimates(t *testing.T) {
	ctx := context.Background()
	for _, risk := range []string{RiskPlain, RiskNonNegative} {
		cfg := smallConfig()
		cfg.Risk, cfg.LR, cfg.MaxEpochs, cfg.Patience = risk, 5e-2, 25, 25
		cfg.FlipRates = &causal.Rates{Rho01: 0.3, Rho10: 0.4}
		tr, err := New(cfg, smallData(t, 600, 10, 5), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := tr.Reward(ctx, causal.CausalIPS)
		if err != nil {
			t.Fatal(err)
		}
		neg := 0
		for _, v := range res.Val {
			if v < 0 {
				neg++
			}
		}
		best := res.Val[res.BestEpoch-1]
		t.Logf("%s: %d of %d epochs below zero; best epoch %d (%.4g)", risk, neg, len(res.Val), res.BestEpoch, best)
		switch risk {
		case RiskPlain:
			if neg == 0 {
				t.Fatal("the plain risk never went negative: the test shows nothing")
			}
			if best < 0 && res.BestEpoch != 1 {
				t.Fatalf("kept epoch %d, whose estimate %v is below zero", res.BestEpoch, best)
			}
			if res.BestVal != best {
				t.Fatalf("best_val %v, the epoch's estimate %v", res.BestVal, best)
			}
		case RiskNonNegative:
			if neg > 0 {
				t.Fatalf("the non-negative risk went below zero in %d epochs", neg)
			}
		}
	}
}

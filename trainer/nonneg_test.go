package trainer

import (
	"context"
	"math"
	"math/rand/v2"
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
	cfg.NonNegative = true
	cfg.FlipRates = &causal.Rates{Rho01: 0.3, Rho10: 0.4} // large rates: negative parts are easy to reach
	tr, err := New(cfg, ds, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Prepare(ctx, causal.AllMethods()...); err != nil {
		t.Fatal(err)
	}
	train := ds.Train
	dropped := 0
	for _, m := range []causal.Method{causal.CausalIPS, causal.CausalDR, causal.Noise} {
		for seed := uint64(1); seed <= 6; seed++ {
			st := tr.rewardStage(m)
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
			var p, g []float64
			if m.UsesPropensity() {
				p = tr.PHatTrain
			}
			if m.UsesImputation() {
				g = tr.GHatTrain
			}
			var rows []int32
			for _, i := range batch {
				if r := st.rows[i]; st.active == nil || st.active(r) {
					rows = append(rows, r)
				}
			}
			norm := float64(len(batch))
			if m.NormalizeByObserved() {
				norm = float64(len(rows))
			}
			parts := func(params []float64) (float64, float64) {
				r1, r0 := 0.0, 0.0
				for _, r := range rows {
					f := nn.RefForward64(model.Cfg, params, toF64(train.Row(int(r))))
					wa, wb := m.Weights(rowInput(train, p, g, r), tr.Rates)
					r1 += wa * causal.BCE(f, 1)
					r0 += wb * causal.BCE(f, 0)
				}
				return r1 / norm, r0 / norm
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
			rng := rand.New(rand.NewPCG(seed, 5))
			for k := 0; k < 15; k++ {
				i := rng.IntN(len(params))
				h := 1e-5 * math.Max(1, math.Abs(params[i]))
				pp := append([]float64(nil), params...)
				pp[i] += h
				up := obj(pp)
				pp[i] -= 2 * h
				fd := (up - obj(pp)) / (2 * h)
				if got := float64(sp.grad[i]); math.Abs(got-fd) > 2e-4*math.Abs(fd)+2e-6 {
					t.Fatalf("%s seed %d (R1 %.4g, R0 %.4g): param %d gradient %.8g, finite difference %.8g", m, seed, r1, r0, i, got, fd)
				}
			}
		}
	}
	if dropped == 0 {
		t.Fatal("no batch had a negative part: the test did not exercise the correction")
	}
}

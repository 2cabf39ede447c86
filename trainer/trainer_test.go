package trainer

import (
	"bytes"
	"context"
	"math"
	"testing"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/sim"
)

func smallData(t *testing.T, rows, dim int, seed uint64) *shard.Dataset {
	t.Helper()
	c := sim.DefaultConfig()
	c.TrainRows, c.TestRows, c.Dim, c.Seed = rows, rows/4, dim, seed
	c.Latent = min(c.Latent, dim)
	c.Alpha, c.Rho01, c.Rho10 = 0.3, 0.1, 0.2
	ds, err := sim.Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func smallConfig() Config {
	c := DefaultConfig()
	c.Hidden = []int{6, 4}
	c.Batch = 64
	c.MaxEpochs = 2
	c.Propensity = "given"
	c.FlipRates = &causal.Rates{Rho01: 0.1, Rho10: 0.25}
	return c
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// The gradient the training step computes, for every estimator, equals
// central finite differences of the batch loss written out from
// the estimator table of docs/method.md over a plain float64 forward pass.
func TestBatchGradientMatchesFiniteDifferences(t *testing.T) {
	ctx := context.Background()
	ds := smallData(t, 400, 10, 3)
	for _, reduce := range []string{"exact", "fast"} {
		cfg := smallConfig()
		cfg.Reduce = reduce
		cfg.Risk = RiskPlain // the table's losses (TestNonNegativeGradient checks the clamped risk)
		tr, err := New(cfg, ds, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Prepare(ctx, causal.AllMethods()...); err != nil {
			t.Fatal(err)
		}
		for _, m := range causal.AllMethods() {
			st := tr.rewardStage(m, 0)
			model, _ := nn.New(tr.modelConfig(), 7)
			sp, err := tr.newStepper(model)
			if err != nil {
				t.Fatal(err)
			}
			batch := shard.BatchRows(shard.EpochPerm(1, "fd", 1, len(st.rows)), 0, cfg.Batch)
			if _, ok, err := tr.batchGradient(ctx, st, sp, batch); err != nil || !ok {
				t.Fatalf("%s: gradient: ok=%v err=%v", m, ok, err)
			}
			// Independent objective: the table's per-row losses, averaged
			// over the batch (or its observed rows for naive and noise).
			rb := newRefBatch(tr, st, m, model, batch)
			obj := func(params []float64) float64 {
				s := 0.0
				rb.each(params, func(f float64, in causal.RowInput) {
					l, _ := m.Row(f, in, tr.Rates)
					s += l
				})
				return s / rb.norm
			}
			if err := checkFD(toF64(model.Params), sp.grad, obj, 40, uint64(len(m))); err != nil {
				t.Errorf("%s %s: %v", reduce, m, err)
			}
		}
	}
}

func trainParams(t *testing.T, ds *shard.Dataset, threads int, m causal.Method) []byte {
	t.Helper()
	cfg := smallConfig()
	cfg.Hidden = []int{32, 8}
	cfg.Batch = 256
	cfg.MaxEpochs = 3
	cfg.Threads = threads
	cfg.Propensity = "learn"
	cfg.FlipRates = nil
	tr, err := New(cfg, ds, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Reward(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, v := range res.Model.Params {
		u := math.Float32bits(v)
		b.Write([]byte{byte(u), byte(u >> 8), byte(u >> 16), byte(u >> 24)})
	}
	return b.Bytes()
}

// Exact mode: the trained model's bits do not depend on the thread count.
func TestExactTrainingSameBitsAnyThreads(t *testing.T) {
	for _, m := range []causal.Method{causal.CausalIPS, causal.CausalDR} {
		a := trainParams(t, smallData(t, 1500, 96, 5), 1, m)
		b := trainParams(t, smallData(t, 1500, 96, 5), 2, m)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: threads 1 and 2 trained different models", m)
		}
	}
}

// Training reduces the loss and early stopping keeps the best epoch.
func TestTrainingLearns(t *testing.T) {
	ds := smallData(t, 2000, 16, 8)
	cfg := smallConfig()
	cfg.Hidden = []int{16, 8}
	cfg.MaxEpochs = 40
	cfg.Patience = 5
	cfg.LR = 3e-3
	tr, err := New(cfg, ds, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Reward(context.Background(), causal.CausalIPS)
	if err != nil {
		t.Fatal(err)
	}
	if !(res.BestVal < res.Val[0]) {
		t.Fatalf("validation loss did not improve: first %v best %v", res.Val[0], res.BestVal)
	}
	if res.BestVal != res.Val[res.BestEpoch-1] {
		t.Fatalf("best epoch %d has val %v, recorded best %v", res.BestEpoch, res.Val[res.BestEpoch-1], res.BestVal)
	}
	met, _, err := tr.Test(context.Background(), res.Model)
	if err != nil {
		t.Fatal(err)
	}
	if !(met.AUROC > 0.6) {
		t.Fatalf("test AUROC %v: the model learned nothing", met.AUROC)
	}
}

func TestConfigValidateNamesField(t *testing.T) {
	c := DefaultConfig()
	c.Batch = 0
	if err := c.Validate(); err == nil || !bytes.Contains([]byte(err.Error()), []byte("batch")) {
		t.Fatalf("want an error naming batch, got %v", err)
	}
	c = DefaultConfig()
	c.Reduce = "approx"
	if err := c.Validate(); err == nil || !bytes.Contains([]byte(err.Error()), []byte("reduce")) {
		t.Fatalf("want an error naming reduce, got %v", err)
	}
}

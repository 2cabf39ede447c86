package gpu

import (
	"context"
	"math"
	"testing"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/sim"
	"github.com/causalrm/causalrm/trainer"
)

func trainOn(t *testing.T, runners nn.RunnerFactory, reduce string) []float32 {
	t.Helper()
	c := sim.DefaultConfig()
	c.TrainRows, c.TestRows, c.Dim, c.Seed = 1200, 300, 48, 4
	c.Latent = min(c.Latent, 48)
	c.Alpha, c.Rho01, c.Rho10 = 0.3, 0.1, 0.2
	ds, err := sim.Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	cfg := trainer.DefaultConfig()
	cfg.Hidden, cfg.Batch, cfg.MaxEpochs, cfg.Reduce = []int{16, 8}, 128, 3, reduce
	cfg.Runners = runners
	tr, err := trainer.New(cfg, ds, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Reward(context.Background(), causal.CausalDR)
	if err != nil {
		t.Fatal(err)
	}
	return res.Model.Params
}

// TestTrainingSameBitsOnDevice: the whole pipeline (propensity, noise and
// imputation stages, scoring, the reward stage with early stopping) on a
// device trains the CPU's exact model, bit for bit.
func TestTrainingSameBitsOnDevice(t *testing.T) {
	want := trainOn(t, nil, "exact")
	for name, dev := range testBackends(t) {
		t.Run(name, func(t *testing.T) {
			got := trainOn(t, dev.Runner, "exact")
			for i := range want {
				if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
					t.Fatalf("parameter %d: cpu %v, %s %v", i, want[i], name, got[i])
				}
			}
		})
	}
}

// TestFastTrainingOnDevice: fast mode trains to a model close to the
// CPU's (no bit promise: float32 sums in another order).
func TestFastTrainingOnDevice(t *testing.T) {
	want := trainOn(t, nil, "fast")
	for name, dev := range testBackends(t) {
		t.Run(name, func(t *testing.T) {
			got := trainOn(t, dev.Runner, "fast")
			if e := relErr(f64s(got), f64s(want)); e > 1e-2 {
				t.Fatalf("relative distance %g between the cpu and %s models", e, name)
			}
		})
	}
}

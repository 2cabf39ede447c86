package trainer

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/nn"
)

// rewardParams trains method m with cfg on small generated data and
// returns the reward model's parameters.
func rewardParams(t *testing.T, cfg Config, m causal.Method) []float32 {
	t.Helper()
	tr, err := New(cfg, smallData(t, 400, 10, 3), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Reward(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Clone(res.Model.Params)
}

// The imputation setting reaches causalrm-dr's reward stage and nothing
// else: with flip rates of zero the clean imputation is g itself (the same
// bits as noisy), with real rates the two train different models, and dr
// (no flip rates) ignores it.
func TestImputationSetting(t *testing.T) {
	train := func(imp string, rates causal.Rates, m causal.Method) []float32 {
		cfg := smallConfig()
		cfg.Imputation, cfg.FlipRates = imp, &rates
		return rewardParams(t, cfg, m)
	}
	zero, real := causal.Rates{}, causal.Rates{Rho01: 0.1, Rho10: 0.25}
	if !slices.Equal(train(ImputationClean, zero, causal.CausalDR), train(ImputationNoisy, zero, causal.CausalDR)) {
		t.Fatal("rates 0: clean and noisy imputation trained different models")
	}
	if slices.Equal(train(ImputationClean, real, causal.CausalDR), train(ImputationNoisy, real, causal.CausalDR)) {
		t.Fatal("rates (0.1, 0.25): clean and noisy imputation trained the same model")
	}
	if !slices.Equal(train(ImputationClean, real, causal.DR), train(ImputationNoisy, real, causal.DR)) {
		t.Fatal("dr changed with the imputation setting")
	}
	cfg := smallConfig()
	cfg.Imputation = "exact"
	if _, err := New(cfg, smallData(t, 400, 10, 3), nil, nil); err == nil {
		t.Fatal("imputation \"exact\" accepted")
	}
}

// With Monitor "dr", causalrm-ips's reward epoch is selected by
// causalrm-dr's validation estimate (clean imputation, non-negative
// parts, normalised by the validation rows), recomputed here for the kept
// model from a float64 forward pass; the imputation stage is trained for
// it, and is not with the default monitor.
func TestMonitorDRSelectsByTheDoublyRobustEstimate(t *testing.T) {
	cfg := smallConfig()
	cfg.Propensity, cfg.FlipRates = "learn", &causal.Rates{Rho01: 0.1, Rho10: 0.25}
	cfg.MaxEpochs, cfg.Patience = 6, 6
	ds := smallData(t, 400, 10, 3)
	tr, err := New(cfg, ds, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Reward(context.Background(), causal.CausalIPS); err != nil {
		t.Fatal(err)
	}
	if tr.GHatVal != nil {
		t.Fatal("monitor val: causalrm-ips trained an imputation model")
	}
	cfg.Monitor = MonitorDR
	tr, err = New(cfg, ds, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Reward(context.Background(), causal.CausalIPS)
	if err != nil {
		t.Fatal(err)
	}
	if tr.GHatVal == nil {
		t.Fatal("monitor dr: no imputation model")
	}
	va, r := tr.ds.Val, tr.Rates
	params := toF64(res.Model.Params)
	var s1, s0 float64
	for i := range va.N {
		f := nn.RefForward64(res.Model.Cfg, params, toF64(va.Row(i)))
		g := math.Min(1, math.Max(0, (tr.GHatVal[i]-r.Rho10)/(1-r.Rho01-r.Rho10)))
		wa, wb := causal.CausalDR.Weights(causal.RowInput{O: va.O[i], Y: va.Y[i], P: tr.PHatVal[i], G: g}, r)
		s1 += wa * causal.BCE(f, 1)
		s0 += wb * causal.BCE(f, 0)
	}
	want := (max(s1, 0) + max(s0, 0)) / float64(va.N)
	if math.Abs(res.BestVal-want) > 1e-4*math.Max(1, math.Abs(want)) {
		t.Fatalf("kept epoch %d: validation value %.6f, causalrm-dr's estimate recomputed %.6f", res.BestEpoch, res.BestVal, want)
	}
}

package trainer

import (
	"context"
	"slices"
	"testing"

	"github.com/causalrm/causalrm/causal"
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

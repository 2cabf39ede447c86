// Package trainer runs the CausalRM pipeline of docs/method.md: the
// auxiliary stages (propensity, noise with flip-rate estimation,
// imputation) and the reward stage, each a data-parallel training run with
// early stopping and a scoring pass. The stage loop is written once over a
// Reducer; in one process the reducer is the identity, in a cluster it is
// the collective's all-reduce (docs/design.md, "One trainer, two reducers").
package trainer

import (
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/nn"
)

// ErrConfig reports an invalid training configuration.
var ErrConfig = errors.New("trainer: invalid config")

// Config is everything that fixes a run's result (with the data).
type Config struct {
	Method      causal.Method `yaml:"method" json:"method"`
	Seed        uint64        `yaml:"seed" json:"seed"`
	Batch       int           `yaml:"batch" json:"batch"`
	LR          float64       `yaml:"lr" json:"lr"`
	WeightDecay float64       `yaml:"weight_decay" json:"weight_decay"`
	MaxEpochs   int           `yaml:"max_epochs" json:"max_epochs"`
	Patience    int           `yaml:"patience" json:"patience"`
	Hidden      []int         `yaml:"hidden" json:"hidden"`
	LeakySlope  float64       `yaml:"leaky_slope" json:"leaky_slope"`
	Shards      int           `yaml:"shards" json:"shards"`
	Reduce      string        `yaml:"reduce" json:"reduce"` // "exact" or "fast"
	Clip        float64       `yaml:"propensity_clip" json:"propensity_clip"`
	Quantile    float64       `yaml:"quantile" json:"quantile"`
	// FlipEstimator is how the noise stage estimates the flip rates:
	// causal.FlipCrossFit ("crossfit", the default; "" reads as it) or
	// causal.FlipAnchor ("anchor", the paper's quantile estimator, which
	// uses Quantile). docs/method.md, "Flip-rate estimation".
	FlipEstimator string `yaml:"flip_estimator" json:"flip_estimator"`
	// FlipRepeats is how many deals of the observed rows into folds the
	// crossfit estimator averages (0 reads as causal.DefaultFlipRepeats).
	FlipRepeats int           `yaml:"flip_repeats" json:"flip_repeats"`
	Propensity  string        `yaml:"propensity" json:"propensity"` // "learn" or "given"
	FlipRates   *causal.Rates `yaml:"flip_rates,omitempty" json:"flip_rates,omitempty"`
	Monitor     string        `yaml:"monitor" json:"monitor"` // "val" or "train"
	// MonitorWindow is how many epochs the reward stage's model selection
	// averages: an epoch improves when the mean of its monitored value and
	// those of the epochs before it (MonitorWindow in all) is the lowest
	// so far, and that epoch's parameters are kept. 0 reads as
	// DefaultMonitorWindow; 1 monitors each epoch alone (the paper).
	MonitorWindow int `yaml:"monitor_window" json:"monitor_window"`
	// EMA, in (0, 1), makes the reward stage keep an exponential moving
	// average of its parameters at epoch ends (the first epoch's
	// parameters, then avg = EMA*avg + (1-EMA)*params) and evaluate,
	// select and save that average instead of the parameters themselves;
	// training goes on from the parameters. 0 is off (the paper).
	EMA float64 `yaml:"ema" json:"ema"`
	// RewardModels is how many reward models the reward stage trains
	// (each from its own initialisation and batch order) and averages
	// into the saved one (nn.Average). 0 reads as the default,
	// DefaultRewardModels; 1 is the paper's single model.
	RewardModels int `yaml:"reward_models" json:"reward_models"`
	// Risk is the reward stage's empirical risk for the estimators whose
	// per-row weights can be negative (noise, causalrm-ips, dr,
	// causalrm-dr). RiskNonNegative (the default) clamps its two class parts
	// at zero, in the style of nnPU (Kiryo et al. 2017): risk = max(0, sum
	// wa*l(f,1)) + max(0, sum wb*l(f,0)), and a part below zero contributes
	// no gradient. RiskPlain is the paper's formula, unbounded below: a
	// model can drive it (and the validation estimate) negative by
	// overfitting (docs/method.md). naive and ips cannot go negative, so
	// the setting does not change them.
	Risk string `yaml:"risk" json:"risk"`
	// Imputation is what causalrm-dr imputes for every row:
	// ImputationClean (the default; "" reads as it) maps the imputation
	// model's noisy-label prediction g to the clean-label probability
	// (g - rho10) / (1 - rho01 - rho10), clamped to [0, 1];
	// ImputationNoisy imputes g itself (the paper). dr has no flip rates
	// and always imputes g.
	Imputation string    `yaml:"imputation" json:"imputation"`
	Threads    int       `yaml:"threads" json:"threads"`
	ScoreChunk int       `yaml:"-" json:"-"`
	Progress   io.Writer `yaml:"-" json:"-"`
	// Runners makes each model's runner (nil: the CPU engine). A worker
	// sets it from its --device; it is not part of the job, since exact
	// mode gives the same bits on every device.
	Runners      nn.RunnerFactory `yaml:"-" json:"-"`
	ProgressEach int              `yaml:"-" json:"-"` // epochs between progress lines (default 1)
}

// DefaultConfig holds the authors' defaults (docs/method.md, "Models").
func DefaultConfig() Config {
	return Config{
		Method: causal.CausalIPS, Seed: 1, Batch: 512, LR: 5e-4, WeightDecay: 1e-6,
		MaxEpochs: 600, Patience: 30, Hidden: []int{256, 64}, LeakySlope: 0.01,
		Shards: 64, Reduce: "exact", Clip: 0.1, Quantile: 0.97, FlipEstimator: causal.FlipCrossFit, FlipRepeats: causal.DefaultFlipRepeats, Propensity: "learn",
		Monitor: "val", MonitorWindow: DefaultMonitorWindow, Risk: RiskNonNegative, Imputation: ImputationClean, RewardModels: DefaultRewardModels, ScoreChunk: 4096, ProgressEach: 1,
	}
}

// What causalrm-dr imputes (Config.Imputation).
const (
	ImputationClean = "clean"
	ImputationNoisy = "noisy"
)

// DefaultRewardModels is the default Config.RewardModels: three averaged
// models put every CausalRM seed above the naive one's and both methods'
// spread over seeds under 0.03 on generated data (docs/results.md).
const DefaultRewardModels = 3

// RewardModelCount is the configured number of reward models (0 reads as
// DefaultRewardModels).
func (c Config) RewardModelCount() int {
	if c.RewardModels == 0 {
		return DefaultRewardModels
	}
	return c.RewardModels
}

// imputation is the configured imputation ("" reads as the default).
func (c Config) imputation() string {
	if c.Imputation == "" {
		return ImputationClean
	}
	return c.Imputation
}

// The reward risks (Config.Risk).
const (
	RiskNonNegative = "nonnegative"
	RiskPlain       = "plain"
)

// Bounds of the settings that size a run (besides nn's model limits).
const (
	MaxBatch  = 1 << 20
	MaxEpochs = 1_000_000
	// MaxRewardModels bounds Config.RewardModels.
	MaxRewardModels = 16
	// MaxMonitorWindow bounds Config.MonitorWindow.
	MaxMonitorWindow = 100
	MaxShards        = 1 << 16
	MaxThreads       = 4096
)

// FieldError is a bad setting: Field is its job-file key (e.g. "batch",
// "hidden[0]", "flip_rates"), Value its value and Want what is accepted.
// It wraps ErrConfig.
type FieldError struct {
	Field string
	Value any
	Want  string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%v: %s = %v: %s", ErrConfig, e.Field, e.Value, e.Want)
}

func (e *FieldError) Unwrap() error { return ErrConfig }

// Validate names the first bad field (a *FieldError). Besides each
// setting's own range it bounds what a run allocates: the model's
// parameters (nn.MaxParams, counted here with a 1-dimensional input, so at
// least this many; trainer.New checks the real input dimension) and the
// activations of a pass (nn.MaxActivations).
func (c Config) Validate() error {
	bad := func(field string, v any, why string) error {
		return &FieldError{Field: field, Value: v, Want: why}
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !c.Method.Valid():
		return bad("method", c.Method, "want one of naive, ips, dr, noise, causalrm-ips, causalrm-dr")
	case c.Batch < 1 || c.Batch > MaxBatch:
		return bad("batch", c.Batch, fmt.Sprintf("want 1..%d (2^20)", MaxBatch))
	case !(c.LR > 0) || !finite(c.LR):
		return bad("lr", c.LR, "want a finite value > 0")
	case !(c.WeightDecay >= 0) || !finite(c.WeightDecay):
		return bad("weight_decay", c.WeightDecay, "want a finite value >= 0")
	case c.MaxEpochs < 1 || c.MaxEpochs > MaxEpochs:
		return bad("max_epochs", c.MaxEpochs, fmt.Sprintf("want 1..%d", MaxEpochs))
	case c.Patience < 1 || c.Patience > MaxEpochs:
		return bad("patience", c.Patience, fmt.Sprintf("want 1..%d", MaxEpochs))
	case c.Shards < 1 || c.Shards > MaxShards:
		return bad("shards", c.Shards, fmt.Sprintf("want 1..%d", MaxShards))
	case c.Threads < 0 || c.Threads > MaxThreads:
		return bad("threads", c.Threads, fmt.Sprintf("want 0 (all cores) or 1..%d", MaxThreads))
	case c.Reduce != "exact" && c.Reduce != "fast":
		return bad("reduce", c.Reduce, "want exact or fast")
	case !(c.Clip > 0 && c.Clip <= 1):
		return bad("propensity_clip", c.Clip, "want in (0,1]")
	case !(c.Quantile > 0.5 && c.Quantile < 1):
		return bad("quantile", c.Quantile, "want in (0.5,1)")
	case c.FlipEstimator != "" && c.FlipEstimator != causal.FlipCrossFit && c.FlipEstimator != causal.FlipAnchor:
		return bad("flip_estimator", c.FlipEstimator, "want crossfit (the default) or anchor")
	case c.FlipRepeats < 0 || c.FlipRepeats > causal.MaxFlipRepeats:
		return bad("flip_repeats", c.FlipRepeats, fmt.Sprintf("want 1..%d (0: the default, %d)", causal.MaxFlipRepeats, causal.DefaultFlipRepeats))
	case c.Propensity != "learn" && c.Propensity != "given":
		return bad("propensity", c.Propensity, "want learn or given")
	case c.Monitor != "val" && c.Monitor != "train":
		return bad("monitor", c.Monitor, "want val or train")
	case c.MonitorWindow < 0 || c.MonitorWindow > MaxMonitorWindow:
		return bad("monitor_window", c.MonitorWindow, fmt.Sprintf("want 1..%d (0: the default, %d)", MaxMonitorWindow, DefaultMonitorWindow))
	case c.Risk != RiskNonNegative && c.Risk != RiskPlain:
		return bad("risk", c.Risk, "want nonnegative (the default) or plain (the paper's formula, unbounded below)")
	case c.RewardModels < 0 || c.RewardModels > MaxRewardModels:
		return bad("reward_models", c.RewardModels, fmt.Sprintf("want 1..%d (0: the default, %d)", MaxRewardModels, DefaultRewardModels))
	case !(c.EMA >= 0 && c.EMA < 1):
		return bad("ema", c.EMA, "want in [0,1) (0: off)")
	case c.Imputation != "" && c.Imputation != ImputationClean && c.Imputation != ImputationNoisy:
		return bad("imputation", c.Imputation, "want clean (the default) or noisy (the paper)")
	case !(c.LeakySlope >= 0 && c.LeakySlope < 1):
		return bad("leaky_slope", c.LeakySlope, "want in [0,1)")
	case len(c.Hidden) > nn.MaxLayers-1:
		return bad("hidden", fmt.Sprintf("(%d widths)", len(c.Hidden)), fmt.Sprintf("want at most %d hidden layers", nn.MaxLayers-1))
	}
	for i, h := range c.Hidden {
		if h < 1 {
			return bad(fmt.Sprintf("hidden[%d]", i), h, fmt.Sprintf("want 1..%d", nn.MaxWidth))
		}
	}
	dims := append(append([]int{1}, c.Hidden...), 1)
	if p := nn.ParamCount(dims); p > nn.MaxParams {
		return bad("hidden", c.Hidden, fmt.Sprintf("%s parameters or more (with a 1-dimensional input), more than the limit of %d (1 GiB of float32 per copy)",
			nn.FormatCount(p), nn.MaxParams))
	}
	for i, h := range c.Hidden {
		if h > nn.MaxWidth {
			return bad(fmt.Sprintf("hidden[%d]", i), h, fmt.Sprintf("want 1..%d", nn.MaxWidth))
		}
	}
	sum := 0.0
	for _, h := range c.Hidden {
		sum += float64(h)
	}
	if rows := max(c.Batch, c.ScoreChunk); float64(rows)*sum > nn.MaxActivations {
		field, v := "hidden", any(c.Hidden)
		if c.Batch >= c.ScoreChunk {
			field, v = "batch", c.Batch
		}
		return bad(field, v, fmt.Sprintf("%d rows per pass through hidden %v are %s activations, more than the limit of %d (4 GiB of float32): lower batch or the widths",
			rows, c.Hidden, nn.FormatCount(float64(rows)*sum), nn.MaxActivations))
	}
	if r := c.FlipRates; r != nil && !(r.Rho01 >= 0 && r.Rho10 >= 0 && r.Rho01+r.Rho10 < 1) {
		return bad("flip_rates", *r, "want rho01, rho10 >= 0 with rho01 + rho10 < 1")
	}
	return nil
}

// ValidateFor checks the config for inputs of dimension d: Validate and
// the model's limits (nn.Config.Validate, nn.Config.CheckRows).
func (c Config) ValidateFor(d int) error {
	if err := c.Validate(); err != nil {
		return err
	}
	mc := nn.Config{Dims: append(append([]int{d}, c.Hidden...), 1), Slope: c.LeakySlope}
	if err := mc.Validate(); err != nil {
		return err
	}
	return mc.CheckRows(max(c.Batch, c.ScoreChunk))
}

// DefaultMonitorWindow is the reward stage's default selection window: 1,
// each epoch alone, as the paper. A window of 5 steadies causalrm-dr but
// not causalrm-ips on generated data (docs/results.md, "A selection
// window").
const DefaultMonitorWindow = 1

// monitorWindow is the configured selection window (0 reads as the
// default).
func (c Config) monitorWindow() int {
	if c.MonitorWindow == 0 {
		return DefaultMonitorWindow
	}
	return c.MonitorWindow
}

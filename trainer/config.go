// Package trainer runs the CausalRM pipeline of CAUSALRM.md section 3: the
// auxiliary stages (propensity, noise with flip-rate estimation,
// imputation) and the reward stage, each a data-parallel training run with
// early stopping and a scoring pass. The stage loop is written once over a
// Reducer; in one process the reducer is the identity, in a cluster it is
// the collective's all-reduce (DESIGN.md, "One trainer, two reducers").
package trainer

import (
	"errors"
	"fmt"
	"io"

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
	Propensity  string        `yaml:"propensity" json:"propensity"` // "learn" or "given"
	FlipRates   *causal.Rates `yaml:"flip_rates,omitempty" json:"flip_rates,omitempty"`
	Monitor     string        `yaml:"monitor" json:"monitor"` // "val" or "train"
	// NonNegative (an experiment, not in CAUSALRM.md) clamps the reward
	// risk's two class parts at zero, in the style of nnPU (Kiryo et al.
	// 2017): risk = max(0, sum wa*l(f,1)) + max(0, sum wb*l(f,0)), and a part
	// below zero contributes no gradient. Off by default.
	NonNegative bool      `yaml:"nonnegative,omitempty" json:"nonnegative,omitempty"`
	Threads     int       `yaml:"threads" json:"threads"`
	ScoreChunk  int       `yaml:"-" json:"-"`
	Progress    io.Writer `yaml:"-" json:"-"`
	// Runners makes each model's runner (nil: the CPU engine). A worker
	// sets it from its --device; it is not part of the job, since exact
	// mode gives the same bits on every device.
	Runners      nn.RunnerFactory `yaml:"-" json:"-"`
	ProgressEach int              `yaml:"-" json:"-"` // epochs between progress lines (default 1)
}

// DefaultConfig holds the authors' defaults (CAUSALRM.md section 2).
func DefaultConfig() Config {
	return Config{
		Method: causal.CausalIPS, Seed: 1, Batch: 512, LR: 5e-4, WeightDecay: 1e-6,
		MaxEpochs: 600, Patience: 30, Hidden: []int{256, 64}, LeakySlope: 0.01,
		Shards: 64, Reduce: "exact", Clip: 0.1, Quantile: 0.97, Propensity: "learn",
		Monitor: "val", ScoreChunk: 4096, ProgressEach: 1,
	}
}

// Validate names the first bad field.
func (c Config) Validate() error {
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("%w: %s = %v: %s", ErrConfig, field, v, why)
	}
	switch {
	case !c.Method.Valid():
		return bad("method", c.Method, "want one of naive, ips, dr, noise, causalrm-ips, causalrm-dr")
	case c.Batch < 1 || c.Batch > 1<<20:
		return bad("batch", c.Batch, "want 1..2^20")
	case !(c.LR > 0):
		return bad("lr", c.LR, "want > 0")
	case !(c.WeightDecay >= 0):
		return bad("weight_decay", c.WeightDecay, "want >= 0")
	case c.MaxEpochs < 1:
		return bad("max_epochs", c.MaxEpochs, "want >= 1")
	case c.Patience < 1:
		return bad("patience", c.Patience, "want >= 1")
	case c.Shards < 1:
		return bad("shards", c.Shards, "want >= 1")
	case c.Reduce != "exact" && c.Reduce != "fast":
		return bad("reduce", c.Reduce, "want exact or fast")
	case !(c.Clip > 0 && c.Clip <= 1):
		return bad("propensity_clip", c.Clip, "want in (0,1]")
	case !(c.Quantile > 0.5 && c.Quantile < 1):
		return bad("quantile", c.Quantile, "want in (0.5,1)")
	case c.Propensity != "learn" && c.Propensity != "given":
		return bad("propensity", c.Propensity, "want learn or given")
	case c.Monitor != "val" && c.Monitor != "train":
		return bad("monitor", c.Monitor, "want val or train")
	case !(c.LeakySlope >= 0 && c.LeakySlope < 1):
		return bad("leaky_slope", c.LeakySlope, "want in [0,1)")
	}
	for i, h := range c.Hidden {
		if h < 1 {
			return bad(fmt.Sprintf("hidden[%d]", i), h, "want >= 1")
		}
	}
	if r := c.FlipRates; r != nil && !(r.Rho01 >= 0 && r.Rho10 >= 0 && r.Rho01+r.Rho10 < 1) {
		return bad("flip_rates", *r, "want rho01, rho10 >= 0 with rho01 + rho10 < 1")
	}
	return nil
}

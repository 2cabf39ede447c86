package job

import (
	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/trainer"
)

// RunMetrics is metrics.json, what a finished job writes beside its models.
type RunMetrics struct {
	Method          string          `json:"method"`
	Seed            uint64          `json:"seed"`
	Reduce          string          `json:"reduce"`
	Backend         string          `json:"blas"`
	Test            *causal.Metrics `json:"test,omitempty"`
	FlipRates       *causal.Rates   `json:"flip_rates,omitempty"`
	FlipRatesSource string          `json:"flip_rates_source,omitempty"`
	// FlipRatesEstimate is the estimate behind FlipRates with its 95%
	// intervals, when the noise stage estimated them by cross-fitting
	// (trainer.Trainer.Flip); absent for given rates and the anchor
	// estimator.
	FlipRatesEstimate *causal.FlipEstimate   `json:"flip_rates_estimate,omitempty"`
	TrueFlipRates     *causal.Rates          `json:"true_flip_rates,omitempty"`
	PropensityValMSE  *float64               `json:"propensity_val_mse,omitempty"`
	PropensityCalib   []trainer.CalibBin     `json:"propensity_calibration,omitempty"`
	ObservedShare     float64                `json:"observed_share"`
	Stages            []*trainer.StageResult `json:"stages"`
	RewardSHA256      string                 `json:"reward_sha256"`
	ElapsedSeconds    float64                `json:"elapsed_seconds"`
	// Warnings are the data's and training's degenerate conditions
	// (trainer.DataWarnings, trainer.StageWarnings); empty when none.
	Warnings []trainer.Warning `json:"warnings"`
}

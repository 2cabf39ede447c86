// Package sim makes semi-synthetic observational feedback the way the CausalRM
// paper does (docs/method.md, "The semi-synthetic protocol"): start from fully labelled rows with a graded
// rating, then impose rating-dependent selection (who gives feedback) and
// class-conditional label noise (what the feedback says). Generate does this over
// synthetic embeddings; Apply does it over a user's own labelled embeddings.
//
// Everything is deterministic in Config.Seed. Randomness comes from math/rand/v2
// PCG generators seeded as rand.NewPCG(Seed, stream), one fixed stream constant per
// purpose (see the stream* constants), so that changing one knob does not reshuffle
// the draws of another.
package sim

import (
	"fmt"
	"math"
	"strings"
)

// Config describes one semi-synthetic dataset. Apply reads only the protocol
// fields (Alpha, Rho01, Rho10, ObsRate, Seed); Generate reads all of them.
//
// Zero ObsRate, Latent, Clusters and Levels mean "use the default", so callers
// can set only what they care about.
type Config struct {
	TrainRows int // rows of the training part, before the 80/20 train/val split
	TestRows  int // rows of the clean, fully observed test split
	Dim       int // embedding dimension d

	Alpha   float64 // selection strength in (0,1]: smaller is more biased
	Rho01   float64 // P(y=0 | r=1) on observed rows
	Rho10   float64 // P(y=1 | r=0) on observed rows
	ObsRate float64 // target mean propensity over train+val rows (default 0.2)

	Seed uint64

	Latent   int // rank of the latent structure (default 16)
	Clusters int // Gaussian mixture components in latent space (default 8)
	Levels   int // rating levels 0..Levels-1 (default 5, HelpSteer-like 0..4)

	// RatingNoise is the std of the noise on the latent score before it is
	// cut into levels (default 0.35): how far the rating is from being a
	// function of x. Real embeddings predict human ratings loosely, so
	// larger values are the more realistic ones.
	RatingNoise float64

	// NoiseSpread makes the rating noise differ between the latent
	// clusters (topics): cluster c's std is RatingNoise*exp(NoiseSpread*xi_c)
	// with xi_c ~ N(0,1) fixed by the seed. 0 (the default) is the same
	// noise everywhere. Raters agree on some topics and split on others;
	// where they split, rating-driven selection shifts the observed label
	// rate of a region more, so selection distorts the ranking across
	// regions, not only the level.
	NoiseSpread float64
}

// Defaults for the optional fields.
const (
	DefaultObsRate     = 0.2
	DefaultLatent      = 16
	DefaultClusters    = 8
	DefaultLevels      = 5
	DefaultRatingNoise = 0.35
)

// DefaultConfig is the paper's main setting (alpha 0.5, rho01 0.1, rho10 0.2,
// 20% observed) at a size that trains in seconds on a CPU.
func DefaultConfig() Config {
	return Config{
		TrainRows: 20000,
		TestRows:  5000,
		Dim:       128,
		Alpha:     0.5,
		Rho01:     0.1,
		Rho10:     0.2,
		ObsRate:   DefaultObsRate,
		Seed:      1,
		Latent:    DefaultLatent,
		Clusters:  DefaultClusters,
		Levels:    DefaultLevels,
	}
}

// withDefaults fills the optional fields left at zero.
func (c Config) withDefaults() Config {
	if c.ObsRate == 0 {
		c.ObsRate = DefaultObsRate
	}
	if c.Latent == 0 {
		c.Latent = DefaultLatent
	}
	if c.Clusters == 0 {
		c.Clusters = DefaultClusters
	}
	if c.Levels == 0 {
		c.Levels = DefaultLevels
	}
	if c.RatingNoise == 0 {
		c.RatingNoise = DefaultRatingNoise
	}
	return c
}

// FieldError is an invalid Config field: Field (a Config field name, or
// "Rho01+Rho10") with Value breaks Rule; when the bound is another field's
// value, Other names it. Describe lets a caller name the fields its own way
// (the CLI names its flags).
type FieldError struct {
	Field      string
	Value      any
	Rule       string // e.g. "must be >= 5", "must be in (0,1]", "must be <="
	Other      string
	OtherValue any
	Why        string
}

func (e *FieldError) Error() string {
	return "sim: " + e.describe(func(f string) string { return f }, "+")
}

// Describe writes the error with every field named by name, e.g.
// "--latent 16 must be <= --dim 8: ...".
func (e *FieldError) Describe(name func(field string) string) string { return e.describe(name, " + ") }

func (e *FieldError) describe(name func(field string) string, plus string) string {
	var parts []string
	for _, f := range strings.Split(e.Field, "+") {
		parts = append(parts, name(f))
	}
	s := fmt.Sprintf("%s %v %s", strings.Join(parts, plus), e.Value, e.Rule)
	if e.Other != "" {
		s += fmt.Sprintf(" %s %v", name(e.Other), e.OtherValue)
	}
	if e.Why != "" {
		s += ": " + e.Why
	}
	return s
}

func fieldErr(field string, v any, rule string) error {
	return &FieldError{Field: field, Value: v, Rule: rule}
}

// Validate checks every field Generate uses; the error (a *FieldError)
// names the bad field.
func (c Config) Validate() error {
	c = c.withDefaults()
	if err := c.validateProtocol(); err != nil {
		return err
	}
	switch {
	case c.TrainRows < 5:
		// 80/20 must leave at least one validation row and four training rows.
		return &FieldError{Field: "TrainRows", Value: c.TrainRows, Rule: "must be >= 5", Why: "the 80/20 split needs one validation and four training rows"}
	case c.TestRows < 1:
		return fieldErr("TestRows", c.TestRows, "must be >= 1")
	case c.Dim < 1:
		return fieldErr("Dim", c.Dim, "must be >= 1")
	case c.Latent < 1:
		return fieldErr("Latent", c.Latent, "must be >= 1")
	case c.Latent > c.Dim:
		return &FieldError{Field: "Latent", Value: c.Latent, Rule: "must be <=", Other: "Dim", OtherValue: c.Dim, Why: "it is the rank of the embedding structure"}
	case c.Clusters < 1:
		return fieldErr("Clusters", c.Clusters, "must be >= 1")
	case c.Levels < 2:
		return fieldErr("Levels", c.Levels, "must be >= 2")
	case !(c.RatingNoise >= 0) || math.IsInf(c.RatingNoise, 0):
		return fieldErr("RatingNoise", c.RatingNoise, "must be a finite value >= 0")
	case !(c.NoiseSpread >= 0) || c.NoiseSpread > 3:
		return fieldErr("NoiseSpread", c.NoiseSpread, "must be in [0, 3]")
	}
	return nil
}

// validateProtocol checks the fields Apply uses.
func (c Config) validateProtocol() error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !finite(c.Alpha) || c.Alpha <= 0 || c.Alpha > 1:
		return fieldErr("Alpha", c.Alpha, "must be in (0,1]")
	case !finite(c.Rho01) || c.Rho01 < 0 || c.Rho01 >= 1:
		return fieldErr("Rho01", c.Rho01, "must be in [0,1)")
	case !finite(c.Rho10) || c.Rho10 < 0 || c.Rho10 >= 1:
		return fieldErr("Rho10", c.Rho10, "must be in [0,1)")
	case c.Rho01+c.Rho10 >= 1:
		// At rho01+rho10 >= 1 the noisy label carries no (or inverted) signal
		// and the unbiased surrogate loss is undefined.
		return &FieldError{Field: "Rho01+Rho10", Value: c.Rho01 + c.Rho10, Rule: "must be < 1", Why: "at 1 or more the noisy label carries no signal"}
	case !finite(c.ObsRate) || c.ObsRate <= 0 || c.ObsRate > 1:
		return fieldErr("ObsRate", c.ObsRate, "must be in (0,1]")
	}
	return nil
}

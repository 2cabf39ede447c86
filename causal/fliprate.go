package causal

import (
	"fmt"
	"math"
	"slices"
)

// DefaultFlipQuantile is the anchor quantile q of the flip-rate estimator.
const DefaultFlipQuantile = 0.97

// QuantileRanks says which order statistics (0-based) of n values the q-th
// quantile interpolates between, and the weight of the upper one. It follows
// numpy's default method ("linear", Hyndman-Fan type 7): the virtual index is
// h = (n-1)*q, lo = floor(h), hi = min(lo+1, n-1), frac = h - lo. A
// distributed caller can select just these two values and finish with Lerp.
// It panics if n < 1 or q is outside [0,1], as numpy raises.
func QuantileRanks(n int, q float64) (lo, hi int, frac float64) {
	if n < 1 {
		panic("causal: quantile of no values")
	}
	if !(q >= 0 && q <= 1) {
		panic(fmt.Sprintf("causal: quantile %v outside [0,1]", q))
	}
	h := float64(n-1) * q
	if h >= float64(n-1) {
		return n - 1, n - 1, 0
	}
	fl := math.Floor(h)
	lo = int(fl)
	return lo, lo + 1, h - fl
}

// Lerp interpolates from a toward b by t exactly as numpy's quantile does:
// from a when t < 0.5 and from b otherwise, which keeps the result exact at
// both ends and matches numpy bit for bit.
func Lerp(a, b, t float64) float64 {
	d := b - a
	if t >= 0.5 {
		return b - d*(1-t)
	}
	return a + d*t
}

// Quantile is numpy.quantile(sorted, q) with the default linear method; sorted
// must be in ascending order. See QuantileRanks for the definition.
func Quantile(sorted []float64, q float64) float64 {
	lo, hi, frac := QuantileRanks(len(sorted), q)
	return Lerp(sorted[lo], sorted[hi], frac)
}

// EstimateFlipRates is the anchor-point estimator of section 3, stage 2, run
// once over all training rows' noise-model logits z: rho10 = sigmoid(Q_{1-q}(z))
// (the noisy-positive probability of the most surely negative rows) and
// rho01 = 1 - sigmoid(Q_q(z)). Quantiles are numpy's linear ones (Quantile).
// logits is not modified. A NaN logit (a diverged model) gives NaN rates, as
// numpy's quantile would. It panics on empty logits or q outside [0,1].
func EstimateFlipRates(logits []float64, q float64) Rates {
	z := slices.Clone(logits)
	slices.Sort(z) // NaNs sort first
	if len(z) > 0 && math.IsNaN(z[0]) {
		return Rates{Rho01: math.NaN(), Rho10: math.NaN()}
	}
	return Rates{
		Rho01: Sigmoid(-Quantile(z, q)), // 1 - sigmoid(x) = sigmoid(-x), exactly in the tail
		Rho10: Sigmoid(Quantile(z, 1-q)),
	}
}

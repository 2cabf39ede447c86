package causal

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// The flip-rate estimators (trainer Config.FlipEstimator; docs/method.md,
// "Flip-rate estimation").
const (
	// FlipCrossFit (the default) ranks the observed rows by out-of-fold
	// noise-model logits and reads the rates off the labels of the two
	// tails (EstimateFlipRatesTail).
	FlipCrossFit = "crossfit"
	// FlipAnchor is the paper's anchor-point estimator over the in-sample
	// logits of all training rows (EstimateFlipRates).
	FlipAnchor = "anchor"
)

const (
	// DefaultFlipFolds is the number of cross-fitting folds of FlipCrossFit.
	DefaultFlipFolds = 5
	// DefaultFlipRepeats is how many times FlipCrossFit deals the rows into
	// folds (each row's out-of-fold logits are averaged over the deals):
	// two halve the estimate's spread over training seeds (docs/results.md).
	DefaultFlipRepeats = 2
	// MaxFlipRepeats bounds the repeats (each costs DefaultFlipFolds noise
	// models).
	MaxFlipRepeats = 10
	// DefaultFlipTail is the share of each noisy class's rows that
	// EstimateFlipRatesTail reads a rate from (docs/results.md, "Flip-rate
	// estimation", for how it was chosen).
	DefaultFlipTail = 0.1
	// MinFlipTailRows is the fewest rows a tail holds when its noisy class
	// has that many: below it a rate rests on a handful of labels.
	MinFlipTailRows = 30
	// FlipZ is the normal quantile of the rates' two-sided 95% intervals.
	FlipZ = 1.959963984540054
)

// FlipEstimate is an estimate of the flip rates with 95% intervals: Lo and
// Hi bound each rate (Wilson score intervals of the tail's label counts).
// N01 and N10 are the rows each rate was read from, Flips01 and Flips10 the
// flipped labels among them. Anchor estimates have no interval (Lo = Hi =
// Rates, N = 0).
type FlipEstimate struct {
	Method           string `json:"method"`
	Rates            Rates  `json:"rates"`
	Lo               Rates  `json:"lo"`
	Hi               Rates  `json:"hi"`
	N01              int    `json:"n01"`
	N10              int    `json:"n10"`
	Flips01, Flips10 int    `json:"-"`
}

// Wilson is the Wilson score interval of k successes in n trials at the
// normal quantile z: the set of p whose z-test does not reject k/n. It is
// inside [0,1] for every k in 0..n and keeps a non-zero width at k = 0 and
// k = n. It panics if n < 1 or k outside 0..n.
func Wilson(k, n int, z float64) (lo, hi float64) {
	if n < 1 || k < 0 || k > n {
		panic(fmt.Sprintf("causal: Wilson interval of %d in %d", k, n))
	}
	nf := float64(n)
	p := float64(k) / nf
	z2 := z * z
	den := 1 + z2/nf
	c := (p + z2/(2*nf)) / den
	h := z * math.Sqrt(p*(1-p)/nf+z2/(4*nf*nf)) / den
	return math.Max(0, c-h), math.Min(1, c+h)
}

// EstimateFlipRatesTail estimates the flip rates from noise-model logits z
// that are out of sample for their rows (cross-fitted) and the rows'
// observed noisy labels y. Rows are ranked by z (ties by index); with n1
// rows labelled 1 and n0 labelled 0, rho10 is the share of y = 1 among the
// k10 = size(n0) lowest rows and rho01 the share of y = 0 among the
// k01 = size(n1) highest, size(m) = max(floor(tail*m), min(m,
// MinFlipTailRows), 1) capped at n, each with its Wilson 95% interval.
//
// Where the tails hold only one clean class (anchor rows), each share is
// an unbiased estimate of its rate: the rows are chosen by scores that did
// not see their labels, so, unlike a quantile of the scores themselves,
// it is not pulled outward by the scores' own noise. Rows of the other
// clean class in a tail bias that rate upward; the interval covers the
// labels' sampling noise only, not that bias.
//
// A NaN logit gives NaN rates. It panics if z is empty, y has another
// length or tail is outside (0,1].
func EstimateFlipRatesTail(z []float64, y []uint8, tail float64) FlipEstimate {
	n := len(z)
	if n == 0 || len(y) != n {
		panic(fmt.Sprintf("causal: flip-rate tails of %d logits and %d labels", n, len(y)))
	}
	if !(tail > 0 && tail <= 1) {
		panic(fmt.Sprintf("causal: flip-rate tail %v outside (0,1]", tail))
	}
	nan := Rates{Rho01: math.NaN(), Rho10: math.NaN()}
	idx := make([]int, n)
	n1 := 0
	for i := range idx {
		if math.IsNaN(z[i]) {
			return FlipEstimate{Method: FlipCrossFit, Rates: nan, Lo: nan, Hi: nan}
		}
		idx[i] = i
		if y[i] != 0 {
			n1++
		}
	}
	slices.SortFunc(idx, func(a, b int) int {
		if c := cmp.Compare(z[a], z[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	size := func(nc int) int { return min(n, max(1, int(tail*float64(nc)), min(nc, MinFlipTailRows))) }
	e := FlipEstimate{Method: FlipCrossFit, N01: size(n1), N10: size(n - n1)}
	for _, i := range idx[:e.N10] {
		if y[i] != 0 {
			e.Flips10++
		}
	}
	for _, i := range idx[n-e.N01:] {
		if y[i] == 0 {
			e.Flips01++
		}
	}
	e.Rates = Rates{Rho01: float64(e.Flips01) / float64(e.N01), Rho10: float64(e.Flips10) / float64(e.N10)}
	e.Lo.Rho01, e.Hi.Rho01 = Wilson(e.Flips01, e.N01, FlipZ)
	e.Lo.Rho10, e.Hi.Rho10 = Wilson(e.Flips10, e.N10, FlipZ)
	return e
}

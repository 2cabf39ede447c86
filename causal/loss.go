package causal

import "math"

// Sigmoid is the logistic function, evaluated so that it never overflows and
// keeps full relative precision in both tails.
func Sigmoid(f float64) float64 {
	if f >= 0 {
		return 1 / (1 + math.Exp(-f))
	}
	e := math.Exp(f)
	return e / (1 + e)
}

// BCE is binary cross-entropy with logits for a target t in [0,1], in the
// stable form max(f,0) - f*t + log1p(exp(-|f|)) so that large |f| neither
// overflows nor loses the small tail term.
func BCE(f, t float64) float64 {
	return math.Max(f, 0) - f*t + math.Log1p(math.Exp(-math.Abs(f)))
}

// dBCE returns a = d l(f,1)/df = s-1 and b = d l(f,0)/df = s. a is computed as
// -sigmoid(-f) rather than s-1 so that it keeps its precision for large f.
func dBCE(f float64) (a, b float64) {
	return -Sigmoid(-f), Sigmoid(f)
}

// Rates are the class-conditional label flip rates of the observed feedback:
// Rho01 = P(y=0 | r=1) and Rho10 = P(y=1 | r=0).
type Rates struct {
	Rho01 float64 `json:"rho01"`
	Rho10 float64 `json:"rho10"`
}

// D is the surrogate's denominator 1 - rho01 - rho10, floored at 1e-6 so that
// rates summing to one or more (uninformative labels) cannot divide by zero.
func (r Rates) D() float64 {
	return math.Max(1-r.Rho01-r.Rho10, 1e-6)
}

// CleanImputation maps an imputation model's prediction of the noisy
// label, g = P(y = 1 | x), to the clean-label probability it implies,
// (g - rho10) / (1 - rho01 - rho10), clamped to [0, 1]. The doubly robust
// estimator's imputed loss l(f, g) stands in for the clean loss l(f, r);
// with the noisy g it would pull the reward toward the flipped labels
// even where the imputation model is exact.
func CleanImputation(g float64, r Rates) float64 {
	return math.Min(1, math.Max(0, (g-r.Rho10)/r.D()))
}

// surrogateWeights returns (wa, wb) with lt(f, y) = wa*l(f,1) + wb*l(f,0).
// Any y other than 0 is treated as 1.
func surrogateWeights(y uint8, r Rates) (wa, wb float64) {
	d := r.D()
	if y != 0 {
		return (1 - r.Rho10) / d, -r.Rho01 / d
	}
	return -r.Rho10 / d, (1 - r.Rho01) / d
}

// Surrogate is the noise-corrected loss lt(f, y) of section 4: its expectation
// over the label flips equals the clean loss l(f, r). It can be negative.
func Surrogate(f float64, y uint8, r Rates) float64 {
	wa, wb := surrogateWeights(y, r)
	return wa*BCE(f, 1) + wb*BCE(f, 0)
}

// PropensityRow is the propensity stage's per-row loss (sigmoid(f) - o)^2 (MSE
// on the probability, as the authors train it) and its derivative in f.
func PropensityRow(f float64, o uint8) (loss, dldf float64) {
	s := Sigmoid(f)
	e := s - float64(o)
	// d s/df = s(1-s), with 1-s = sigmoid(-f) for precision.
	return e * e, 2 * e * s * Sigmoid(-f)
}

// BCERow is the noise and imputation stages' per-row loss l(f, y) against the
// (noisy) observed label and its derivative s - y.
func BCERow(f float64, y uint8) (loss, dldf float64) {
	a, b := dBCE(f)
	if y != 0 {
		return BCE(f, 1), a
	}
	return BCE(f, 0), b
}

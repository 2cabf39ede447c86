package causal

import (
	"fmt"
	"strings"
)

// Method names a reward-stage estimator of section 4.
type Method string

// The estimators. CausalIPS and CausalDR are CausalRM; the other four are the
// ablations reported beside it.
const (
	Naive     Method = "naive"
	IPS       Method = "ips"
	DR        Method = "dr"
	Noise     Method = "noise"
	CausalIPS Method = "causalrm-ips"
	CausalDR  Method = "causalrm-dr"
)

// AllMethods lists the estimators in the paper's table order.
func AllMethods() []Method {
	return []Method{Naive, IPS, DR, Noise, CausalIPS, CausalDR}
}

// ParseMethod accepts a method name, ignoring case and surrounding space, and
// rejects anything else so that a typo in a config cannot silently train the
// wrong estimator.
func ParseMethod(s string) (Method, error) {
	m := Method(strings.ToLower(strings.TrimSpace(s)))
	if m.Valid() {
		return m, nil
	}
	return "", fmt.Errorf("causal: unknown method %q (want one of %v)", s, AllMethods())
}

// Valid reports whether m is one of AllMethods.
func (m Method) Valid() bool {
	switch m {
	case Naive, IPS, DR, Noise, CausalIPS, CausalDR:
		return true
	}
	return false
}

func (m Method) String() string { return string(m) }

// UnmarshalText lets config decoders (JSON, YAML, flags) validate the name.
func (m *Method) UnmarshalText(b []byte) error {
	v, err := ParseMethod(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalText is the inverse of UnmarshalText.
func (m Method) MarshalText() ([]byte, error) { return []byte(m), nil }

// UsesPropensity reports whether the method needs p_hat (the propensity stage).
func (m Method) UsesPropensity() bool {
	return m == IPS || m == DR || m == CausalIPS || m == CausalDR
}

// UsesImputation reports whether the method needs g_hat (the imputation stage).
func (m Method) UsesImputation() bool { return m == DR || m == CausalDR }

// UsesFlipRates reports whether the method needs the flip rates (the noise
// stage, unless rates are given).
func (m Method) UsesFlipRates() bool {
	return m == Noise || m == CausalIPS || m == CausalDR
}

// TouchesUnobserved reports whether rows with o = 0 contribute loss or
// gradient. Only the DR methods' imputation term does; every other method may
// skip unobserved rows in both passes.
func (m Method) TouchesUnobserved() bool { return m.UsesImputation() }

// NormalizeByObserved reports whether the batch loss is averaged over the
// observed rows (naive, noise) rather than over all B rows of the batch.
func (m Method) NormalizeByObserved() bool { return m == Naive || m == Noise }

// Normalizer is the count the summed per-row losses of a batch are divided by:
// observed for naive and noise, batch otherwise. It can be 0 (a batch with no
// observed row under naive/noise); such a batch carries no signal and the
// caller should skip it.
func (m Method) Normalizer(batch, observed int) int {
	if m.NormalizeByObserved() {
		return observed
	}
	return batch
}

// RowInput is one row's data for the reward stage: observation indicator O,
// observed label Y (ignored when O = 0), estimated propensity P = p_hat (must
// be > 0 where O = 1; it is clipped at c upstream) and imputation G = g_hat.
type RowInput struct {
	O, Y uint8
	P, G float64
}

// Weights returns (wa, wb) such that the row's loss is wa*l(f,1) + wb*l(f,0)
// and its derivative is wa*(s-1) + wb*s. This works because l(f,t) is affine
// in t, so every estimator of section 4 is such a combination; the weights do
// not depend on f, so a trainer may precompute them per row.
func (m Method) Weights(in RowInput, r Rates) (wa, wb float64) {
	// (ya, yb): weights of the observed-label term, l(f,y) or lt(f,y).
	var ya, yb float64
	if in.O != 0 {
		switch m {
		case Noise, CausalIPS, CausalDR:
			ya, yb = surrogateWeights(in.Y, r)
		default:
			if in.Y != 0 {
				ya = 1
			} else {
				yb = 1
			}
		}
	}
	switch m {
	case Naive, Noise:
		return ya, yb
	case IPS, CausalIPS:
		if in.O == 0 {
			return 0, 0
		}
		return ya / in.P, yb / in.P
	case DR, CausalDR:
		ga, gb := in.G, 1-in.G
		if in.O == 0 {
			return ga, gb
		}
		return ga + (ya-ga)/in.P, gb + (yb-gb)/in.P
	}
	panic(fmt.Sprintf("causal: unknown method %q", string(m)))
}

// Row is the method's per-row loss from the table of section 4, before the
// division by the normaliser, and its analytic derivative in the logit f.
// Rows with O = 0 give exactly (0, 0) unless the method TouchesUnobserved.
func (m Method) Row(f float64, in RowInput, r Rates) (loss, dldf float64) {
	if in.O == 0 && !m.TouchesUnobserved() {
		if !m.Valid() {
			panic(fmt.Sprintf("causal: unknown method %q", string(m)))
		}
		return 0, 0
	}
	wa, wb := m.Weights(in, r)
	a, b := dBCE(f)
	return wa*BCE(f, 1) + wb*BCE(f, 0), wa*a + wb*b
}

package causal

import (
	"math"
	"testing"
)

func TestSigmoid(t *testing.T) {
	for _, f := range []float64{-700, -40, -5, -0.5, 0, 0.5, 5, 40, 700} {
		s := Sigmoid(f)
		if math.IsNaN(s) || s < 0 || s > 1 {
			t.Fatalf("Sigmoid(%v) = %v", f, s)
		}
		if math.Abs(f) <= 30 {
			want := 1 / (1 + math.Exp(-f))
			if math.Abs(s-want) > 1e-15 {
				t.Errorf("Sigmoid(%v) = %v, want %v", f, s, want)
			}
		}
		// The tail must keep relative precision: sigmoid(-f) ~ exp(-f).
		if f >= 40 && f < 700 {
			if r := Sigmoid(-f) / math.Exp(-f); math.Abs(r-1) > 1e-12 {
				t.Errorf("Sigmoid(-%v) lost precision: ratio %v", f, r)
			}
		}
	}
}

func TestBCEMatchesDefinition(t *testing.T) {
	for _, f := range []float64{-10, -2, -0.3, 0, 0.8, 3, 10} {
		for _, tg := range []float64{0, 0.2, 0.5, 1} {
			s := 1 / (1 + math.Exp(-f))
			want := -tg*math.Log(s) - (1-tg)*math.Log(1-s)
			if got := BCE(f, tg); math.Abs(got-want) > 1e-12*(1+want) {
				t.Errorf("BCE(%v,%v) = %v, want %v", f, tg, got, want)
			}
		}
	}
	// Stable in the tails: l(f,1) ~ exp(-f) and l(f,0) ~ f for large f.
	if got := BCE(50, 1); math.Abs(got/math.Exp(-50)-1) > 1e-12 {
		t.Errorf("BCE(50,1) = %v", got)
	}
	if got := BCE(-800, 0); got != 0 {
		t.Errorf("BCE(-800,0) = %v", got)
	}
	if got := BCE(800, 0); got != 800 {
		t.Errorf("BCE(800,0) = %v", got)
	}
}

func TestRatesD(t *testing.T) {
	cases := []struct {
		r    Rates
		want float64
	}{
		{Rates{0.1, 0.2}, 0.7},
		{Rates{0, 0}, 1},
		{Rates{0.5, 0.5}, 1e-6},
		{Rates{0.7, 0.6}, 1e-6},
	}
	for _, c := range cases {
		if got := c.r.D(); math.Abs(got-c.want) > 1e-15 {
			t.Errorf("%+v.D() = %v, want %v", c.r, got, c.want)
		}
	}
}

// lTilde is section 4's surrogate written out independently of the package.
func lTilde(f float64, y uint8, r Rates) float64 {
	d := math.Max(1-r.Rho01-r.Rho10, 1e-6)
	l1 := math.Max(f, 0) - f + math.Log1p(math.Exp(-math.Abs(f)))
	l0 := math.Max(f, 0) + math.Log1p(math.Exp(-math.Abs(f)))
	if y == 1 {
		return ((1-r.Rho10)*l1 - r.Rho01*l0) / d
	}
	return ((1-r.Rho01)*l0 - r.Rho10*l1) / d
}

var testRates = []Rates{{0, 0}, {0.1, 0.2}, {0.2, 0.1}, {0.3, 0.3}, {0.45, 0.5}}

// TestSurrogateUnbiased checks, by exact expectation over the flip process,
// that E_y[lt(f,y) | r] = l(f,r), and likewise for the derivative.
func TestSurrogateUnbiased(t *testing.T) {
	for _, r := range testRates {
		for _, f := range []float64{-30, -8, -1.3, 0, 0.2, 2.5, 9, 30} {
			for _, truth := range []uint8{0, 1} {
				p1 := r.Rho10 // P(y=1 | r=0)
				if truth == 1 {
					p1 = 1 - r.Rho01
				}
				l1, d1 := Noise.Row(f, RowInput{O: 1, Y: 1, P: 1}, r)
				l0, d0 := Noise.Row(f, RowInput{O: 1, Y: 0, P: 1}, r)
				if s := Surrogate(f, 1, r); s != l1 {
					t.Fatalf("Surrogate(%v,1) = %v but noise row = %v", f, s, l1)
				}
				if s := Surrogate(f, 0, r); s != l0 {
					t.Fatalf("Surrogate(%v,0) = %v but noise row = %v", f, s, l0)
				}
				el := p1*l1 + (1-p1)*l0
				ed := p1*d1 + (1-p1)*d0
				want := BCE(f, float64(truth))
				wantD := 1/(1+math.Exp(-f)) - float64(truth)
				if math.Abs(el-want) > 1e-12*math.Max(1, math.Abs(want)) {
					t.Errorf("rates %+v f=%v r=%d: E lt = %.17g, want %.17g", r, f, truth, el, want)
				}
				if math.Abs(ed-wantD) > 1e-12 {
					t.Errorf("rates %+v f=%v r=%d: E dlt = %.17g, want %.17g", r, f, truth, ed, wantD)
				}
			}
		}
	}
}

func TestSurrogateFormula(t *testing.T) {
	for _, r := range testRates {
		for _, f := range []float64{-30, -2, 0, 0.7, 30} {
			for _, y := range []uint8{0, 1} {
				want := lTilde(f, y, r)
				if got := Surrogate(f, y, r); math.Abs(got-want) > 1e-12*math.Max(1, math.Abs(want)) {
					t.Errorf("Surrogate(%v,%d,%+v) = %v, want %v", f, y, r, got, want)
				}
			}
		}
	}
}

var fdGrid = []float64{-30, -12, -3.5, -1, -0.2, 0, 0.4, 1.7, 5, 15, 30}

// centralDiff is the numeric derivative the analytic ones are checked against.
func centralDiff(fn func(float64) float64, f float64) float64 {
	const h = 1e-5
	return (fn(f+h) - fn(f-h)) / (2 * h)
}

func TestStageRowsGradient(t *testing.T) {
	for _, f := range fdGrid {
		for _, v := range []uint8{0, 1} {
			pl, pd := PropensityRow(f, v)
			s := 1 / (1 + math.Exp(-f))
			if want := (s - float64(v)) * (s - float64(v)); math.Abs(pl-want) > 1e-15 {
				t.Errorf("PropensityRow(%v,%d) loss %v, want %v", f, v, pl, want)
			}
			num := centralDiff(func(x float64) float64 { l, _ := PropensityRow(x, v); return l }, f)
			if math.Abs(num-pd) > 1e-8 {
				t.Errorf("PropensityRow(%v,%d) dldf %v, numeric %v", f, v, pd, num)
			}
			bl, bd := BCERow(f, v)
			if want := BCE(f, float64(v)); bl != want {
				t.Errorf("BCERow(%v,%d) loss %v, want %v", f, v, bl, want)
			}
			num = centralDiff(func(x float64) float64 { l, _ := BCERow(x, v); return l }, f)
			if math.Abs(num-bd) > 1e-6*(1+math.Abs(f)) {
				t.Errorf("BCERow(%v,%d) dldf %v, numeric %v", f, v, bd, num)
			}
		}
	}
}

// With an exact imputation model (g = P(y = 1 | x) under the flips), the
// clean imputation is the clean-label probability q, and the doubly robust
// correction term lt(f, y) - l(f, g') has mean zero over the noisy label:
// the imputed loss is the clean loss's conditional mean. Imputing g itself
// leaves a bias wherever the rates are not zero.
func TestCleanImputationCentresTheCorrection(t *testing.T) {
	for _, r := range testRates {
		d := 1 - r.Rho01 - r.Rho10
		if d <= 0.05 {
			continue // uninformative labels: nothing to invert
		}
		for _, q := range []float64{0, 0.1, 0.37, 0.5, 0.8, 1} {
			g := r.Rho10 + d*q // P(y = 1 | x) when P(r = 1 | x) = q
			if got := CleanImputation(g, r); math.Abs(got-q) > 1e-12 {
				t.Fatalf("rates %+v q=%v: CleanImputation(%v) = %v, want q", r, q, g, got)
			}
			for _, f := range []float64{-4, -0.3, 0, 1.2, 6} {
				mean := g*Surrogate(f, 1, r) + (1-g)*Surrogate(f, 0, r)
				if bias := mean - BCE(f, CleanImputation(g, r)); math.Abs(bias) > 1e-9 {
					t.Fatalf("rates %+v q=%v f=%v: correction term has mean %v", r, q, f, bias)
				}
				noisyBias := mean - BCE(f, g)
				if r.Rho01+r.Rho10 > 0.05 && q != 0.5 && f != 0 && math.Abs(noisyBias) < 1e-6 {
					t.Fatalf("rates %+v q=%v f=%v: the noisy imputation should be biased", r, q, f)
				}
			}
		}
	}
	// Outside the range the rates allow, the probability is clamped.
	r := Rates{Rho01: 0.1, Rho10: 0.2}
	if CleanImputation(0.05, r) != 0 || CleanImputation(0.95, r) != 1 {
		t.Fatal("CleanImputation does not clamp to [0, 1]")
	}
}

package causal

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestQuantileHand(t *testing.T) {
	x := []float64{1, 2, 4, 8}
	// n-1 = 3: q=0.25 -> h=0.75 -> 1 + 0.75*(2-1) = 1.75
	//          q=0.5  -> h=1.5  -> 2 + 0.5*(4-2)  = 3
	//          q=0.9  -> h=2.7  -> 4 + 0.7*(8-4)  = 6.8
	cases := []struct{ q, want float64 }{
		{0, 1}, {0.25, 1.75}, {0.5, 3}, {0.9, 6.8}, {1, 8}, {2.0 / 3, 4},
	}
	for _, c := range cases {
		if got := Quantile(x, c.q); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("Quantile(%v, %v) = %v, want %v", x, c.q, got, c.want)
		}
	}
	if got := Quantile([]float64{-3.5}, 0.97); got != -3.5 {
		t.Errorf("single value quantile = %v", got)
	}
}

func TestQuantileRanksHand(t *testing.T) {
	cases := []struct {
		n      int
		q      float64
		lo, hi int
		frac   float64
	}{
		{11, 0.97, 9, 10, 0.7}, // h = 10*0.97 = 9.7
		{11, 0.03, 0, 1, 0.3},  // h = 0.3
		{4, 1, 3, 3, 0},
		{4, 0, 0, 1, 0},
		{1, 0.5, 0, 0, 0},
		{5, 0.5, 2, 3, 0}, // h = 2 exactly
	}
	for _, c := range cases {
		lo, hi, frac := QuantileRanks(c.n, c.q)
		if lo != c.lo || hi != c.hi || math.Abs(frac-c.frac) > 1e-12 {
			t.Errorf("QuantileRanks(%d,%v) = %d,%d,%v want %d,%d,%v", c.n, c.q, lo, hi, frac, c.lo, c.hi, c.frac)
		}
	}
}

func TestQuantileRanksConsistent(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 500; trial++ {
		n := 1 + rng.IntN(40)
		x := make([]float64, n)
		for i := range x {
			x[i] = math.Round(rng.NormFloat64()*4) / 2 // include ties
		}
		slices.Sort(x)
		for _, q := range []float64{0, 0.03, 0.5, 0.97, 1, rng.Float64()} {
			lo, hi, frac := QuantileRanks(n, q)
			if lo < 0 || hi >= n || hi < lo || hi-lo > 1 || frac < 0 || frac >= 1 {
				t.Fatalf("QuantileRanks(%d,%v) = %d,%d,%v", n, q, lo, hi, frac)
			}
			got := Quantile(x, q)
			if got != Lerp(x[lo], x[hi], frac) {
				t.Fatalf("Quantile disagrees with its ranks")
			}
			// Type-7 definition: (1-g)*x[j] + g*x[j+1] at h = (n-1)q.
			h := float64(n-1) * q
			j := int(math.Floor(h))
			want := x[j]
			if j+1 < n {
				g := h - float64(j)
				want = (1-g)*x[j] + g*x[j+1]
			}
			if math.Abs(got-want) > 1e-12*(1+math.Abs(want)) {
				t.Fatalf("Quantile(n=%d, q=%v) = %v, want %v", n, q, got, want)
			}
		}
	}
}

func TestQuantilePanics(t *testing.T) {
	for _, f := range []func(){
		func() { Quantile(nil, 0.5) },
		func() { QuantileRanks(3, -0.1) },
		func() { QuantileRanks(3, 1.1) },
		func() { QuantileRanks(3, math.NaN()) },
		func() { EstimateFlipRates(nil, 0.97) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("expected a panic")
				}
			}()
			f()
		}()
	}
}

func TestEstimateFlipRatesHand(t *testing.T) {
	// Unsorted on purpose. Sorted: -4 -2 -1 -0.5 0 0.3 0.8 1 2 3 5 (n = 11).
	z := []float64{0.3, 5, -1, 2, -4, 0, 1, -0.5, 3, -2, 0.8}
	orig := slices.Clone(z)
	// q = 0.97: h = 9.7 -> 3 + 0.7*(5-3) = 4.4; 1-q: h = 0.3 -> -4 + 0.3*2 = -3.4.
	got := EstimateFlipRates(z, 0.97)
	want := Rates{Rho01: 1 - 1/(1+math.Exp(-4.4)), Rho10: 1 / (1 + math.Exp(3.4))}
	if math.Abs(got.Rho01-want.Rho01) > 1e-12 || math.Abs(got.Rho10-want.Rho10) > 1e-12 {
		t.Errorf("EstimateFlipRates = %+v, want %+v", got, want)
	}
	if !slices.Equal(z, orig) {
		t.Error("EstimateFlipRates modified its input")
	}
	// n = 7, q = 0.75: h = 4.5 and 1.5 -> +-1.5 on -3..3, so both rates are sigmoid(-1.5).
	got = EstimateFlipRates([]float64{3, -3, 2, -2, 1, -1, 0}, 0.75)
	s := 1 / (1 + math.Exp(1.5))
	if math.Abs(got.Rho01-s) > 1e-12 || math.Abs(got.Rho10-s) > 1e-12 {
		t.Errorf("EstimateFlipRates symmetric = %+v, want both %v", got, s)
	}
	got = EstimateFlipRates([]float64{1, math.NaN(), 2}, 0.97)
	if !math.IsNaN(got.Rho01) || !math.IsNaN(got.Rho10) {
		t.Errorf("NaN logit gave %+v", got)
	}
}

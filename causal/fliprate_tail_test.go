package causal

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestWilsonHand(t *testing.T) {
	// Published 95% Wilson intervals (e.g. Newcombe 1998, table I style):
	// 5/10 -> [0.2366, 0.7634]; 0/10 -> [0, 0.2775]; 10/10 -> [0.7225, 1].
	cases := []struct {
		k, n   int
		lo, hi float64
	}{{5, 10, 0.2366, 0.7634}, {0, 10, 0, 0.2775}, {10, 10, 0.7225, 1}, {1, 1, 0.2065, 1}}
	for _, c := range cases {
		lo, hi := Wilson(c.k, c.n, FlipZ)
		if math.Abs(lo-c.lo) > 5e-5 || math.Abs(hi-c.hi) > 5e-5 {
			t.Errorf("Wilson(%d,%d) = [%.5f, %.5f], want [%.4f, %.4f]", c.k, c.n, lo, hi, c.lo, c.hi)
		}
	}
	// Closed form at k = 0: hi = z^2/n / (1 + z^2/n).
	z2 := FlipZ * FlipZ
	if _, hi := Wilson(0, 40, FlipZ); math.Abs(hi-(z2/40)/(1+z2/40)) > 1e-15 {
		t.Errorf("Wilson(0,40) hi = %v", hi)
	}
	for _, f := range []func(){func() { Wilson(1, 0, FlipZ) }, func() { Wilson(3, 2, FlipZ) }, func() { Wilson(-1, 2, FlipZ) }} {
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

func TestEstimateFlipRatesTailHand(t *testing.T) {
	// 150 rows, z_i = i except z_30 = 29 (a tie with row 29). y = 0 on rows
	// 0..49 except 5, 20, 30, and on rows 60, 140, 145: n0 = 50, n1 = 100.
	// tail 0.5: k10 = max(25, min(50, 30)) = 30, k01 = max(50, 30) = 50.
	// The lowest 30 are rows 0..29 (the tie goes to the lower index, row
	// 29, not row 30 whose y = 1): y = 1 at rows 5, 20 -> rho10 = 2/30.
	// The highest 50 are rows 100..149: y = 0 at 140, 145 -> rho01 = 2/50.
	z := make([]float64, 150)
	y := make([]uint8, 150)
	for i := range z {
		z[i] = float64(i)
		if i >= 50 {
			y[i] = 1
		}
	}
	z[30] = 29
	for _, i := range []int{5, 20, 30} {
		y[i] = 1
	}
	for _, i := range []int{60, 140, 145} {
		y[i] = 0
	}
	e := EstimateFlipRatesTail(z, y, 0.5)
	if e.N01 != 50 || e.N10 != 30 || e.Flips01 != 2 || e.Flips10 != 2 {
		t.Fatalf("tails %+v", e)
	}
	if e.Rates.Rho01 != 2.0/50 || e.Rates.Rho10 != 2.0/30 || e.Method != FlipCrossFit {
		t.Errorf("rates %+v", e.Rates)
	}
	lo, hi := Wilson(2, 30, FlipZ)
	if e.Lo.Rho10 != lo || e.Hi.Rho10 != hi {
		t.Errorf("rho10 interval [%v, %v], want [%v, %v]", e.Lo.Rho10, e.Hi.Rho10, lo, hi)
	}
	// tail 0.8: k10 = 40 (rows 0..39: flips at 5, 20, 30), k01 = 80 (rows
	// 70..149: flips at 140, 145).
	if e := EstimateFlipRatesTail(z, y, 0.8); e.N10 != 40 || e.Flips10 != 3 || e.N01 != 80 || e.Flips01 != 2 {
		t.Errorf("tail 0.8: %+v", e)
	}
	// Small classes: every tail holds min(class rows, MinFlipTailRows). 12
	// rows, 7 labelled 1 and 5 labelled 0: k01 = 7, k10 = 5. Ranked by z:
	// row:  2    5    0    7    9    1    3    8    4    10   6    11
	// y:    0    1    0    1    0    1    0    1    1    0    1    1
	// lowest 5: 2 of y = 1; highest 7 (rows 1..11 above): 2 of y = 0.
	zs := []float64{-1, 0.5, -3, 1, 2, -2, 3, -1, 1, 0, 2.5, 4}
	ys := []uint8{0, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 1}
	if e := EstimateFlipRatesTail(zs, ys, 0.1); e.N01 != 7 || e.N10 != 5 || e.Flips01 != 2 || e.Flips10 != 2 {
		t.Errorf("small classes: %+v", e)
	}
	// A class with no rows still gets one row: all labelled 1, so the
	// lowest row's y = 1 reads as rho10 = 1 with a wide interval.
	e = EstimateFlipRatesTail([]float64{0, 1, 2}, []uint8{1, 1, 1}, 0.1)
	if e.N10 != 1 || e.Rates.Rho10 != 1 || e.N01 != 3 || e.Rates.Rho01 != 0 || e.Lo.Rho10 > 0.3 {
		t.Errorf("one class: %+v", e)
	}
	e = EstimateFlipRatesTail([]float64{0, math.NaN()}, []uint8{0, 1}, 0.5)
	if !math.IsNaN(e.Rates.Rho01) || !math.IsNaN(e.Rates.Rho10) {
		t.Errorf("NaN logit gave %+v", e.Rates)
	}
	for _, f := range []func(){
		func() { EstimateFlipRatesTail(nil, nil, 0.1) },
		func() { EstimateFlipRatesTail([]float64{1}, []uint8{1, 0}, 0.1) },
		func() { EstimateFlipRatesTail([]float64{1}, []uint8{1}, 0) },
		func() { EstimateFlipRatesTail([]float64{1}, []uint8{1}, 1.5) },
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

// flipWorld draws a controlled case: n rows whose clean label r has
// P(r=1|x) = sigmoid(4u) for a latent u ~ N(0, 1.5^2) (anchors at both
// ends), the noisy label y flipped at (rho01, rho10), and a score
// z = 4u + noise: an out-of-sample model's logit, noisy but blind to y.
func flipWorld(rng *rand.Rand, n int, rho Rates, scoreNoise float64) (z []float64, y []uint8) {
	z, y = make([]float64, n), make([]uint8, n)
	for i := range z {
		u := 1.5 * rng.NormFloat64()
		r := rng.Float64() < Sigmoid(4*u)
		f := rng.Float64()
		switch {
		case r && f >= rho.Rho01, !r && f < rho.Rho10:
			y[i] = 1
		}
		// The noisy posterior's logit plus estimation noise.
		p := rho.Rho10 + (1-rho.Rho01-rho.Rho10)*Sigmoid(4*u)
		z[i] = math.Log(p/(1-p)) + scoreNoise*rng.NormFloat64()
	}
	return z, y
}

// With anchors and scores that did not see the labels, the tail estimate
// is unbiased and its 95% intervals cover the true rates about 95% of the
// time; the anchor quantile of the same noisy scores is pulled outward
// (it under-estimates both rates), which is the bias the tail estimator
// removes.
func TestEstimateFlipRatesTailCoverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 1))
	rho := Rates{Rho01: 0.1, Rho10: 0.2}
	const trials = 300
	var cover01, cover10 int
	var mean, anchor Rates
	for range trials {
		z, y := flipWorld(rng, 4000, rho, 0.3)
		e := EstimateFlipRatesTail(z, y, DefaultFlipTail)
		if e.Lo.Rho01 <= rho.Rho01 && rho.Rho01 <= e.Hi.Rho01 {
			cover01++
		}
		if e.Lo.Rho10 <= rho.Rho10 && rho.Rho10 <= e.Hi.Rho10 {
			cover10++
		}
		mean.Rho01 += e.Rates.Rho01 / trials
		mean.Rho10 += e.Rates.Rho10 / trials
		a := EstimateFlipRates(z, DefaultFlipQuantile)
		anchor.Rho01 += a.Rho01 / trials
		anchor.Rho10 += a.Rho10 / trials
	}
	// Binomial(300, 0.95) is below 270 with probability < 1e-3.
	if cover01 < 270 || cover10 < 270 {
		t.Errorf("95%% intervals covered rho01 %d and rho10 %d times of %d", cover01, cover10, trials)
	}
	if math.Abs(mean.Rho01-rho.Rho01) > 0.01 || math.Abs(mean.Rho10-rho.Rho10) > 0.01 {
		t.Errorf("tail estimate mean %+v, truth %+v", mean, rho)
	}
	if !(anchor.Rho01 < rho.Rho01-0.02 && anchor.Rho10 < rho.Rho10-0.02) {
		t.Errorf("the anchor quantile of noisy scores gave %+v; expected it below the truth %+v", anchor, rho)
	}
}

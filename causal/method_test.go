package causal

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

func TestParseMethod(t *testing.T) {
	want := []Method{Naive, IPS, DR, Noise, CausalIPS, CausalDR}
	names := []string{"naive", "ips", "dr", "noise", "causalrm-ips", "causalrm-dr"}
	got := AllMethods()
	if len(got) != len(want) {
		t.Fatalf("AllMethods() = %v", got)
	}
	for i := range want {
		if got[i] != want[i] || string(want[i]) != names[i] {
			t.Fatalf("AllMethods()[%d] = %q, want %q", i, got[i], names[i])
		}
		m, err := ParseMethod(" " + names[i] + " ")
		if err != nil || m != want[i] {
			t.Errorf("ParseMethod(%q) = %q, %v", names[i], m, err)
		}
	}
	if m, err := ParseMethod("CausalRM-IPS"); err != nil || m != CausalIPS {
		t.Errorf("ParseMethod is case-sensitive: %q, %v", m, err)
	}
	for _, bad := range []string{"", "causalrm", "ipw", "dr2"} {
		if _, err := ParseMethod(bad); err == nil {
			t.Errorf("ParseMethod(%q) accepted", bad)
		}
	}
	var cfg struct{ M Method }
	if err := json.Unmarshal([]byte(`{"M":"causalrm-dr"}`), &cfg); err != nil || cfg.M != CausalDR {
		t.Errorf("json decode: %q, %v", cfg.M, err)
	}
	if err := json.Unmarshal([]byte(`{"M":"bogus"}`), &cfg); err == nil {
		t.Error("json decode accepted a bogus method")
	}
}

func TestMethodPredicates(t *testing.T) {
	type preds struct{ prop, imp, flip, unobs, byObs bool }
	want := map[Method]preds{
		Naive:     {false, false, false, false, true},
		IPS:       {true, false, false, false, false},
		DR:        {true, true, false, true, false},
		Noise:     {false, false, true, false, true},
		CausalIPS: {true, false, true, false, false},
		CausalDR:  {true, true, true, true, false},
	}
	for m, w := range want {
		g := preds{m.UsesPropensity(), m.UsesImputation(), m.UsesFlipRates(), m.TouchesUnobserved(), m.NormalizeByObserved()}
		if g != w {
			t.Errorf("%s predicates %+v, want %+v", m, g, w)
		}
		wantN := 10
		if w.byObs {
			wantN = 3
		}
		if n := m.Normalizer(10, 3); n != wantN {
			t.Errorf("%s.Normalizer(10,3) = %d, want %d", m, n, wantN)
		}
	}
}

// tableLoss is the table of section 4 written out directly, independent of
// the package's weight form.
func tableLoss(m Method, f float64, in RowInput, r Rates) float64 {
	o, p := float64(in.O), in.P
	ly := BCE(f, float64(in.Y))
	lt := lTilde(f, in.Y, r)
	lg := BCE(f, in.G)
	switch m {
	case Naive:
		return o * ly
	case IPS:
		return o * ly / p
	case DR:
		return lg + o*(ly-lg)/p
	case Noise:
		return o * lt
	case CausalIPS:
		return o * lt / p
	case CausalDR:
		return lg + o*(lt-lg)/p
	}
	panic(m)
}

// forGrid calls fn for every combination of the row-input grid.
func forGrid(fn func(m Method, f float64, in RowInput, r Rates)) {
	for _, m := range AllMethods() {
		for _, r := range testRates {
			for _, o := range []uint8{0, 1} {
				for _, y := range []uint8{0, 1} {
					for _, p := range []float64{0.1, 0.37, 1} {
						for _, g := range []float64{0, 0.25, 0.9, 1} {
							for _, f := range fdGrid {
								fn(m, f, RowInput{O: o, Y: y, P: p, G: g}, r)
							}
						}
					}
				}
			}
		}
	}
}

// weightBound bounds the total absolute weight of l(f,1) and l(f,0) in any
// row loss, so tolerances can scale with the loss magnitude.
func weightBound(in RowInput, r Rates) float64 {
	return 2 + 3/(in.P*math.Max(1-r.Rho01-r.Rho10, 1e-6))
}

func TestRowMatchesTable(t *testing.T) {
	forGrid(func(m Method, f float64, in RowInput, r Rates) {
		got, _ := m.Row(f, in, r)
		want := tableLoss(m, f, in, r)
		if tol := 1e-12 * weightBound(in, r) * (1 + math.Abs(f)); math.Abs(got-want) > tol {
			t.Errorf("%s f=%v %+v %+v: loss %.17g, table %.17g", m, f, in, r, got, want)
		}
	})
}

func TestRowGradientFiniteDifference(t *testing.T) {
	forGrid(func(m Method, f float64, in RowInput, r Rates) {
		_, d := m.Row(f, in, r)
		num := centralDiff(func(x float64) float64 { l, _ := m.Row(x, in, r); return l }, f)
		if tol := 1e-7 * weightBound(in, r) * (1 + math.Abs(f)); math.Abs(d-num) > tol {
			t.Errorf("%s f=%v %+v %+v: dldf %.12g, numeric %.12g", m, f, in, r, d, num)
		}
	})
}

func TestRowUnobservedIsZero(t *testing.T) {
	forGrid(func(m Method, f float64, in RowInput, r Rates) {
		if in.O != 0 || m.TouchesUnobserved() {
			return
		}
		in.P = 0 // an unobserved row's propensity must not even be read
		l, d := m.Row(f, in, r)
		if l != 0 || d != 0 || math.Signbit(l) || math.Signbit(d) {
			t.Errorf("%s unobserved row gave (%v, %v)", m, l, d)
		}
	})
	// The DR methods do touch unobserved rows: the imputation term remains.
	l, d := CausalDR.Row(1, RowInput{O: 0, Y: 1, P: 0.5, G: 0.3}, Rates{0.1, 0.2})
	if l != BCE(1, 0.3) || math.Abs(d-(Sigmoid(1)-0.3)) > 1e-15 {
		t.Errorf("causalrm-dr unobserved row gave (%v, %v)", l, d)
	}
}

// population is a tiny synthetic population with selection bias: the true
// label r raises the propensity p. g is a deliberately wrong imputation.
var population = struct {
	f, p, g []float64
	r       []uint8
}{
	f: []float64{-1.2, 0.3, 2.0, -0.4, 1.1, 0.0},
	r: []uint8{0, 1, 1, 0, 1, 0},
	p: []float64{0.15, 0.9, 0.6, 0.3, 0.75, 0.25},
	g: []float64{0.8, 0.1, 0.5, 0.9, 0.2, 0.6},
}

// pY1 is P(y=1 | r) under the flip process with rates fr.
func pY1(truth uint8, fr Rates) float64 {
	if truth == 1 {
		return 1 - fr.Rho01
	}
	return fr.Rho10
}

// TestEstimatorsUnbiasedExact takes the exact expectation of every row's loss
// and gradient over o ~ Bernoulli(p) and the label flips: IPS and DR on clean
// labels, CausalRM on flipped labels, all must equal the clean l(f,r), s - r.
func TestEstimatorsUnbiasedExact(t *testing.T) {
	pop := population
	type scenario struct {
		m    Method
		flip Rates // the data's flip process; the method is given the same rates
	}
	var sc []scenario
	for _, fr := range []Rates{{0, 0}, {0.1, 0.2}, {0.2, 0.1}, {0.35, 0.25}} {
		sc = append(sc, scenario{CausalIPS, fr}, scenario{CausalDR, fr})
	}
	sc = append(sc, scenario{IPS, Rates{}}, scenario{DR, Rates{}})
	for _, s := range sc {
		for i := range pop.f {
			f, p, q := pop.f[i], pop.p[i], pY1(pop.r[i], s.flip)
			l0, d0 := s.m.Row(f, RowInput{O: 0, P: p, G: pop.g[i]}, s.flip)
			l1, d1 := s.m.Row(f, RowInput{O: 1, Y: 1, P: p, G: pop.g[i]}, s.flip)
			lz, dz := s.m.Row(f, RowInput{O: 1, Y: 0, P: p, G: pop.g[i]}, s.flip)
			el := (1-p)*l0 + p*(q*l1+(1-q)*lz)
			ed := (1-p)*d0 + p*(q*d1+(1-q)*dz)
			want := BCE(f, float64(pop.r[i]))
			wantD := 1/(1+math.Exp(-f)) - float64(pop.r[i])
			if math.Abs(el-want) > 1e-12 || math.Abs(ed-wantD) > 1e-12 {
				t.Errorf("%s flips %+v row %d: E[l]=%.15g want %.15g, E[dl]=%.15g want %.15g",
					s.m, s.flip, i, el, want, ed, wantD)
			}
		}
	}
}

// mcStat accumulates a mean and its standard error (Welford).
type mcStat struct {
	n        int
	mean, m2 float64
}

func (s *mcStat) add(x float64) {
	s.n++
	d := x - s.mean
	s.mean += d / float64(s.n)
	s.m2 += d * (x - s.mean)
}

func (s *mcStat) se() float64 { return math.Sqrt(s.m2 / float64(s.n-1) / float64(s.n)) }

// TestEstimatorsUnbiasedMonteCarlo draws whole batches the way the data is
// generated (o ~ Bernoulli(p), then flips on observed rows) and checks that
// the batch-mean loss, and a projection of the gradient, average to the clean
// full-information values within 5 standard errors. It also checks that the
// test has power: naive training, and IPS on noisy labels, are detectably
// biased on the same draws.
func TestEstimatorsUnbiasedMonteCarlo(t *testing.T) {
	const draws = 200_000
	pop := population
	n := len(pop.f)
	var risk, gradTruth float64
	for i := range pop.f {
		risk += BCE(pop.f[i], float64(pop.r[i])) / float64(n)
		gradTruth += float64(i+1) * (1/(1+math.Exp(-pop.f[i])) - float64(pop.r[i])) / float64(n)
	}
	for _, fr := range []Rates{{0, 0}, {0.2, 0.1}} {
		methods := []Method{IPS, DR, CausalIPS, CausalDR, Naive}
		loss := make([]mcStat, len(methods))
		grad := make([]mcStat, len(methods))
		rng := rand.New(rand.NewPCG(7, 11))
		in := make([]RowInput, n)
		for k := 0; k < draws; k++ {
			obs := 0
			for i := range in {
				in[i] = RowInput{P: pop.p[i], G: pop.g[i]}
				if rng.Float64() < pop.p[i] {
					in[i].O = 1
					obs++
					if rng.Float64() < pY1(pop.r[i], fr) {
						in[i].Y = 1
					} else {
						in[i].Y = 0
					}
				}
			}
			for j, m := range methods {
				norm := m.Normalizer(n, obs)
				if norm == 0 {
					continue
				}
				var l, g float64
				for i := range in {
					li, di := m.Row(pop.f[i], in[i], fr)
					l += li
					g += float64(i+1) * di
				}
				loss[j].add(l / float64(norm))
				grad[j].add(g / float64(norm))
			}
		}
		for j, m := range methods {
			zl := (loss[j].mean - risk) / loss[j].se()
			zg := (grad[j].mean - gradTruth) / grad[j].se()
			biased := m == Naive || (fr != Rates{} && !m.UsesFlipRates())
			if biased {
				if math.Abs(zl) < 10 {
					t.Errorf("flips %+v: %s should be biased but z=%.2f (mean %.5f vs %.5f)", fr, m, zl, loss[j].mean, risk)
				}
				continue
			}
			if math.Abs(zl) > 5 || math.Abs(zg) > 5 {
				t.Errorf("flips %+v: %s loss %.5f±%.5f vs %.5f (z=%.2f), grad %.5f±%.5f vs %.5f (z=%.2f)",
					fr, m, loss[j].mean, loss[j].se(), risk, zl, grad[j].mean, grad[j].se(), gradTruth, zg)
			}
		}
	}
}

package causal

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12*(1+math.Abs(b)) }

func TestMetricsHand(t *testing.T) {
	pred := []float64{0.9, 0.2, 0.6, 0.5}
	truth := []uint8{1, 0, 1, 1}
	// mean(truth) = 0.75; SS_tot = 3*0.25^2 + 0.75^2 = 0.75;
	// SS_res = 0.1^2 + 0.2^2 + 0.4^2 + 0.5^2 = 0.46; R2 = 1 - 0.46/0.75 = 29/75.
	// MAE = (0.1+0.2+0.4+0.5)/4 = 0.3; RMSE = sqrt(0.46/4).
	// Pearson: mean(pred) = 0.55, deviations t: (.25,-.75,.25,.25), p: (.35,-.35,.05,-.05);
	// sum dt*dp = 0.35, sum dt^2 = 0.75, sum dp^2 = 0.25 -> 0.35/sqrt(0.1875) = 1.4/sqrt(3).
	// AUROC: the only negative (0.2) is below every positive -> 1.
	m := Evaluate(pred, truth)
	want := Metrics{R2: 29.0 / 75, MAE: 0.3, RMSE: math.Sqrt(0.115), AUROC: 1, Pearson: 1.4 / math.Sqrt(3)}
	if !near(m.R2, want.R2) || !near(m.MAE, want.MAE) || !near(m.RMSE, want.RMSE) ||
		!near(m.AUROC, want.AUROC) || !near(m.Pearson, want.Pearson) {
		t.Errorf("Evaluate = %+v, want %+v", m, want)
	}
}

func TestR2Degenerate(t *testing.T) {
	if got := R2([]float64{1, 1, 1}, []float64{1, 1, 1}); got != 1 {
		t.Errorf("exact constant R2 = %v, want 1", got)
	}
	if got := R2([]float64{1, 0.5, 1}, []float64{1, 1, 1}); got != 0 {
		t.Errorf("inexact constant R2 = %v, want 0", got)
	}
	if got := R2([]float64{0.5}, []float64{1}); !math.IsNaN(got) {
		t.Errorf("one-sample R2 = %v, want NaN", got)
	}
	// Predicting the mean gives 0; a worse prediction is negative.
	if got := R2([]float64{0.5, 0.5}, []float64{0, 1}); got != 0 {
		t.Errorf("mean-prediction R2 = %v", got)
	}
	if got := R2([]float64{1, 0}, []float64{0, 1}); got != -3 { // 1 - 2/0.5
		t.Errorf("inverted R2 = %v, want -3", got)
	}
}

func TestAUROCTies(t *testing.T) {
	// Positives score 0.4, 0.8, 0.4; negatives 0.1, 0.4. Over the 6 (pos,neg)
	// pairs: 0.4 vs 0.1 wins (1), 0.4 vs 0.4 ties (1/2), twice; 0.8 wins both.
	// Total 1 + 1/2 + 1 + 1/2 + 2 = 5, so AUROC = 5/6.
	pred := []float64{0.1, 0.4, 0.4, 0.8, 0.4}
	truth := []uint8{0, 0, 1, 1, 1}
	if got := AUROC(pred, truth); !near(got, 5.0/6) {
		t.Errorf("AUROC = %v, want 5/6", got)
	}
	// All tied: every pair is one half.
	if got := AUROC([]float64{0.3, 0.3, 0.3}, []uint8{1, 0, 1}); got != 0.5 {
		t.Errorf("all-tied AUROC = %v", got)
	}
	if got := AUROC([]float64{0.1, 0.9}, []uint8{1, 1}); !math.IsNaN(got) {
		t.Errorf("one-class AUROC = %v, want NaN", got)
	}
}

// TestAUROCBruteForce compares with direct O(n^2) pair counting.
func TestAUROCBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for trial := 0; trial < 200; trial++ {
		n := 2 + rng.IntN(60)
		pred := make([]float64, n)
		truth := make([]uint8, n)
		for i := range pred {
			pred[i] = math.Round(rng.Float64()*10) / 10 // many ties
			if rng.Float64() < 0.4 {
				truth[i] = 1
			}
		}
		var wins, pairs float64
		for i := range pred {
			for j := range pred {
				if truth[i] == 1 && truth[j] == 0 {
					pairs++
					if pred[i] > pred[j] {
						wins++
					} else if pred[i] == pred[j] {
						wins += 0.5
					}
				}
			}
		}
		got := AUROC(pred, truth)
		if pairs == 0 {
			if !math.IsNaN(got) {
				t.Fatalf("one-class AUROC = %v", got)
			}
			continue
		}
		if !near(got, wins/pairs) {
			t.Fatalf("AUROC = %v, brute force %v", got, wins/pairs)
		}
	}
}

func TestPearsonKnown(t *testing.T) {
	// x = 1..5, y = 2,4,5,4,5: dx = -2..2, dy = -2,0,1,0,1; sxy = 6, sxx = 10,
	// syy = 6, so r = 6/sqrt(60) = sqrt(0.6).
	if got := Pearson([]float64{1, 2, 3, 4, 5}, []float64{2, 4, 5, 4, 5}); !near(got, math.Sqrt(0.6)) {
		t.Errorf("Pearson = %v, want sqrt(0.6)", got)
	}
	if got := Pearson([]float64{1, 2, 3}, []float64{6, 4, 2}); !near(got, -1) {
		t.Errorf("Pearson perfect negative = %v", got)
	}
	if got := Pearson([]float64{1, 2, 3}, []float64{2, 2, 2}); !math.IsNaN(got) {
		t.Errorf("Pearson with constant = %v, want NaN", got)
	}
}

func TestMeanStd(t *testing.T) {
	// mean 5, squared deviations sum to 32, sample std sqrt(32/7).
	m, s := MeanStd([]float64{2, 4, 4, 4, 5, 5, 7, 9})
	if !near(m, 5) || !near(s, math.Sqrt(32.0/7)) {
		t.Errorf("MeanStd = %v, %v", m, s)
	}
	if m, s := MeanStd([]float64{3}); m != 3 || s != 0 {
		t.Errorf("MeanStd single = %v, %v", m, s)
	}
}

func TestMetricsJSON(t *testing.T) {
	m := Metrics{R2: 0.5, MAE: 0.25, RMSE: 0.3, AUROC: math.NaN(), Pearson: 0.7}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, k := range []string{`"r2":0.5`, `"mae":0.25`, `"rmse":0.3`, `"auroc":null`, `"pearson":0.7`} {
		if !strings.Contains(s, k) {
			t.Errorf("JSON %s lacks %s", s, k)
		}
	}
	var back Metrics
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.R2 != 0.5 || back.Pearson != 0.7 || !math.IsNaN(back.AUROC) {
		t.Errorf("round trip gave %+v", back)
	}
}

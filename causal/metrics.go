package causal

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
)

// Metrics are the test-set metrics of section 5 for a prediction s in [0,1]
// against the clean binary truth r.
type Metrics struct {
	R2      float64 `json:"r2"`
	MAE     float64 `json:"mae"`
	RMSE    float64 `json:"rmse"`
	AUROC   float64 `json:"auroc"`
	Pearson float64 `json:"pearson"`
}

// metricsJSON carries undefined (NaN or infinite) metrics as null, because
// encoding/json refuses NaN and a one-class test set makes AUROC undefined.
type metricsJSON struct {
	R2      *float64 `json:"r2"`
	MAE     *float64 `json:"mae"`
	RMSE    *float64 `json:"rmse"`
	AUROC   *float64 `json:"auroc"`
	Pearson *float64 `json:"pearson"`
}

func finitePtr(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return &x
}

func fromPtr(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

// MarshalJSON writes undefined metrics as null.
func (m Metrics) MarshalJSON() ([]byte, error) {
	return json.Marshal(metricsJSON{finitePtr(m.R2), finitePtr(m.MAE),
		finitePtr(m.RMSE), finitePtr(m.AUROC), finitePtr(m.Pearson)})
}

// UnmarshalJSON reads null (or a missing field) back as NaN.
func (m *Metrics) UnmarshalJSON(b []byte) error {
	var j metricsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*m = Metrics{fromPtr(j.R2), fromPtr(j.MAE), fromPtr(j.RMSE),
		fromPtr(j.AUROC), fromPtr(j.Pearson)}
	return nil
}

func checkLen(a, b int) {
	if a != b {
		panic(fmt.Sprintf("causal: metric inputs differ in length (%d vs %d)", a, b))
	}
}

// Evaluate computes all metrics of pred against the binary truth (0/1).
// Undefined metrics (e.g. AUROC with one class) are NaN.
func Evaluate(pred []float64, truth []uint8) Metrics {
	checkLen(len(pred), len(truth))
	t := make([]float64, len(truth))
	for i, v := range truth {
		t[i] = float64(v)
	}
	return Metrics{
		R2:      R2(pred, t),
		MAE:     MAE(pred, t),
		RMSE:    RMSE(pred, t),
		AUROC:   AUROC(pred, truth),
		Pearson: Pearson(pred, t),
	}
}

// R2 is sklearn's r2_score(truth, pred) = 1 - SS_res/SS_tot (note the argument
// order: prediction first, as everywhere in this file). As sklearn does, a
// constant truth gives 1 if the prediction is exact and 0 otherwise, and fewer
// than two samples give NaN.
func R2(pred, truth []float64) float64 {
	checkLen(len(pred), len(truth))
	if len(truth) < 2 {
		return math.NaN()
	}
	mean, _ := MeanStd(truth)
	var res, tot float64
	for i, t := range truth {
		d := t - pred[i]
		res += d * d
		c := t - mean
		tot += c * c
	}
	if tot == 0 {
		if res == 0 {
			return 1
		}
		return 0
	}
	return 1 - res/tot
}

// MAE is the mean absolute error (NaN for no samples).
func MAE(pred, truth []float64) float64 {
	checkLen(len(pred), len(truth))
	var s float64
	for i, t := range truth {
		s += math.Abs(pred[i] - t)
	}
	return s / float64(len(truth))
}

// RMSE is the root mean squared error (NaN for no samples).
func RMSE(pred, truth []float64) float64 {
	checkLen(len(pred), len(truth))
	var s float64
	for i, t := range truth {
		d := pred[i] - t
		s += d * d
	}
	return math.Sqrt(s / float64(len(truth)))
}

// AUROC is the area under the ROC curve of pred for the positive class
// (truth != 0), computed as the Mann-Whitney statistic from average ranks so
// that tied predictions count one half, in O(n log n). It is NaN when truth
// holds only one class.
func AUROC(pred []float64, truth []uint8) float64 {
	checkLen(len(pred), len(truth))
	n := len(pred)
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(i, j int) int {
		switch {
		case pred[i] < pred[j]:
			return -1
		case pred[i] > pred[j]:
			return 1
		}
		return 0
	})
	var nPos, rankSum float64
	for i := 0; i < n; {
		j := i + 1
		for j < n && pred[idx[j]] == pred[idx[i]] {
			j++
		}
		// Positions i..j-1 share the average 1-based rank (i+1 + j)/2.
		avg := float64(i+1+j) / 2
		for k := i; k < j; k++ {
			if truth[idx[k]] != 0 {
				nPos++
				rankSum += avg
			}
		}
		i = j
	}
	nNeg := float64(n) - nPos
	if nPos == 0 || nNeg == 0 {
		return math.NaN()
	}
	return (rankSum - nPos*(nPos+1)/2) / (nPos * nNeg)
}

// Pearson is the sample correlation of x and y, NaN when either is constant
// (or fewer than two samples), clamped to [-1,1] against rounding.
func Pearson(x, y []float64) float64 {
	checkLen(len(x), len(y))
	if len(x) < 2 {
		return math.NaN()
	}
	mx, _ := MeanStd(x)
	my, _ := MeanStd(y)
	var sxy, sxx, syy float64
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return math.NaN()
	}
	return math.Max(-1, math.Min(1, sxy/math.Sqrt(sxx*syy)))
}

// MeanStd returns the mean and the sample standard deviation (n-1 divisor,
// as reported across seeds); the std is 0 for fewer than two values and the
// mean NaN for none.
func MeanStd(xs []float64) (mean, std float64) {
	n := float64(len(xs))
	if len(xs) == 0 {
		return math.NaN(), 0
	}
	for _, x := range xs {
		mean += x
	}
	mean /= n
	if len(xs) < 2 {
		return mean, 0
	}
	var ss float64
	for _, x := range xs {
		d := x - mean
		ss += d * d
	}
	return mean, math.Sqrt(ss / (n - 1))
}

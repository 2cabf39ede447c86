package trainer

import (
	"fmt"
	"math"
	"slices"

	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/shard"
)

// Warning is a condition of the data or of training that makes a run's
// result suspect without stopping it. The CLI prints warnings on stderr and
// records them in metrics.json and report.md.
type Warning struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// Warning kinds.
const (
	// WarnColumnScale: a feature column's largest magnitude dwarfs the
	// other columns'.
	WarnColumnScale = "column_scale"
	// WarnOneClass: every observed training label is the same.
	WarnOneClass = "one_class"
	// WarnConstantEmbeddings: every embedding is the same (or zero).
	WarnConstantEmbeddings = "constant_embeddings"
	// WarnNegativeValidation: a stage's validation estimate went below 0.
	WarnNegativeValidation = "negative_validation"
	// WarnNegativeTraining: a stage's training loss went below 0.
	WarnNegativeTraining = "negative_training"
	// WarnDiverged: a stage's training loss rose far above its lowest.
	WarnDiverged = "diverged"
	// WarnEarlyBest: a stage's best epoch was one of its first few, and
	// every later epoch was worse.
	WarnEarlyBest = "early_best"
)

// DivergenceRatio is how many times its lowest value a stage's last
// training loss must reach to be warned about as diverged.
const DivergenceRatio = 2

// EarlyBestEpochs and EarlyBestRan: a stage whose best epoch is at most
// EarlyBestEpochs after running at least EarlyBestRan epochs is warned
// about.
const (
	EarlyBestEpochs = 2
	EarlyBestRan    = 10
)

// ColumnScaleRatio is how many times the median of the other columns'
// largest magnitudes a column's must reach to be warned about: 2^10, so
// that values of the other columns' size keep fewer than 2^(nn.XBits-10) =
// 32 steps of the column's grid.
const ColumnScaleRatio = 1 << 10

// maxColumnWarnings is how many columns are named one by one; the rest are
// counted in one more warning.
const maxColumnWarnings = 5

// DataWarnings checks a dataset before training: the scale of each feature
// column (from maxAbs, each column's largest magnitude over every loaded
// row, as the grid is made; nil: computed here), constant embeddings and a
// single class among the observed training labels. It reads the embeddings
// as loaded, before they are put on the grid. A split that holds only some
// rows' embeddings (a worker of a static ring) is left out of the
// embedding checks, which need every row.
func DataWarnings(ds *shard.Dataset, maxAbs []float64) []Warning {
	if ds == nil || ds.Train == nil {
		return nil
	}
	d := ds.Train.D
	var xs, xsTV [][]float32
	partial := false
	for i, s := range []*shard.Split{ds.Train, ds.Val, ds.Test} {
		if s == nil {
			continue
		}
		if s.XIndex != nil {
			partial = true
			continue
		}
		xs = append(xs, s.X)
		if i < 2 {
			xsTV = append(xsTV, s.X)
		}
	}
	var out []Warning
	if !partial && d > 0 {
		if maxAbs == nil {
			maxAbs = nn.ColumnMaxAbs(d, xs...)
		}
		out = append(out, ColumnScaleWarnings(d, maxAbs, xs...)...)
		out = append(out, ConstantEmbeddingWarnings(d, xsTV...)...)
	}
	out = append(out, OneClassWarnings(ds.Train)...)
	return out
}

// ColumnScaleWarnings names the columns whose largest magnitude (maxAbs)
// is at least ColumnScaleRatio times the median of the other columns' (of
// those not all zero, so that sparse features do not count as small). Each such column's grid (nn.XBits bits up to its largest
// magnitude) is so coarse that its smaller values round to 0; xs (row-major,
// d columns) are scanned to say how many do.
func ColumnScaleWarnings(d int, maxAbs []float64, xs ...[]float32) []Warning {
	var nz []float64
	for _, m := range maxAbs {
		if m > 0 && !math.IsInf(m, 0) && !math.IsNaN(m) {
			nz = append(nz, m)
		}
	}
	if len(nz) < 2 {
		return nil
	}
	slices.Sort(nz)
	// otherMedian is the median of nz without one element equal to v.
	otherMedian := func(v float64) float64 {
		k, _ := slices.BinarySearch(nz, v)
		at := func(i int) float64 {
			if i < k {
				return nz[i]
			}
			return nz[i+1]
		}
		m := len(nz) - 1
		if m%2 == 1 {
			return at(m / 2)
		}
		return (at(m/2-1) + at(m/2)) / 2
	}
	var cols []int
	med := map[int]float64{}
	for j, m := range maxAbs {
		if !(m > 0) || math.IsInf(m, 0) {
			continue
		}
		if o := otherMedian(m); m >= ColumnScaleRatio*o {
			cols = append(cols, j)
			med[j] = o
		}
	}
	if len(cols) == 0 {
		return nil
	}
	// Count, in each flagged column, the non-zero values its grid rounds to 0.
	half := make(map[int]float64, len(cols))
	for _, j := range cols {
		half[j] = math.Ldexp(1, nn.GridExp(maxAbs[j], nn.XBits)) / 2
	}
	zeroed := make(map[int]int, len(cols))
	nonzero := make(map[int]int, len(cols))
	for _, x := range xs {
		for i := 0; i+d <= len(x); i += d {
			for _, j := range cols {
				v := math.Abs(float64(x[i+j]))
				if v == 0 {
					continue
				}
				nonzero[j]++
				if v <= half[j] { // rint rounds the half-way case to even: 0
					zeroed[j]++
				}
			}
		}
	}
	var out []Warning
	for k, j := range cols {
		if k == maxColumnWarnings {
			out = append(out, Warning{Kind: WarnColumnScale, Message: fmt.Sprintf(
				"%d more columns have a max |x| at least %d times the median of the other columns': %v",
				len(cols)-k, ColumnScaleRatio, cols[k:min(len(cols), k+20)])})
			break
		}
		step := 2 * half[j]
		msg := fmt.Sprintf("feature column %d: max |x| is %.4g, %.3g times the median of the other columns' max |x| (%.4g). "+
			"Exact mode puts each column on its own grid of 2^%d steps up to its max |x|, here a step of %.3g: "+
			"every value of this column below %.3g in magnitude rounds to 0",
			j, maxAbs[j], maxAbs[j]/med[j], med[j], nn.XBits, step, step/2)
		if n := nonzero[j]; n > 0 {
			msg += fmt.Sprintf(" (%d of its %d non-zero values, %.4g%%)", zeroed[j], n, 100*float64(zeroed[j])/float64(n))
		}
		msg += ", so the column carries little besides its largest values, which dwarf every other input of the model: " +
			"training may give a constant predictor. Clip the outliers or rescale the column."
		out = append(out, Warning{Kind: WarnColumnScale, Message: msg})
	}
	return out
}

// ConstantEmbeddingWarnings warns when every row of xs (row-major, d
// columns; the train and val embeddings) is the same: no model can then
// tell the rows apart, and every stage learns a constant.
func ConstantEmbeddingWarnings(d int, xs ...[]float32) []Warning {
	var first []float32
	rows := 0
	for _, x := range xs {
		for i := 0; i+d <= len(x); i += d {
			row := x[i : i+d]
			if first == nil {
				first = row
			} else if !slices.Equal(row, first) {
				return nil
			}
			rows++
		}
	}
	if rows < 2 {
		return nil
	}
	what := "identical"
	if !slices.ContainsFunc(first, func(v float32) bool { return v != 0 }) {
		what = "all zero"
	}
	return []Warning{{Kind: WarnConstantEmbeddings, Message: fmt.Sprintf(
		"every one of the %d train and val embeddings is %s: no model can tell the rows apart, so every stage "+
			"learns a constant and the reward model scores every input the same. Check the embedding column of the data.",
		rows, what)}}
}

// OneClassWarnings warns when every observed label of the training split
// is the same: the label models and the reward model see one class only.
func OneClassWarnings(train *shard.Split) []Warning {
	if train == nil {
		return nil
	}
	var n [2]int
	for i, o := range train.O {
		if o == 1 && i < len(train.Y) {
			n[min(train.Y[i], 1)]++
		}
	}
	if n[0]+n[1] == 0 || (n[0] > 0 && n[1] > 0) {
		return nil
	}
	y, other := 1, 0
	if n[0] > 0 {
		y, other = 0, 1
	}
	return []Warning{{Kind: WarnOneClass, Message: fmt.Sprintf(
		"all %d observed training labels are y = %d (none is %d): the noise, imputation and reward models see "+
			"one class only, the flip-rate estimate is meaningless, and the reward model learns to predict %d everywhere.",
		n[y], y, other, y)}}
}

// StageWarnings checks a trained stage: a validation estimate or training
// loss below zero (possible only for the plain risk of the noise-corrected
// and doubly robust estimators, which is unbiased but unbounded below: a
// lower value need not mean a better model), a training loss that rose
// far above its lowest (divergence), and a best epoch among the first few
// of many (nothing learnt after it).
func StageWarnings(res *StageResult) []Warning {
	if res == nil {
		return nil
	}
	var out []Warning
	if w, ok := negativeWarning(res, res.Val, WarnNegativeValidation, "validation estimate"); ok {
		out = append(out, w)
	}
	if w, ok := negativeWarning(res, res.Train, WarnNegativeTraining, "training loss"); ok {
		out = append(out, w)
	}
	if n := len(res.Train); n > 1 {
		low, lowAt := res.Train[0], 0
		for i, v := range res.Train {
			if v < low {
				low, lowAt = v, i
			}
		}
		if last := res.Train[n-1]; low > 0 && last > DivergenceRatio*low {
			out = append(out, Warning{Kind: WarnDiverged, Message: fmt.Sprintf(
				"stage %s: the training loss diverged: %.5g at the last epoch (%d), more than %d times its lowest %.5g (epoch %d); "+
					"lower --lr.", res.Name, last, n, DivergenceRatio, low, lowAt+1)})
		}
	}
	if res.Epochs >= EarlyBestRan && res.BestEpoch >= 1 && res.BestEpoch <= EarlyBestEpochs {
		out = append(out, Warning{Kind: WarnEarlyBest, Message: fmt.Sprintf(
			"stage %s: the best epoch was epoch %d of %d: every later epoch was worse on the monitored loss, so the "+
				"saved model learnt little; lower --lr, or check the data.", res.Name, res.BestEpoch, res.Epochs)})
	}
	return out
}

// negativeWarning warns about a per-epoch series that went below zero.
func negativeWarning(res *StageResult, series []float64, kind, what string) (Warning, bool) {
	first := -1
	low, lowAt := 0.0, 0
	for i, v := range series {
		if !(v < 0) { // NaN too
			continue
		}
		if first < 0 {
			first = i
		}
		if v < low {
			low, lowAt = v, i
		}
	}
	if first < 0 {
		return Warning{}, false
	}
	return Warning{Kind: kind, Message: fmt.Sprintf(
		"stage %s: the %s went negative (%.5g at epoch %d; lowest %.5g at epoch %d). "+
			"The plain risk is unbounded below, so a lower value need not mean a better model; epochs below zero are "+
			"not kept as the best. The default risk (--risk nonnegative) does not go below zero.",
		res.Name, what, series[first], first+1, low, lowAt+1)}, true
}

package report

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// CompareRow is one method's test metrics, one map per seed (in the order of
// the seeds passed to WriteCompare).
type CompareRow struct {
	Method  string
	PerSeed []map[string]float64
}

// CompareFile and CompareBarsFile are the outputs of WriteCompare.
const (
	CompareFile     = "compare.md"
	CompareBarsFile = "compare.png"
)

// MeanStd returns the mean and the sample standard deviation (n-1 denominator,
// as numpy's std(ddof=1) and most papers' "± std" over seeds) of the finite
// values; std is NaN with fewer than two, mean is NaN with none.
func MeanStd(vals []float64) (mean, std float64) {
	n, sum := 0, 0.0
	for _, v := range vals {
		if finite(v) {
			n++
			sum += v
		}
	}
	if n == 0 {
		return math.NaN(), math.NaN()
	}
	mean = sum / float64(n)
	if n < 2 {
		return mean, math.NaN()
	}
	ss := 0.0
	for _, v := range vals {
		if finite(v) {
			ss += (v - mean) * (v - mean)
		}
	}
	return mean, math.Sqrt(ss / float64(n-1))
}

// metricMeanStd gathers one metric of a row across seeds.
func metricMeanStd(r CompareRow, metric string) (mean, std float64) {
	vals := make([]float64, 0, len(r.PerSeed))
	for _, m := range r.PerSeed {
		if v, ok := m[metric]; ok {
			vals = append(vals, v)
		}
	}
	return MeanStd(vals)
}

// FormatCompareTable renders the paper-style table: one row per method, the
// columns R², MAE, RMSE, AUROC and Pearson as "mean ± std" over seeds (mean
// alone for a single seed, "–" when missing), three decimals. The best mean of
// each column is bold (highest, or lowest for MAE and RMSE), ties included.
func FormatCompareTable(rows []CompareRow) string {
	type cell struct{ mean, std float64 }
	cells := make([][]cell, len(rows))
	best := make([]float64, len(metricOrder))
	for j := range best {
		best[j] = math.NaN()
	}
	for i, r := range rows {
		cells[i] = make([]cell, len(metricOrder))
		for j, m := range metricOrder {
			mean, std := metricMeanStd(r, m)
			cells[i][j] = cell{mean, std}
			if !finite(mean) {
				continue
			}
			if math.IsNaN(best[j]) || higherIsBetter[m] && mean > best[j] || !higherIsBetter[m] && mean < best[j] {
				best[j] = mean
			}
		}
	}
	var b strings.Builder
	b.WriteString("| method |")
	for _, m := range metricOrder {
		b.WriteString(" " + label(m) + " |")
	}
	b.WriteString("\n|---|")
	b.WriteString(strings.Repeat("---|", len(metricOrder)))
	b.WriteString("\n")
	for i, r := range rows {
		fmt.Fprintf(&b, "| %s |", r.Method)
		for j := range metricOrder {
			c := cells[i][j]
			var s string
			switch {
			case !finite(c.mean):
				s = "–"
			case !finite(c.std):
				s = fmt.Sprintf("%.3f", c.mean)
			default:
				s = fmt.Sprintf("%.3f ± %.3f", c.mean, c.std)
			}
			// Compare at the printed precision so visibly equal means are all bold.
			if finite(c.mean) && len(rows) > 1 && fmt.Sprintf("%.3f", c.mean) == fmt.Sprintf("%.3f", best[j]) {
				s = "**" + s + "**"
			}
			b.WriteString(" " + s + " |")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// WriteCompare writes compare.md (the table plus context) and compare.png (a
// grouped bar chart of mean R² and AUROC per method) into dir, atomically, the
// plot first so the markdown never links a missing file.
func WriteCompare(dir string, rows []CompareRow, seeds []uint64) error {
	if len(rows) == 0 {
		return errors.New("report: no methods to compare")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	methods := make([]string, len(rows))
	r2 := make([]float64, len(rows))
	auroc := make([]float64, len(rows))
	for i, r := range rows {
		methods[i] = r.Method
		r2[i], _ = metricMeanStd(r, "r2")
		auroc[i], _ = metricMeanStd(r, "auroc")
	}
	png, err := compareBarsPNG(methods, r2, auroc)
	if err != nil {
		return fmt.Errorf("report: comparison plot: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, CompareBarsFile), png); err != nil {
		return err
	}

	var b strings.Builder
	b.WriteString("# Method comparison on the clean test set\n\n")
	seedStr := make([]string, len(seeds))
	for i, s := range seeds {
		seedStr[i] = fmt.Sprint(s)
	}
	fmt.Fprintf(&b, "Seeds (%d): %s. Cells are mean ± sample standard deviation over seeds; bold marks the best mean per column.\n\n",
		len(seeds), strings.Join(seedStr, ", "))
	b.WriteString(FormatCompareTable(rows))
	b.WriteString("\n")
	for _, r := range rows {
		if len(r.PerSeed) != len(seeds) {
			fmt.Fprintf(&b, "Note: %s has results for %d of %d seeds.\n\n", r.Method, len(r.PerSeed), len(seeds))
		}
	}
	fmt.Fprintf(&b, "![mean test R² and AUROC per method](%s)\n", CompareBarsFile)
	return writeFileAtomic(filepath.Join(dir, CompareFile), []byte(b.String()))
}

package report

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
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

// Comparison is what compare.md shows: the rows of the table and the
// context a reader needs to trust it.
type Comparison struct {
	Rows  []CompareRow
	Seeds []uint64
	// Data are the splits, in train, val, test order (nil: not recorded).
	Data []Split
	// Settings are the settings every method shared; JobFile and
	// JSONFile name the files beside compare.md with all settings and
	// with the raw numbers ("": none).
	Settings  []Setting
	JobFile   string
	JSONFile  string
	FlipRates []SeedRates // per seed, in seed order; nil: no method used them
	TrueRates *FlipRates  // known rates (semi-synthetic data); nil when unknown
}

// SeedRates are the flip rates of one seed and where they came from
// (RatesGiven or RatesEstimated).
type SeedRates struct {
	Seed   uint64
	Rates  FlipRates
	Source string
	// Interval is the 95% interval of cross-fitted estimated rates; nil
	// for given rates and the anchor estimator.
	Interval *FlipInterval
}

// WriteCompare writes compare.md (the table plus context) and compare.png
// (test R² and AUROC per method, mean and std over seeds) into dir,
// atomically, the plot first so the markdown never links a missing file.
func WriteCompare(dir string, c *Comparison) error {
	if c == nil || len(c.Rows) == 0 {
		return errors.New("report: no methods to compare")
	}
	rows, seeds := c.Rows, c.Seeds
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	methods := make([]string, len(rows))
	r2, r2std := make([]float64, len(rows)), make([]float64, len(rows))
	auroc, aurocStd := make([]float64, len(rows)), make([]float64, len(rows))
	for i, r := range rows {
		methods[i] = r.Method
		r2[i], r2std[i] = metricMeanStd(r, "r2")
		auroc[i], aurocStd[i] = metricMeanStd(r, "auroc")
	}
	png, err := compareMetricsPNG(methods, r2, r2std, auroc, aurocStd, len(seeds))
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
	b.WriteString("Every method was trained on the same data with the same settings, once per seed; per seed, the auxiliary stages (propensity, noise, imputation) were trained once and shared by the methods.\n\n")
	fmt.Fprintf(&b, "- Methods (%d): %s\n", len(methods), strings.Join(methods, ", "))
	fmt.Fprintf(&b, "- Seeds (%d): %s\n", len(seeds), strings.Join(seedStr, ", "))
	var files []string
	for _, s := range c.Data {
		if s.File != "" && !slices.Contains(files, "`"+s.File+"`") {
			files = append(files, "`"+s.File+"`")
		}
	}
	if len(files) > 0 {
		fmt.Fprintf(&b, "- Data: %s\n", strings.Join(files, ", "))
	}
	if c.JSONFile != "" {
		fmt.Fprintf(&b, "- Every seed's numbers: [%s](%s)\n", c.JSONFile, c.JSONFile)
	}
	b.WriteString("\n## Test metrics\n\n")
	b.WriteString("Cells are mean ± sample standard deviation over the seeds (the mean alone for one seed); bold marks the best mean per column.\n\n")
	b.WriteString(FormatCompareTable(rows))
	b.WriteString("\n")
	for _, r := range rows {
		if len(r.PerSeed) != len(seeds) {
			fmt.Fprintf(&b, "Note: %s has results for %d of %d seeds.\n\n", r.Method, len(r.PerSeed), len(seeds))
		}
	}
	b.WriteString("What each metric measures, on the clean test split, the reward sigmoid(f(x)) against each row's true label r:\n\n")
	b.WriteString("| metric | better | what it measures |\n|---|---|---|\n")
	for _, k := range metricOrder {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", label(k), better(k), metricMeaning[k])
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "![test R² and AUROC per method, mean and standard deviation over seeds](%s)\n\n", CompareBarsFile)
	b.WriteString("In the plot each dot is a method's mean over the seeds and its bar ± one standard deviation; the dashed lines mark R² 0 (predicting the mean) and AUROC 0.5 (chance).\n\n")

	writeDataAndSettings(&b, c.Data, c.Settings, c.JobFile)

	b.WriteString("## Label flip rates per seed\n\n")
	b.WriteString("rho01 = P(y = 0 given r = 1) and rho10 = P(y = 1 given r = 0), as the noise-aware methods (noise, causalrm-ips, causalrm-dr) used them.\n\n")
	if len(c.FlipRates) == 0 && c.TrueRates == nil {
		b.WriteString("Not used: none of these methods models label noise.\n\n")
	} else {
		b.WriteString("| seed | rates | rho01 | rho10 |\n|---|---|---|---|\n")
		var notes []string
		for _, r := range c.FlipRates {
			src := ratesSourceLabel(r.Source)
			note := ratesSourceNote(r.Source)
			rho01, rho10 := fmtNum(r.Rates.Rho01), fmtNum(r.Rates.Rho10)
			if iv := r.Interval; iv != nil && r.Source != RatesGiven {
				rho01 += fmt.Sprintf(" (95%% interval %s–%s)", fmtNum(iv.Lo.Rho01), fmtNum(iv.Hi.Rho01))
				rho10 += fmt.Sprintf(" (95%% interval %s–%s)", fmtNum(iv.Lo.Rho10), fmtNum(iv.Hi.Rho10))
				note = crossFitNote
			}
			fmt.Fprintf(&b, "| %d | %s | %s | %s |\n", r.Seed, src, rho01, rho10)
			if !slices.Contains(notes, note) {
				notes = append(notes, note)
			}
		}
		if len(c.FlipRates) == 0 {
			b.WriteString("| – | not used | – | – |\n")
		}
		if c.TrueRates != nil {
			fmt.Fprintf(&b, "| every seed | true | %s | %s |\n", fmtNum(c.TrueRates.Rho01), fmtNum(c.TrueRates.Rho10))
		}
		b.WriteString("\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s.\n", n)
		}
		if c.TrueRates != nil {
			fmt.Fprintf(&b, "- %s.\n", trueRatesNote)
		}
		b.WriteString("\n")
	}
	return writeFileAtomic(filepath.Join(dir, CompareFile), []byte(b.String()))
}

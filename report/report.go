// Package report writes the human-readable account of a training run: a
// report.md with the numbers a reader checks first (test metrics, flip rates,
// propensity quality, observed share, epochs) and PNG plots it embeds, plus a
// compare.md across methods and seeds. Every file is written to a temporary
// name and renamed into place, so a crash never leaves a half-written report.
package report

import (
	"errors"
	"fmt"
	"github.com/causalrm/causalrm/internal/atomicfile"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Curve is the loss history of one training stage (propensity, noise,
// imputation, reward). Val may be empty or hold NaN where not measured.
type Curve struct {
	Stage  string
	Epochs []int
	Train  []float64
	Val    []float64
}

// FlipRates are class-conditional label flip rates: Rho01 = P(y=0|r=1),
// Rho10 = P(y=1|r=0).
type FlipRates struct {
	Rho01, Rho10 float64
}

// CalibBin is one decile of predicted propensity: the mean prediction, the
// observed rate of o = 1 among its rows, and its row count.
type CalibBin struct {
	MeanPred float64
	ObsRate  float64
	N        int
}

// Run is everything the report of one training run shows.
type Run struct {
	Method           string
	Seed             uint64
	Curves           []Curve
	FlipRates        *FlipRates // estimated; nil when the method does not estimate them
	TrueRates        *FlipRates // known rates (semi-synthetic data); nil when unknown
	PropensityValMSE float64    // NaN when the propensity stage was skipped
	PropensityCalib  []CalibBin
	ObservedShare    float64
	StageEpochs      map[string]int
	Test             map[string]float64 // metric name (r2, mae, rmse, auroc, pearson, ...) -> value
	Notes            []string
	// Warnings are the run's degenerate conditions (data or training),
	// shown first.
	Warnings []Warning
	Elapsed  time.Duration
}

// Warning is one warning of a run: its kind and what it means.
type Warning struct {
	Kind    string
	Message string
}

// Metric keys in the order the paper's tables use, with their display names.
var metricOrder = []string{"r2", "mae", "rmse", "auroc", "pearson"}

var metricLabel = map[string]string{
	"r2": "R²", "mae": "MAE", "rmse": "RMSE", "auroc": "AUROC", "pearson": "Pearson",
}

// higherIsBetter says which way "best" points when bolding a comparison.
var higherIsBetter = map[string]bool{"r2": true, "auroc": true, "pearson": true}

func label(metric string) string {
	if l, ok := metricLabel[metric]; ok {
		return l
	}
	return metric
}

// CalibrationFile is the name of the propensity calibration plot.
const CalibrationFile = "propensity_calibration.png"

// CurveFile is the file name of a stage's curve plot: curve_<stage>.png with
// the stage name reduced to [a-z0-9_-] so it is safe in any file system and in
// a markdown link.
func CurveFile(stage string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(stage) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		b.WriteString("stage")
	}
	return "curve_" + b.String() + ".png"
}

// Write renders run into dir (created if needed): one curve PNG per stage with
// data points, the calibration PNG when bins exist, then report.md last so it
// never links a plot that is not there yet.
func Write(dir string, run *Run) error {
	if run == nil {
		return errors.New("report: nil run")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	curveFiles := make([]string, len(run.Curves)) // "" when the curve had nothing to plot
	used := map[string]bool{}
	for i, c := range run.Curves {
		name := CurveFile(c.Stage)
		for k := 2; used[name]; k++ {
			name = strings.TrimSuffix(CurveFile(c.Stage), ".png") + fmt.Sprintf("_%d.png", k)
		}
		png, err := curvePNG(c)
		if err != nil {
			return fmt.Errorf("report: plot of stage %q: %w", c.Stage, err)
		}
		if png == nil {
			continue
		}
		used[name] = true
		if err := writeFileAtomic(filepath.Join(dir, name), png); err != nil {
			return err
		}
		curveFiles[i] = name
	}
	calib := ""
	if len(run.PropensityCalib) > 0 {
		png, err := calibrationPNG(run.PropensityCalib)
		if err != nil {
			return fmt.Errorf("report: calibration plot: %w", err)
		}
		if png != nil {
			if err := writeFileAtomic(filepath.Join(dir, CalibrationFile), png); err != nil {
				return err
			}
			calib = CalibrationFile
		}
	}
	md := renderRun(run, curveFiles, calib)
	return writeFileAtomic(filepath.Join(dir, "report.md"), []byte(md))
}

func fmtNum(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.4f", v)
}

func renderRun(run *Run, curveFiles []string, calib string) string {
	var b strings.Builder
	title := run.Method
	if title == "" {
		title = "(unnamed method)"
	}
	fmt.Fprintf(&b, "# Training report: %s\n\n", title)
	fmt.Fprintf(&b, "- Seed: %d\n", run.Seed)
	fmt.Fprintf(&b, "- Elapsed: %s\n", run.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "- Observed share of rows (o = 1): %.2f%%\n\n", 100*run.ObservedShare)

	if len(run.Warnings) > 0 {
		b.WriteString("## Warnings\n\n")
		for _, w := range run.Warnings {
			fmt.Fprintf(&b, "- **%s**: %s\n", w.Kind, strings.ReplaceAll(w.Message, "\n", " "))
		}
		b.WriteString("\n")
	}

	b.WriteString("## Test metrics\n\n")
	if len(run.Test) == 0 {
		b.WriteString("No test metrics were recorded.\n\n")
	} else {
		b.WriteString("| metric | value |\n|---|---|\n")
		for _, k := range orderedKeys(run.Test) {
			fmt.Fprintf(&b, "| %s | %s |\n", label(k), fmtNum(run.Test[k]))
		}
		b.WriteString("\n")
	}

	b.WriteString("## Label flip rates\n\n")
	if run.FlipRates == nil && run.TrueRates == nil {
		b.WriteString("Not estimated: this method does not model label noise.\n\n")
	} else {
		b.WriteString("| | rho01 = P(y=0 given r=1) | rho10 = P(y=1 given r=0) |\n|---|---|---|\n")
		if run.FlipRates != nil {
			fmt.Fprintf(&b, "| estimated | %s | %s |\n", fmtNum(run.FlipRates.Rho01), fmtNum(run.FlipRates.Rho10))
		} else {
			b.WriteString("| estimated | not estimated | not estimated |\n")
		}
		if run.TrueRates != nil {
			fmt.Fprintf(&b, "| true | %s | %s |\n", fmtNum(run.TrueRates.Rho01), fmtNum(run.TrueRates.Rho10))
		}
		b.WriteString("\n")
	}

	b.WriteString("## Propensity model\n\n")
	if math.IsNaN(run.PropensityValMSE) {
		b.WriteString("Validation MSE: stage skipped (propensity given or not used).\n\n")
	} else {
		fmt.Fprintf(&b, "Validation MSE: %s\n\n", fmtNum(run.PropensityValMSE))
	}
	if len(run.PropensityCalib) > 0 {
		b.WriteString("Calibration on validation rows, per decile of predicted propensity:\n\n")
		b.WriteString("| decile | mean predicted | observed rate | rows |\n|---|---|---|---|\n")
		for i, c := range run.PropensityCalib {
			fmt.Fprintf(&b, "| %d | %s | %s | %d |\n", i+1, fmtNum(c.MeanPred), fmtNum(c.ObsRate), c.N)
		}
		b.WriteString("\n")
		if calib != "" {
			fmt.Fprintf(&b, "![propensity calibration](%s)\n\n", calib)
		}
	}

	b.WriteString("## Epochs per stage\n\n")
	if len(run.StageEpochs) == 0 {
		b.WriteString("No stage epochs were recorded.\n\n")
	} else {
		b.WriteString("| stage | epochs |\n|---|---|\n")
		for _, k := range stageKeys(run) {
			fmt.Fprintf(&b, "| %s | %d |\n", k, run.StageEpochs[k])
		}
		b.WriteString("\n")
	}

	if len(run.Curves) > 0 {
		b.WriteString("## Training curves\n\n")
		for i, c := range run.Curves {
			fmt.Fprintf(&b, "### %s\n\n", c.Stage)
			if e, v, ok := bestVal(c); ok {
				fmt.Fprintf(&b, "Best validation loss %s at epoch %d.\n\n", fmtNum(v), e)
			}
			if curveFiles[i] == "" {
				b.WriteString("No finite loss values to plot.\n\n")
				continue
			}
			fmt.Fprintf(&b, "![%s loss](%s)\n\n", c.Stage, curveFiles[i])
		}
	}

	if len(run.Notes) > 0 {
		b.WriteString("## Notes\n\n")
		for _, n := range run.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// orderedKeys lists known metrics in table order, then the rest sorted.
func orderedKeys(m map[string]float64) []string {
	var out, rest []string
	for _, k := range metricOrder {
		if _, ok := m[k]; ok {
			out = append(out, k)
		}
	}
	for k := range m {
		if !slices.Contains(metricOrder, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

// stageKeys lists stages in curve (pipeline) order, then any others sorted.
func stageKeys(run *Run) []string {
	var out, rest []string
	for _, c := range run.Curves {
		if _, ok := run.StageEpochs[c.Stage]; ok && !slices.Contains(out, c.Stage) {
			out = append(out, c.Stage)
		}
	}
	for k := range run.StageEpochs {
		if !slices.Contains(out, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

// bestVal is the lowest finite validation loss and its epoch.
func bestVal(c Curve) (epoch int, val float64, ok bool) {
	for i, v := range c.Val {
		if i >= len(c.Epochs) || math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		if !ok || v < val {
			epoch, val, ok = c.Epochs[i], v, true
		}
	}
	return
}

// writeFileAtomic writes data to a temporary file in the same directory and
// renames it over path, so readers see either the old file or the whole new one.
func writeFileAtomic(path string, data []byte) error {
	err := atomicfile.Write(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
	if err != nil {
		return fmt.Errorf("report: writing %s: %w", path, err)
	}
	return nil
}

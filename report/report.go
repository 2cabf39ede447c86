// Package report writes the human-readable account of a training run: a
// report.md with the numbers a reader checks first (test metrics, flip rates,
// propensity quality, observed share, epochs) and PNG plots it embeds, plus a
// compare.md across methods and seeds. Every file is written to a temporary
// name and renamed into place, so a crash never leaves a half-written report.
package report

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/causalrm/causalrm/internal/atomicfile"
)

// Curve is the loss history of one training stage (propensity, noise,
// imputation, reward). Val may be empty or hold NaN where not measured.
// Best is the epoch whose parameters the stage kept (0: not recorded);
// MonitorTrain says early stopping watched the training loss rather than
// the validation loss.
type Curve struct {
	Stage        string
	Epochs       []int
	Train        []float64
	Val          []float64
	Best         int
	MonitorTrain bool
}

// FlipRates are class-conditional label flip rates: Rho01 = P(y=0|r=1),
// Rho10 = P(y=1|r=0).
type FlipRates struct {
	Rho01, Rho10 float64
}

// FlipInterval is the 95% interval of estimated flip rates: Lo and Hi per
// rate, and the observed rows each rate was read from (N01, N10).
type FlipInterval struct {
	Lo, Hi   FlipRates
	N01, N10 int
}

// The sources of a run's flip rates (Run.FlipRatesSource).
const (
	RatesGiven     = "given"
	RatesEstimated = "estimated"
)

// CalibBin is one decile of predicted propensity over the validation rows
// (the deciles hold equal row counts): the smallest and largest
// prediction in it (Lo, Hi), the mean prediction, the observed rate of
// o = 1 among its rows, and its row count.
type CalibBin struct {
	Lo, Hi   float64
	MeanPred float64
	ObsRate  float64
	N        int
}

// Split is one split of the data: its name (train, val or test), the file
// its rows came from, its rows and how many of them have feedback
// (o = 1). Clean marks a fully labelled test split, whose rows carry the
// true preference r instead of feedback.
type Split struct {
	Name     string
	File     string
	Rows     int
	Observed int
	Clean    bool
}

// Setting is one training setting as the report lists it: its name (the
// command-line flag's, without dashes), its value and, optionally, what
// it does.
type Setting struct {
	Name, Value, Meaning string
}

// Run is everything the report of one training run shows.
type Run struct {
	Method string
	Seed   uint64
	// Data are the splits the run read, in train, val, test order (nil:
	// not recorded).
	Data []Split
	// Settings are the settings that fix the result, in the order shown;
	// JobFile names the file beside the report holding all of them (""
	// when there is none).
	Settings []Setting
	JobFile  string
	// BaselineCommand is the command line that trains the naive baseline
	// beside this run's method ("" : the report gives a generic one).
	BaselineCommand string
	// MaxEpochs is the most epochs a stage may run (0: not recorded): a
	// stage whose saved epoch is its last at this limit was still
	// improving.
	MaxEpochs int
	Curves    []Curve
	FlipRates *FlipRates // the rates the method used; nil when it does not model label noise
	// FlipRatesSource is RatesGiven (--flip-rates, job key flip_rates) or
	// RatesEstimated (by the noise stage); "" reads as estimated.
	FlipRatesSource string
	// FlipInterval is the 95% interval of estimated FlipRates (the
	// cross-fitted estimator); nil when there is none.
	FlipInterval     *FlipInterval
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

// higherIsBetter says which way "best" points when bolding a comparison;
// lowerIsBetter lists the metrics where lower is better (a metric in
// neither has no known direction).
var (
	higherIsBetter = map[string]bool{"r2": true, "auroc": true, "pearson": true}
	lowerIsBetter  = map[string]bool{"mae": true, "rmse": true}
)

// metricMeaning is one sentence per metric: what it measures.
var metricMeaning = map[string]string{
	"r2":      "Share of the variance of r that the reward explains: 1 is perfect, 0 is no better than predicting the share of r = 1 for every row, below 0 is worse than that.",
	"mae":     "Mean absolute difference between the reward and r.",
	"rmse":    "Root mean squared difference between the reward and r; large misses weigh more than in MAE.",
	"auroc":   "Chance that a random row with r = 1 gets a higher reward than a random row with r = 0 (ties count one half); 0.5 is chance, and only the ranking matters.",
	"pearson": "Linear correlation between the reward and r.",
}

func label(metric string) string {
	if l, ok := metricLabel[metric]; ok {
		return l
	}
	return metric
}

// better is the metric's direction: "higher", "lower" or "–" when unknown.
func better(metric string) string {
	switch {
	case higherIsBetter[metric]:
		return "higher"
	case lowerIsBetter[metric]:
		return "lower"
	}
	return "–"
}

// metricTable is the table of metrics with their values, direction and
// meaning; value gives a metric's cell.
func metricTable(b *strings.Builder, keys []string, value func(string) string) {
	b.WriteString("| metric | value | better | what it measures |\n|---|---|---|---|\n")
	for _, k := range keys {
		m := metricMeaning[k]
		if m == "" {
			m = "–"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", label(k), value(k), better(k), m)
	}
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

// fmtInt writes n with thousands separators: 1,234,567.
func fmtInt(n int) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func pct(part, whole int) string {
	return fmt.Sprintf("%.1f%%", 100*float64(part)/float64(max(whole, 1)))
}

// writeDataAndSettings writes the Data and Settings sections (each only
// when there is something to show), shared by report.md and compare.md.
func writeDataAndSettings(b *strings.Builder, data []Split, settings []Setting, jobFile string) {
	if len(data) > 0 {
		b.WriteString("## Data\n\n")
		writeData(b, data)
	}
	if len(settings) > 0 || jobFile != "" {
		b.WriteString("## Settings\n\n")
		writeSettings(b, settings, jobFile)
	}
}

// writeData writes the data section's table: each split's file, rows and
// rows with feedback.
func writeData(b *strings.Builder, data []Split) {
	b.WriteString("| split | file | rows | with feedback (o = 1) |\n|---|---|---|---|\n")
	for _, s := range data {
		file := "–"
		if s.File != "" {
			file = "`" + s.File + "`"
		}
		obs := fmt.Sprintf("%s (%s)", fmtInt(s.Observed), pct(s.Observed, s.Rows))
		if s.Clean {
			obs = "– (clean test split: every row has its true label r)"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", s.Name, file, fmtInt(s.Rows), obs)
	}
	b.WriteString("\n")
}

// writeSettings writes the settings as a list, then where all of them are.
func writeSettings(b *strings.Builder, settings []Setting, jobFile string) {
	for _, s := range settings {
		if s.Meaning != "" {
			fmt.Fprintf(b, "- %s: `%s` (%s)\n", s.Name, s.Value, s.Meaning)
		} else {
			fmt.Fprintf(b, "- %s: `%s`\n", s.Name, s.Value)
		}
	}
	if len(settings) > 0 {
		b.WriteString("\n")
	}
	if jobFile != "" {
		fmt.Fprintf(b, "Every setting, with the data files, is in [%s](%s).\n\n", jobFile, jobFile)
	}
}

// ratesSourceLabel is how the report names a source of flip rates.
func ratesSourceLabel(source string) string {
	if source == RatesGiven {
		return RatesGiven
	}
	return RatesEstimated
}

// ratesSourceNote says where flip rates of a source come from.
func ratesSourceNote(source string) string {
	if source == RatesGiven {
		return "given: set with `--flip-rates RHO01,RHO10` (job key `flip_rates`), so the noise stage was skipped"
	}
	return "estimated: from the noise model's anchor points after the noise stage (`--flip-estimator anchor`, docs/method.md, \"Flip-rate estimation\"); no interval"
}

const trueRatesNote = "true: counted on the train split's observed rows, whose clean label r the data records (generated data); training never reads them"

// stageMeaning says what a stage's loss is.
func stageMeaning(stage string) string {
	switch {
	case stage == "propensity":
		return "The propensity model e(x) predicts whether a row gets feedback; its loss is the squared error (sigmoid(f) - o)² over all rows."
	case stage == "noise":
		return "The noise model h(x) is trained on the observed rows against the noisy label y (binary cross-entropy). The flip rates are estimated from five cross-fitted copies of it, each trained without one fifth of the observed rows and scoring that fifth (the default), or from its own logits (`--flip-estimator anchor`)."
	case strings.HasPrefix(stage, "noise-fold"):
		return "A cross-fitting copy of the noise model, trained on four of the five folds of the observed rows; it scores the fold it did not see, for the flip-rate estimate (docs/method.md, \"Flip-rate estimation\"). It is not saved."
	case stage == "imputation":
		return "The imputation model g(x) is trained on the observed rows against the noisy label y (binary cross-entropy); the doubly robust estimators use its predictions."
	case strings.HasPrefix(stage, "reward/"):
		m := strings.TrimPrefix(stage, "reward/")
		return fmt.Sprintf("The reward model, trained with the %s estimator's risk; the validation loss is the same estimator on the validation rows, an estimate of the clean risk that uses no hidden label.", m)
	}
	return ""
}

// deciles formats a range of decile numbers: "3" or "1–4".
func deciles(from, to int) string {
	if from == to {
		return fmt.Sprint(from)
	}
	return fmt.Sprintf("%d–%d", from, to)
}

// tiedDeciles lists the runs of two or more deciles whose rows all have
// one and the same prediction.
func tiedDeciles(bins []CalibBin) []string {
	var out []string
	for i := 0; i < len(bins); {
		j := i
		for j+1 < len(bins) && bins[j+1].Lo == bins[i].Lo && bins[j+1].Hi == bins[i].Hi && bins[i].Lo == bins[i].Hi {
			j++
		}
		if j > i {
			out = append(out, fmt.Sprintf("deciles %s all predict %s", deciles(i+1, j+1), fmtNum(bins[i].Lo)))
		}
		i = j + 1
	}
	return out
}

func renderRun(run *Run, curveFiles []string, calib string) string {
	var b strings.Builder
	title := run.Method
	if title == "" {
		title = "(unnamed method)"
	}
	fmt.Fprintf(&b, "# Training report: %s\n\n", title)
	fmt.Fprintf(&b, "- Method: %s, seed %d\n", title, run.Seed)
	if len(run.Data) > 0 {
		var files []string
		for _, s := range run.Data {
			if s.File != "" && !slices.Contains(files, "`"+s.File+"`") {
				files = append(files, "`"+s.File+"`")
			}
		}
		if len(files) > 0 {
			fmt.Fprintf(&b, "- Data: %s\n", strings.Join(files, ", "))
		}
	}
	fmt.Fprintf(&b, "- Observed share of train rows (o = 1): %.2f%%\n", 100*run.ObservedShare)
	fmt.Fprintf(&b, "- Elapsed: %s\n\n", run.Elapsed.Round(time.Millisecond))

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
		rows := ""
		for _, s := range run.Data {
			if s.Name == "test" {
				rows = fmt.Sprintf(" (%s rows)", fmtInt(s.Rows))
			}
		}
		fmt.Fprintf(&b, "On the clean test split%s: the reward sigmoid(f(x)) against each row's true label r (1: preferred, 0: not).\n\n", rows)
		metricTable(&b, orderedKeys(run.Test), func(k string) string { return fmtNum(run.Test[k]) })
		b.WriteString("\n")
	}

	writeBaseline(&b, run, title)

	writeDataAndSettings(&b, run.Data, run.Settings, run.JobFile)

	writeFlipRates(&b, run, title)
	writePropensity(&b, run, calib)

	b.WriteString("## Epochs per stage\n\n")
	if len(run.StageEpochs) == 0 {
		b.WriteString("No stage epochs were recorded.\n\n")
	} else {
		b.WriteString("Each stage trains until its early-stopping patience runs out (or the maximum epochs) and keeps the parameters of its saved epoch.\n\n")
		b.WriteString("| stage | epochs | saved epoch |\n|---|---|---|\n")
		for _, k := range stageKeys(run) {
			saved := "–"
			for _, c := range run.Curves {
				if c.Stage == k && c.Best > 0 {
					saved = fmt.Sprint(c.Best)
				}
			}
			fmt.Fprintf(&b, "| %s | %d | %s |\n", k, run.StageEpochs[k], saved)
		}
		b.WriteString("\n")
	}

	if len(run.Curves) > 0 {
		b.WriteString("## Training curves\n\n")
		b.WriteString("Mean loss per epoch on the training rows and on the validation rows; the dashed line marks the saved epoch.\n\n")
		for i, c := range run.Curves {
			fmt.Fprintf(&b, "### %s\n\n", c.Stage)
			if m := stageMeaning(c.Stage); m != "" {
				b.WriteString(m + "\n\n")
			}
			b.WriteString(savedLine(c, run.MaxEpochs))
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

// savedLine says which epoch a stage kept and its losses there, and
// whether the stage was still improving when it hit maxEpochs.
func savedLine(c Curve, maxEpochs int) string {
	at := func(v []float64, e int) float64 {
		for i, ep := range c.Epochs {
			if ep == e && i < len(v) {
				return v[i]
			}
		}
		return math.NaN()
	}
	watch := "validation"
	if c.MonitorTrain {
		watch = "training"
	}
	if c.Best > 0 {
		last := 0
		if len(c.Epochs) > 0 {
			last = c.Epochs[len(c.Epochs)-1]
		}
		s := fmt.Sprintf("Saved epoch %d of %d (early stopping watched the %s loss): validation loss %s, training loss %s.\n\n",
			c.Best, last, watch, fmtNum(at(c.Val, c.Best)), fmtNum(at(c.Train, c.Best)))
		if maxEpochs > 0 && c.Best == last && last == maxEpochs {
			s += fmt.Sprintf("The stage was still improving when it reached the most epochs allowed (%d, --max-epochs): more epochs may give a better model.\n\n", maxEpochs)
		}
		return s
	}
	if e, v, ok := bestVal(c); ok {
		return fmt.Sprintf("Lowest validation loss %s at epoch %d.\n\n", fmtNum(v), e)
	}
	return ""
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

package report

import (
	"bytes"
	"fmt"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func sampleRun() *Run {
	c := func(stage string, n int) Curve {
		cv := Curve{Stage: stage}
		for e := 1; e <= n; e++ {
			cv.Epochs = append(cv.Epochs, e)
			cv.Train = append(cv.Train, 1/float64(e))
			cv.Val = append(cv.Val, 1/float64(e)+0.1+0.002*float64(e))
		}
		cv.Val[0] = math.NaN() // a missing measurement must not break the plot
		return cv
	}
	var bins []CalibBin
	for i := 0; i < 10; i++ {
		p := 0.1 + 0.09*float64(i)
		bins = append(bins, CalibBin{Lo: p - 0.04, Hi: p + 0.04, MeanPred: p, ObsRate: p * 0.95, N: 100})
	}
	curves := []Curve{c("propensity", 20), c("noise", 15), c("Reward Model", 40)}
	curves[0].Best = 20
	curves[2].Best = 31
	return &Run{
		Method: "causalrm-ips",
		Seed:   3,
		Data: []Split{{Name: "train", File: "data/d.safetensors", Rows: 1600, Observed: 320},
			{Name: "val", File: "data/d.safetensors", Rows: 400, Observed: 79},
			{Name: "test", File: "data/test.parquet", Rows: 12345, Clean: true}},
		Settings: []Setting{{Name: "method", Value: "causalrm-ips", Meaning: "the reward stage's estimator"},
			{Name: "risk", Value: "nonnegative"}, {Name: "hidden", Value: "256,64"}},
		JobFile:          "job.yaml",
		BaselineCommand:  "causalrm compare --config runs/x/job.yaml --methods naive,causalrm-ips --seeds 1 --out runs/x-naive",
		Curves:           curves,
		FlipRates:        &FlipRates{Rho01: 0.11, Rho10: 0.19},
		FlipRatesSource:  RatesEstimated,
		TrueRates:        &FlipRates{Rho01: 0.1, Rho10: 0.2},
		PropensityValMSE: 0.1234,
		PropensityCalib:  bins,
		ObservedShare:    0.2,
		StageEpochs:      map[string]int{"propensity": 20, "noise": 15, "Reward Model": 40},
		Test:             map[string]float64{"r2": 0.287, "mae": 0.31, "rmse": 0.4, "auroc": 0.81, "pearson": 0.55, "ece": 0.05},
		Notes:            []string{"semi-synthetic data"},
		Elapsed:          1500 * time.Millisecond,
	}
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if b := img.Bounds(); b.Dx() == 0 || b.Dy() == 0 {
		t.Fatalf("%s: empty image", path)
	}
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	run := sampleRun()
	if err := Write(dir, run); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(md)
	pngs := []string{"curve_propensity.png", "curve_noise.png", "curve_reward_model.png", CalibrationFile}
	for _, f := range pngs {
		checkPNG(t, filepath.Join(dir, f))
		if !strings.Contains(s, "]("+f+")") {
			t.Errorf("report.md does not link %s", f)
		}
	}
	for _, want := range []string{"R²", "MAE", "RMSE", "AUROC", "Pearson", "ece", "0.2870",
		"| estimated | 0.1100 | 0.1900 |", "| true | 0.1000 | 0.2000 |", "0.1234", "20.00%", "| Reward Model | 40 | 31 |", "1.5s", "semi-synthetic data",
		// the data: files, rows per split, observed share
		"- Data: `data/d.safetensors`, `data/test.parquet`\n",
		"| train | `data/d.safetensors` | 1,600 | 320 (20.0%) |", "| val | `data/d.safetensors` | 400 | 79 (19.8%) |",
		"| test | `data/test.parquet` | 12,345 | – (clean test split",
		// the settings and the job file
		"- method: `causalrm-ips` (the reward stage's estimator)\n- risk: `nonnegative`\n- hidden: `256,64`\n", "[job.yaml](job.yaml)",
		// every metric's direction and meaning
		"| metric | value | better | what it measures |", "| R² | 0.2870 | higher | Share of the variance", "| MAE | 0.3100 | lower |",
		"| RMSE | 0.4000 | lower |", "| AUROC | 0.8100 | higher |", "| Pearson | 0.5500 | higher |", "| ece | 0.0500 | – | – |",
		"On the clean test split (12,345 rows)",
		// the naive baseline, skipped, and the command that trains it
		"## Naive baseline", "Skipped: `causalrm train` trains only the chosen method (causalrm-ips)",
		"```\ncausalrm compare --config runs/x/job.yaml --methods naive,causalrm-ips --seeds 1 --out runs/x-naive\n```",
		"estimated: from the noise model's anchor points", "true: counted on the train split's observed rows",
		// the calibration deciles with their ranges
		"| decile | predicted range | mean predicted | observed rate | rows |", "| 1 | 0.0600–0.1400 | 0.1000 | 0.0950 | 100 |",
		"| 10 | 0.8700–0.9500 | 0.9100 | 0.8645 | 100 |", "Calibration on the 1,000 validation rows, in deciles",
		// the saved epoch
		"Saved epoch 31 of 40 (early stopping watched the validation loss): validation loss 0.1943, training loss 0.0323.",
		"Lowest validation loss"} {
		if !strings.Contains(s, want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	// Metrics in the paper's order.
	if i, j := strings.Index(s, "| R² |"), strings.Index(s, "| Pearson |"); i < 0 || j < i {
		t.Error("metrics out of order")
	}
	// No temporary files left behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("leftover temp file %s", e.Name())
		}
	}
	if len(entries) != len(pngs)+1 {
		t.Errorf("%d files written, want %d", len(entries), len(pngs)+1)
	}
}

func TestWriteSkippedStages(t *testing.T) {
	dir := t.TempDir()
	run := &Run{
		Method:           "naive",
		Curves:           []Curve{{Stage: "reward", Epochs: []int{1, 2}, Train: []float64{0.7, 0.6}}, {Stage: "empty"}},
		PropensityValMSE: math.NaN(),
		Test:             map[string]float64{"r2": 0.1},
	}
	if err := Write(dir, run); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, filepath.Join(dir, "curve_reward.png"))
	for _, f := range []string{"curve_empty.png", CalibrationFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s written for a stage with no data", f)
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	for _, want := range []string{"stage skipped", "Not used: naive does not model label noise", "No finite loss values",
		"This run is the naive baseline"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
}

func TestMeanStd(t *testing.T) {
	m, s := MeanStd([]float64{1, 2, 3, 4, math.NaN()})
	if m != 2.5 || math.Abs(s-math.Sqrt(5.0/3)) > 1e-12 {
		t.Fatalf("MeanStd = %v, %v", m, s)
	}
	if m, s := MeanStd([]float64{7}); m != 7 || !math.IsNaN(s) {
		t.Fatalf("one value: %v, %v", m, s)
	}
}

func TestFormatCompareTable(t *testing.T) {
	rows := []CompareRow{
		{Method: "naive", PerSeed: []map[string]float64{
			{"r2": 0.1, "mae": 0.40, "rmse": 0.5, "auroc": 0.70, "pearson": 0.3},
			{"r2": 0.3, "mae": 0.30, "rmse": 0.5, "auroc": 0.72, "pearson": 0.5},
		}},
		{Method: "causalrm-ips", PerSeed: []map[string]float64{
			{"r2": 0.25, "mae": 0.35, "rmse": 0.45, "auroc": 0.80},
			{"r2": 0.35, "mae": 0.25, "rmse": 0.41, "auroc": 0.84},
		}},
	}
	got := FormatCompareTable(rows)
	want := "| method | R² | MAE | RMSE | AUROC | Pearson |\n" +
		"|---|---|---|---|---|---|\n" +
		// naive: r2 mean 0.2, sample std sqrt(0.02) = 0.1414; mae 0.35 ± 0.0707
		// loses to 0.30 (lower is better); pearson is missing for causalrm-ips.
		"| naive | 0.200 ± 0.141 | 0.350 ± 0.071 | 0.500 ± 0.000 | 0.710 ± 0.014 | **0.400 ± 0.141** |\n" +
		"| causalrm-ips | **0.300 ± 0.071** | **0.300 ± 0.071** | **0.430 ± 0.028** | **0.820 ± 0.028** | – |\n"
	if got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteCompare(t *testing.T) {
	dir := t.TempDir()
	rows := []CompareRow{
		{Method: "naive", PerSeed: []map[string]float64{{"r2": 0.1, "auroc": 0.7}, {"r2": 0.2, "auroc": 0.72}}},
		{Method: "ips", PerSeed: []map[string]float64{{"r2": -0.05, "auroc": 0.65}}},
		{Method: "causalrm-ips", PerSeed: []map[string]float64{{"r2": 0.3, "auroc": 0.8}, {"r2": 0.32, "auroc": 0.82}}},
	}
	c := &Comparison{Rows: rows, Seeds: []uint64{1, 2},
		Data: []Split{{Name: "train", File: "d.safetensors", Rows: 1600, Observed: 320},
			{Name: "val", File: "d.safetensors", Rows: 400, Observed: 80}, {Name: "test", File: "d.safetensors", Rows: 300, Clean: true}},
		Settings: []Setting{{Name: "risk", Value: "nonnegative"}}, JobFile: "job.yaml", JSONFile: "compare.json",
		FlipRates: []SeedRates{{Seed: 1, Rates: FlipRates{0.12, 0.21}, Source: RatesEstimated}, {Seed: 2, Rates: FlipRates{0.09, 0.18}, Source: RatesEstimated}},
		TrueRates: &FlipRates{0.1, 0.2}}
	if err := WriteCompare(dir, c); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, filepath.Join(dir, CompareBarsFile))
	md, err := os.ReadFile(filepath.Join(dir, CompareFile))
	if err != nil {
		t.Fatal(err)
	}
	s := string(md)
	for _, want := range []string{"- Seeds (2): 1, 2\n", "- Methods (3): naive, ips, causalrm-ips\n", "- Data: `d.safetensors`\n",
		FormatCompareTable(rows), "ips has results for 1 of 2 seeds", "](" + CompareBarsFile + ")",
		"| train | `d.safetensors` | 1,600 | 320 (20.0%) |", "- risk: `nonnegative`", "[job.yaml](job.yaml)", "[compare.json](compare.json)",
		"| metric | better | what it measures |", "| R² | higher |", "| MAE | lower |",
		"| seed | rates | rho01 | rho10 |", "| 1 | estimated | 0.1200 | 0.2100 |", "| 2 | estimated | 0.0900 | 0.1800 |",
		"| every seed | true | 0.1000 | 0.2000 |", "estimated: from the noise model's anchor points"} {
		if !strings.Contains(s, want) {
			t.Errorf("compare.md lacks %q:\n%s", want, s)
		}
	}
	// Given rates, and a comparison of methods that use none.
	c.FlipRates = []SeedRates{{Seed: 1, Rates: FlipRates{0.1, 0.2}, Source: RatesGiven}}
	c.TrueRates = nil
	if err := WriteCompare(dir, c); err != nil {
		t.Fatal(err)
	}
	if md, _ := os.ReadFile(filepath.Join(dir, CompareFile)); !strings.Contains(string(md), "| 1 | given | 0.1000 | 0.2000 |") ||
		!strings.Contains(string(md), "given: set with `--flip-rates RHO01,RHO10`") {
		t.Errorf("given rates not labelled given:\n%s", md)
	}
	c.FlipRates = nil
	if err := WriteCompare(dir, c); err != nil {
		t.Fatal(err)
	}
	if md, _ := os.ReadFile(filepath.Join(dir, CompareFile)); !strings.Contains(string(md), "Not used: none of these methods models label noise") {
		t.Errorf("no rates:\n%s", md)
	}
	if err := WriteCompare(dir, nil); err == nil {
		t.Error("empty comparison accepted")
	}
	if err := WriteCompare(dir, &Comparison{}); err == nil {
		t.Error("empty comparison accepted")
	}
}

// The rates a run was given are labelled given, not estimated.
func TestReportGivenRates(t *testing.T) {
	dir := t.TempDir()
	run := sampleRun()
	run.FlipRatesSource = RatesGiven
	run.FlipRates = &FlipRates{Rho01: 0.1, Rho10: 0.2}
	if err := Write(dir, run); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	md := string(raw)
	if !strings.Contains(md, "| given | 0.1000 | 0.2000 |") || !strings.Contains(md, "given: set with `--flip-rates RHO01,RHO10` (job key `flip_rates`)") {
		t.Errorf("given rates not labelled given:\n%s", md)
	}
	if strings.Contains(md, "| estimated |") {
		t.Errorf("given rates labelled estimated:\n%s", md)
	}
}

// Deciles tied at one prediction (the clip) are named.
func TestReportTiedDeciles(t *testing.T) {
	bins := []CalibBin{{0.1, 0.1, 0.1, 0.05, 10}, {0.1, 0.1, 0.1, 0.1, 10}, {0.1, 0.1, 0.1, 0.1, 10}, {0.1, 0.2, 0.15, 0.2, 10}, {0.3, 0.3, 0.3, 0.3, 10}}
	if got := tiedDeciles(bins); !slices.Equal(got, []string{"deciles 1–3 all predict 0.1000"}) {
		t.Fatalf("tiedDeciles = %q", got)
	}
	run := sampleRun()
	run.PropensityCalib = bins
	dir := t.TempDir()
	if err := Write(dir, run); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	if !strings.Contains(string(raw), "Tied predictions (deciles 1–3 all predict 0.1000") {
		t.Errorf("tied deciles not named:\n%s", raw)
	}
}

// The y axis of a loss plot clips an explosion to the bulk of the values,
// and only then.
func TestLossRange(t *testing.T) {
	smooth := []float64{5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.04}
	if lo, hi, clipped := lossRange(smooth); clipped || lo > 0.04 || hi < 5 {
		t.Errorf("smooth curve: %v..%v clipped %v", lo, hi, clipped)
	}
	var explode []float64
	for i := 0; i < 20; i++ {
		explode = append(explode, 0.7-0.01*float64(i))
	}
	explode = append(explode, 3e5, 0.5)
	lo, hi, clipped := lossRange(explode)
	if !clipped || hi > 1 || lo > 0.5 || hi < 0.7 {
		t.Errorf("explosion: %v..%v clipped %v", lo, hi, clipped)
	}
	// A plain risk that diverges to -69 over many epochs is the story: not clipped.
	var diverge []float64
	for i := 0; i < 40; i++ {
		diverge = append(diverge, 0.6-1.8*float64(i))
	}
	if _, _, clipped := lossRange(diverge); clipped {
		t.Error("a steady divergence was clipped")
	}
	if lo, hi, _ := lossRange([]float64{0.3, 0.3}); !(lo < 0.3 && hi > 0.3) {
		t.Errorf("flat curve: %v..%v", lo, hi)
	}
}

// Axes have at least four y ticks at round values and whole epochs on x.
func TestTickers(t *testing.T) {
	for _, r := range [][2]float64{{0, 1}, {0.1601, 0.1604}, {-70, 0.7}, {0.45, 0.52}, {1e-7, 3e-7}, {-1, 1}, {0.2, 0.21}} {
		ticks := niceTicker{Min: 5}.Ticks(r[0], r[1])
		if len(ticks) < 4 || len(ticks) > 12 {
			t.Errorf("%v: %d ticks %v", r, len(ticks), ticks)
		}
		labels := map[string]bool{}
		for _, tk := range ticks {
			if tk.Value < r[0]-1e-12 || tk.Value > r[1]+1e-12 || labels[tk.Label] {
				t.Errorf("%v: tick %v (%q) outside or repeated", r, tk.Value, tk.Label)
			}
			labels[tk.Label] = true
		}
	}
	for _, r := range [][2]float64{{0.5, 1.5}, {0.5, 20.5}, {1, 600}, {0.5, 37.5}} {
		ticks := epochTicker{}.Ticks(r[0], r[1])
		if len(ticks) == 0 || len(ticks) > 12 {
			t.Errorf("epochs %v: %d ticks", r, len(ticks))
		}
		for _, tk := range ticks {
			if tk.Value != math.Trunc(tk.Value) || tk.Label != fmt.Sprint(int(tk.Value)) {
				t.Errorf("epochs %v: tick %v %q not a whole epoch", r, tk.Value, tk.Label)
			}
		}
	}
}

// A curve whose loss explodes, one with a single epoch and one with a
// negative plain risk all render.
func TestCurvePNGs(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]Curve{
		"explode": {Stage: "reward/noise", Epochs: []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, Train: []float64{0.7, 0.6, 0.55, 0.5, 1e6, 0.5, 0.49, 0.48, 0.47, -3e5},
			Val: []float64{0.71, 0.62, 0.6, 0.58, 0.57, 0.58, 0.59, 0.6, 0.61, 0.62}, Best: 5},
		"one":      {Stage: "noise", Epochs: []int{1}, Train: []float64{0.3}, Val: []float64{0.31}, Best: 1},
		"negative": {Stage: "reward/causalrm-ips", Epochs: []int{1, 2, 3, 4}, Train: []float64{0.6, -2, -30, -69}, Val: []float64{0.5, -1, -20, -40}, Best: 1, MonitorTrain: true},
	}
	for name, c := range cases {
		png, err := curvePNG(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		path := filepath.Join(dir, name+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		checkPNG(t, path)
	}
}

// compare.png's axes stay within each metric's range: R² at most 1, AUROC
// in [0, 1], whatever the error bars.
func TestCompareAxes(t *testing.T) {
	methods := []string{"naive", "causalrm-ips"}
	r2 := metricPanel{title: "R²", means: []float64{0.9, 0.98}, stds: []float64{0.2, 0.1}, lo: math.NaN(), hi: 1, ref: 0}
	p, err := r2.plot(methods)
	if err != nil {
		t.Fatal(err)
	}
	if p.Y.Max > 1 || p.Y.Min > 0 {
		t.Errorf("R² axis %v..%v", p.Y.Min, p.Y.Max)
	}
	au := metricPanel{title: "AUROC", means: []float64{0.05, 0.97}, stds: []float64{0.1, 0.1}, lo: 0, hi: 1, ref: 0.5}
	if p, err = au.plot(methods); err != nil {
		t.Fatal(err)
	}
	if p.Y.Min < 0 || p.Y.Max > 1 {
		t.Errorf("AUROC axis %v..%v", p.Y.Min, p.Y.Max)
	}
	png, err := compareMetricsPNG(methods, []float64{-0.2, 0.4}, []float64{0.1, math.NaN()}, []float64{0.6, math.NaN()}, []float64{0.01, 0.02}, 1)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "c.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, path)
}

func TestCurveFile(t *testing.T) {
	for in, want := range map[string]string{"reward": "curve_reward.png", "Reward Model": "curve_reward_model.png", "a/b": "curve_a_b.png", "": "curve_stage.png"} {
		if got := CurveFile(in); got != want {
			t.Errorf("CurveFile(%q) = %q, want %q", in, got, want)
		}
	}
}

// A stage saved at its last epoch, the most allowed, was still improving:
// the report says so, and only for that stage.
func TestReportStillImproving(t *testing.T) {
	run := sampleRun()
	run.MaxEpochs = 20
	md := renderRun(run, make([]string, len(run.Curves)), "")
	if n := strings.Count(md, "still improving when it reached the most epochs allowed (20, --max-epochs)"); n != 1 {
		t.Errorf("%d stages said to be still improving, want 1 (propensity):\n%s", n, md)
	}
	if !strings.Contains(md, "(the causalrm-ips row repeats this run's numbers)") {
		t.Errorf("the baseline does not say which row repeats the run:\n%s", md)
	}
}

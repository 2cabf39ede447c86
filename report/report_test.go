package report

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
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
		bins = append(bins, CalibBin{MeanPred: p, ObsRate: p * 0.95, N: 100})
	}
	return &Run{
		Method:           "causalrm-ips",
		Seed:             3,
		Curves:           []Curve{c("propensity", 20), c("noise", 15), c("Reward Model", 40)},
		FlipRates:        &FlipRates{Rho01: 0.11, Rho10: 0.19},
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
		"0.1100", "0.1900", "| true | 0.1000 | 0.2000 |", "0.1234", "20.00%", "| Reward Model | 40 |", "1.5s", "semi-synthetic data"} {
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
	for _, want := range []string{"stage skipped", "Not estimated", "No finite loss values"} {
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
	if err := WriteCompare(dir, rows, []uint64{1, 2}); err != nil {
		t.Fatal(err)
	}
	checkPNG(t, filepath.Join(dir, CompareBarsFile))
	md, err := os.ReadFile(filepath.Join(dir, CompareFile))
	if err != nil {
		t.Fatal(err)
	}
	s := string(md)
	for _, want := range []string{"Seeds (2): 1, 2", FormatCompareTable(rows), "ips has results for 1 of 2 seeds", "](" + CompareBarsFile + ")"} {
		if !strings.Contains(s, want) {
			t.Errorf("compare.md lacks %q", want)
		}
	}
	if err := WriteCompare(dir, nil, nil); err == nil {
		t.Error("empty comparison accepted")
	}
}

func TestCurveFile(t *testing.T) {
	for in, want := range map[string]string{"reward": "curve_reward.png", "Reward Model": "curve_reward_model.png", "a/b": "curve_a_b.png", "": "curve_stage.png"} {
		if got := CurveFile(in); got != want {
			t.Errorf("CurveFile(%q) = %q, want %q", in, got, want)
		}
	}
}

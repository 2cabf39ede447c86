package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Cross-fitted estimates show their 95% interval on the estimated line and
// say how many rows each rate was read from; without an interval (the
// anchor estimator) the line is as before.
func TestReportFlipInterval(t *testing.T) {
	dir := t.TempDir()
	run := sampleRun()
	run.FlipRatesSource = RatesEstimated
	run.FlipRates = &FlipRates{Rho01: 0.108, Rho10: 0.196}
	run.FlipInterval = &FlipInterval{Lo: FlipRates{Rho01: 0.0861, Rho10: 0.1290}, Hi: FlipRates{Rho01: 0.1346, Rho10: 0.2866}, N01: 294, N10: 102}
	if err := Write(dir, run); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	md := string(raw)
	for _, want := range []string{
		"| estimated | 0.1080 (95% interval 0.0861–0.1346) | 0.1960 (95% interval 0.1290–0.2866) |",
		"among the 102 observed rows with the lowest out-of-fold noise-model logits",
		"among the 294 highest",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	run.FlipInterval = nil
	if err := Write(dir, run); err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(filepath.Join(dir, "report.md"))
	if md := string(raw); !strings.Contains(md, "| estimated | 0.1080 | 0.1960 |") || strings.Contains(md, "95% interval") {
		t.Errorf("anchor estimate:\n%s", md)
	}
}

// compare.md shows each seed's cross-fitted interval beside its rates and
// explains it once; a seed without one (the anchor estimator) keeps the
// plain line and its own note.
func TestCompareFlipInterval(t *testing.T) {
	dir := t.TempDir()
	iv := &FlipInterval{Lo: FlipRates{Rho01: 0.0861, Rho10: 0.1290}, Hi: FlipRates{Rho01: 0.1346, Rho10: 0.2866}, N01: 294, N10: 102}
	c := &Comparison{Seeds: []uint64{1, 2},
		Rows: []CompareRow{{Method: "causalrm-ips", PerSeed: []map[string]float64{{"r2": 0.3, "auroc": 0.8}, {"r2": 0.32, "auroc": 0.82}}}},
		FlipRates: []SeedRates{
			{Seed: 1, Rates: FlipRates{Rho01: 0.108, Rho10: 0.196}, Source: RatesEstimated, Interval: iv},
			{Seed: 2, Rates: FlipRates{Rho01: 0.09, Rho10: 0.18}, Source: RatesEstimated},
		}}
	if err := WriteCompare(dir, c); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, CompareFile))
	md := string(raw)
	for _, want := range []string{
		"| 1 | estimated | 0.1080 (95% interval 0.0861–0.1346) | 0.1960 (95% interval 0.1290–0.2866) |",
		"| 2 | estimated | 0.0900 | 0.1800 |",
		"- estimated: cross-fitted",
		"95% Wilson interval",
		"- estimated: from the noise model's anchor points",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("compare.md lacks %q:\n%s", want, md)
		}
	}
	if strings.Count(md, "- estimated: cross-fitted") != 1 {
		t.Errorf("the cross-fitted note should appear once:\n%s", md)
	}
}

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

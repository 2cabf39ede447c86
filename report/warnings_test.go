package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// report.md lists the run's warnings, before the test metrics, and has no
// such section when there are none.
func TestReportWarnings(t *testing.T) {
	dir := t.TempDir()
	run := sampleRun()
	run.Warnings = []Warning{
		{Kind: "column_scale", Message: "feature column 3: max |x| is 1e+30"},
		{Kind: "negative_validation", Message: "stage reward/causalrm-ips: the validation estimate went negative"},
	}
	if err := Write(dir, run); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(raw)
	for _, want := range []string{"## Warnings\n\n- **column_scale**: feature column 3: max |x| is 1e+30\n",
		"- **negative_validation**: stage reward/causalrm-ips: the validation estimate went negative\n"} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	if strings.Index(md, "## Warnings") > strings.Index(md, "## Test metrics") {
		t.Errorf("the warnings come after the test metrics:\n%s", md)
	}
	dir2 := t.TempDir()
	if err := Write(dir2, sampleRun()); err != nil {
		t.Fatal(err)
	}
	if raw, _ := os.ReadFile(filepath.Join(dir2, "report.md")); strings.Contains(string(raw), "Warnings") {
		t.Errorf("a run without warnings has a warnings section:\n%s", raw)
	}
}

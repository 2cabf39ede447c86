package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/causalrm/causalrm/causal"
)

// report.md names the data, its splits and the settings, says how to get
// the naive baseline (and that command works and repeats the run's
// numbers), labels the flip rates estimated or given; metrics.json has
// each calibration decile's range; compare.md names the data, the seeds
// and the flip rates per seed, compare.json has lowercase keys, and
// compare's job.yaml is a job file compare runs again.
func TestReportAndCompareDescribeTheRun(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "d.safetensors")
	if out, err := run(t, "simulate", "--rows", "800", "--test-rows", "200", "--dim", "8", "--latent", "4", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "run")
	log, err := run(t, "train", "--data", data, "--out", out, "--max-epochs", "3", "--hidden", "8,4", "--batch", "128", "--quiet")
	if err != nil {
		t.Fatalf("train: %v\n%s", err, log)
	}
	if !strings.Contains(log, "report: "+filepath.Join(out, "report.md")) {
		t.Errorf("the summary does not name the report:\n%s", log)
	}
	raw, _ := os.ReadFile(filepath.Join(out, "report.md"))
	md := string(raw)
	var m RunMetrics
	mraw, _ := os.ReadFile(filepath.Join(out, "metrics.json"))
	if err := json.Unmarshal(mraw, &m); err != nil {
		t.Fatal(err)
	}
	cmd := fmt.Sprintf("causalrm compare --config %s --methods naive,causalrm-ips --seeds 1 --out %s-naive", filepath.Join(out, "job.yaml"), out)
	for _, want := range []string{
		"- Data: `" + data + "`", "| train | `" + data + "` | 640 |", "| val | `" + data + "` | 160 |", "| test | `" + data + "` | 200 | – (clean test split",
		"- method: `causalrm-ips`", "- risk: `nonnegative`", "- reduce: `exact`", "- batch: `128`", "- lr: `0.0005`", "- hidden: `8,4`",
		"- max-epochs: `3`", "- patience: `30`", "- seed: `1`", "[job.yaml](job.yaml)",
		"| R² |", "| higher |", "| MAE |", "| lower |", "```\n" + cmd + "\n```",
		"| estimated |", "| true |", "| decile | predicted range |", "the most epochs allowed (3, --max-epochs)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}
	if len(m.PropensityCalib) != 10 {
		t.Fatalf("%d calibration bins", len(m.PropensityCalib))
	}
	for i, b := range m.PropensityCalib {
		if b.N != 16 || b.Lo > b.MeanPred || b.MeanPred > b.Hi {
			t.Errorf("bin %d: %+v", i, b)
		}
		if row := fmt.Sprintf("| %d | %.4f–%.4f | %.4f |", i+1, b.Lo, b.Hi, b.MeanPred); !strings.Contains(md, row) {
			t.Errorf("report.md lacks %q", row)
		}
	}
	if !strings.Contains(string(mraw), `"lo":`) || !strings.Contains(string(mraw), `"hi":`) {
		t.Errorf("metrics.json has no lo/hi:\n%s", mraw)
	}

	// The baseline command, as report.md gives it.
	args := strings.Fields(strings.TrimPrefix(cmd, "causalrm "))
	if log, err := run(t, append(args, "--quiet")...); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, log)
	}
	cmpDir := out + "-naive"
	var res struct {
		Methods []string                        `json:"methods"`
		Seeds   []uint64                        `json:"seeds"`
		Data    map[string]json.RawMessage      `json:"data"`
		Results map[string][]map[string]any     `json:"results"`
		Rates   map[string]map[string]float64   `json:"flip_rates"`
		Source  string                          `json:"flip_rates_source"`
		Est     map[string]*causal.FlipEstimate `json:"flip_rates_estimate"`
	}
	craw, _ := os.ReadFile(filepath.Join(cmpDir, "compare.json"))
	if err := json.Unmarshal(craw, &res); err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Methods, ",") != "naive,causalrm-ips" || len(res.Seeds) != 1 || res.Seeds[0] != 1 || res.Source != "estimated" ||
		string(res.Data["train"]) != fmt.Sprintf("%q", data) || res.Data["splits"] == nil || res.Rates["1"] == nil {
		t.Errorf("compare.json does not describe the comparison:\n%s", craw)
	}
	if e := m.FlipRatesEstimate; e == nil || res.Est["1"] == nil || *res.Est["1"] != *e {
		t.Errorf("compare.json's flip_rates_estimate for seed 1 is not the run's %+v:\n%s", e, craw)
	}
	if strings.Contains(string(craw), `"Train"`) {
		t.Errorf("compare.json has capitalised keys:\n%s", craw)
	}
	if got := res.Results["causalrm-ips"][0]["r2"].(float64); math.Float64bits(got) != math.Float64bits(m.Test.R2) {
		t.Errorf("compare's causalrm-ips R² %v, the run's %v", got, m.Test.R2)
	}
	craw, _ = os.ReadFile(filepath.Join(cmpDir, "compare.md"))
	for _, want := range []string{"- Methods (2): naive, causalrm-ips", "- Seeds (1): 1", "- Data: `" + data + "`", "| train | `" + data + "` | 640 |",
		fmt.Sprintf("| 1 | estimated | %.4f (95%% interval %.4f–%.4f) | %.4f (95%% interval %.4f–%.4f) |",
			m.FlipRates.Rho01, m.FlipRatesEstimate.Lo.Rho01, m.FlipRatesEstimate.Hi.Rho01,
			m.FlipRates.Rho10, m.FlipRatesEstimate.Lo.Rho10, m.FlipRatesEstimate.Hi.Rho10),
		"| every seed | true |", "[job.yaml](job.yaml)"} {
		if !strings.Contains(string(craw), want) {
			t.Errorf("compare.md lacks %q:\n%s", want, craw)
		}
	}
	jraw, _ := os.ReadFile(filepath.Join(cmpDir, "job.yaml"))
	if !strings.Contains(string(jraw), "# causalrm compare: methods naive, causalrm-ips; seeds 1.") {
		t.Errorf("compare's job.yaml does not name the comparison:\n%s", jraw)
	}
	// compare's job.yaml runs again, here with given flip rates.
	again := filepath.Join(dir, "again")
	if log, err := run(t, "compare", "--config", filepath.Join(cmpDir, "job.yaml"), "--methods", "noise", "--seeds", "2",
		"--flip-rates", "0.1,0.2", "--out", again, "--quiet"); err != nil {
		t.Fatalf("compare --config its own job.yaml: %v\n%s", err, log)
	}
	craw, _ = os.ReadFile(filepath.Join(again, "compare.md"))
	for _, want := range []string{"| 1 | given | 0.1000 | 0.2000 |", "| 2 | given | 0.1000 | 0.2000 |", "given: set with `--flip-rates"} {
		if !strings.Contains(string(craw), want) {
			t.Errorf("compare.md lacks %q:\n%s", want, craw)
		}
	}
}

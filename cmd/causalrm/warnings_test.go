package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/trainer"
)

// Degenerate data is warned about on stderr, in metrics.json's "warnings"
// and in report.md; ordinary data has an empty list.
func TestTrainWarnsOnDegenerateData(t *testing.T) {
	dir := t.TempDir()
	data := tinyData(t, dir)
	variant := func(name string, change func(ds *shard.Dataset)) string {
		ds, err := shard.Load(shard.LoadSpec{Train: data})
		if err != nil {
			t.Fatal(err)
		}
		change(ds)
		p := filepath.Join(dir, name+".safetensors")
		if err := shard.WriteSafetensors(p, ds); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name   string
		change func(ds *shard.Dataset)
		want   map[string]string // kind -> a piece of its message
	}{
		{"ordinary", func(*shard.Dataset) {}, nil},
		{"outlier", func(ds *shard.Dataset) { ds.Train.X[11*ds.Train.D+5] = 1e30 }, map[string]string{
			"column_scale": "feature column 5: max |x| is 1e+30"}},
		{"one class", func(ds *shard.Dataset) {
			for i, o := range ds.Train.O {
				if o == 1 {
					ds.Train.Y[i] = 1
				}
			}
		}, map[string]string{"one_class": "observed training labels are y = 1"}},
		{"zero embeddings", func(ds *shard.Dataset) {
			for _, s := range []*shard.Split{ds.Train, ds.Val, ds.Test} {
				clear(s.X)
			}
		}, map[string]string{"constant_embeddings": "embeddings is all zero"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "run-"+strings.ReplaceAll(tc.name, " ", "-"))
			log, err := run(t, "train", "--data", variant(tc.name, tc.change), "--out", out, "--max-epochs", "2",
				"--hidden", "4,2", "--batch", "64", "--quiet")
			if err != nil {
				t.Fatalf("train: %v\n%s", err, log)
			}
			var m struct {
				Warnings *[]struct{ Kind, Message string } `json:"warnings"`
			}
			raw, _ := os.ReadFile(filepath.Join(out, "metrics.json"))
			if err := json.Unmarshal(raw, &m); err != nil || m.Warnings == nil {
				t.Fatalf("metrics.json has no warnings list (%v):\n%s", err, raw)
			}
			md, _ := os.ReadFile(filepath.Join(out, "report.md"))
			got := map[string]string{}
			for _, w := range *m.Warnings {
				got[w.Kind] = w.Message
			}
			// Degenerate data also makes the corrected loss misbehave: a
			// negative validation estimate may come on top.
			extra := 0
			if _, ok := got["negative_validation"]; ok && tc.want != nil {
				extra = 1
				if !strings.Contains(log, "warning (negative_validation): stage reward/") {
					t.Errorf("stderr lacks the negative_validation warning:\n%s", log)
				}
			}
			if len(got) != len(tc.want)+extra {
				t.Errorf("warnings %v, want kinds %v", got, tc.want)
			}
			for kind, piece := range tc.want {
				if !strings.Contains(got[kind], piece) {
					t.Errorf("metrics.json: warning %s %q lacks %q", kind, got[kind], piece)
				}
				if !strings.Contains(log, "warning ("+kind+"): ") || !strings.Contains(log, piece) {
					t.Errorf("stderr lacks the %s warning:\n%s", kind, log)
				}
				if !strings.Contains(string(md), "## Warnings") || !strings.Contains(string(md), "**"+kind+"**: "+got[kind]) {
					t.Errorf("report.md lacks the %s warning:\n%s", kind, md)
				}
			}
			if len(tc.want) == 0 && (strings.Contains(log, "warning") || strings.Contains(string(md), "Warnings")) {
				t.Errorf("warnings for ordinary data:\n%s", log)
			}
		})
	}
}

// metrics.json's warnings are the data's, then each stage's.
func TestRunWarnings(t *testing.T) {
	tr := &trainer.Trainer{DataWarnings: []trainer.Warning{{Kind: trainer.WarnOneClass, Message: "one class"}}}
	stages := []*trainer.StageResult{{Name: "propensity", Val: []float64{0.2, 0.1}},
		{Name: "reward/causalrm-dr", Val: []float64{0.2, -0.1}}}
	got := runWarnings(tr, stages)
	if len(got) != 2 || got[0].Kind != trainer.WarnOneClass || got[1].Kind != trainer.WarnNegativeValidation ||
		!strings.Contains(got[1].Message, "stage reward/causalrm-dr") {
		t.Fatalf("%+v", got)
	}
	o := &outcome{tr: tr, rm: &RunMetrics{Warnings: got}}
	if sw := o.stageWarnings(); len(sw) != 1 || sw[0].Kind != trainer.WarnNegativeValidation {
		t.Fatalf("stage warnings %+v", sw)
	}
	if w := runWarnings(&trainer.Trainer{}, nil); w == nil || len(w) != 0 {
		t.Fatalf("no warnings: %#v, want an empty list (metrics.json: [])", w)
	}
	var b strings.Builder
	printWarnings(&b, got)
	if b.String() != "warning (one_class): one class\nwarning (negative_validation): "+got[1].Message+"\n" {
		t.Fatalf("printed %q", b.String())
	}
	printWarnings(nil, got) // nowhere: no panic
}

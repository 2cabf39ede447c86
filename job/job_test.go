package job

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/internal/strictyaml"
	"github.com/causalrm/causalrm/trainer"
)

// The codec decision: which codec carries the integer sums, which the
// float32 sums, for every name and mode, decided in one place.
func TestParseWire(t *testing.T) {
	cases := []struct {
		name, reduce string
		want         Wire
		field        string // a *trainer.FieldError for this key, or ""
	}{
		{"", "exact", Wire{Exact: collective.CodecS2}, ""},
		{"", "fast", Wire{Exact: collective.CodecS2}, ""},
		{"none", "exact", Wire{Exact: collective.CodecNone}, ""},
		{"zstd", "fast", Wire{Exact: collective.CodecZstd}, ""},
		{"s2", "exact", Wire{Exact: collective.CodecS2}, ""},
		{"fp16", "fast", Wire{Exact: collective.CodecS2, Lossy: collective.CodecFP16}, ""},
		{"int8", "fast", Wire{Exact: collective.CodecS2, Lossy: collective.CodecInt8}, ""},
		{"int8", "exact", Wire{}, "codec"},
		{"bogus", "fast", Wire{}, "codec"},
		{"S2", "exact", Wire{}, "codec"},
	}
	for _, c := range cases {
		got, err := ParseWire(c.name, c.reduce)
		var fe *trainer.FieldError
		if c.field != "" {
			if !errors.As(err, &fe) || fe.Field != c.field || fe.Value != c.name {
				t.Errorf("%q/%s: got %v, want a FieldError for %s", c.name, c.reduce, err, c.field)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q/%s: got %+v, %v; want %+v", c.name, c.reduce, got, err, c.want)
		}
	}
	if s := (Wire{Exact: collective.CodecS2, Lossy: collective.CodecFP16}).Static(); s != collective.CodecFP16 {
		t.Errorf("static codec of fp16: %s", s)
	}
	if s := (Wire{Exact: collective.CodecNone}).Static(); s != collective.CodecNone {
		t.Errorf("static codec of none: %s", s)
	}
}

// A job file is decoded strictly over the defaults, naming file, line and
// key; what it does not set keeps its default.
func TestDecode(t *testing.T) {
	j := Default()
	lines := map[string]int{}
	text := "data:\n  train: a.parquet\nout: runs/x\nbatch: 64\ncodec: zstd\n"
	if err := Decode("job.yaml", []byte(text), j, lines); err != nil {
		t.Fatal(err)
	}
	if j.Data.Train != "a.parquet" || j.Out != "runs/x" || j.Batch != 64 || j.Codec != "zstd" || j.LR != trainer.DefaultConfig().LR {
		t.Errorf("decoded %+v", j)
	}
	if lines["batch"] != 4 || lines["codec"] != 5 {
		t.Errorf("lines %v", lines)
	}
	for text, key := range map[string]string{
		"batch: 1.5\n":                 "batch",
		"bogus: 1\n":                   "bogus",
		"flip_rates: {rho01: 0.1}\n":   "flip_rates",
		"data: {train: a, extra: b}\n": "data.extra",
		"batch: 3\nbatch: 4\n":         "batch",
	} {
		err := Decode("job.yaml", []byte(text), Default(), nil)
		var se *strictyaml.Error
		if !errors.As(err, &se) || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "job.yaml line") {
			t.Errorf("%q: got %v, want an error naming job.yaml and %s", text, err, key)
		}
	}
	if err := Decode("job.yaml", make([]byte, MaxFileSize+1), Default(), nil); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized: %v", err)
	}
	bad := Default()
	bad.Codec = "int8"
	var fe *trainer.FieldError
	if err := bad.Validate(); !errors.As(err, &fe) || fe.Field != "codec" {
		t.Errorf("int8 in exact mode: %v", err)
	}
}

// A job survives its trip through a coordinator job spec unchanged, in
// both of the spec's forms; an empty spec is ErrNoConfig.
func TestConfigRoundTrip(t *testing.T) {
	j := Default()
	j.Data = DataSpec{Train: "t.safetensors", Val: "v.parquet"}
	j.Out, j.Codec, j.Reduce, j.Batch, j.Hidden = "runs/r", "fp16", "fast", 128, []int{32, 8}
	raw, err := EncodeConfig(j)
	if err != nil {
		t.Fatal(err)
	}
	var text string
	if err := json.Unmarshal(raw, &text); err != nil || !strings.Contains(text, "codec: fp16") {
		t.Fatalf("a spec's config is the job's YAML as a JSON string: %s (%v)", raw, err)
	}
	back, err := DecodeConfig(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(j, back) {
		t.Errorf("round trip:\n%+v\n%+v", j, back)
	}
	obj, err := DecodeConfig(json.RawMessage(`{"data": {"train": "t"}, "batch": 3}`), nil)
	if err != nil || obj.Batch != 3 || obj.Data.Train != "t" {
		t.Errorf("JSON object: %+v %v", obj, err)
	}
	for _, raw := range []string{"", "null", "  "} {
		if _, err := DecodeConfig(json.RawMessage(raw), nil); !errors.Is(err, ErrNoConfig) {
			t.Errorf("%q: %v", raw, err)
		}
	}
	if _, err := DecodeConfig(json.RawMessage(`[1]`), nil); err == nil || errors.Is(err, ErrNoConfig) {
		t.Errorf("an array: %v", err)
	}
}

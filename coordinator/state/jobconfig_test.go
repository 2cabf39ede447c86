package state

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// yamlConfig wraps a job file's text the way the CLI's submit does.
func yamlConfig(t *testing.T, text string) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(text)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A submitted job whose training settings no worker could run is refused
// by the coordinators at submit time, naming the field, before any worker
// sees it: a model too large to allocate, an integer that is not one, flip
// rates with one rate missing.
func TestSubmitRefusesBadJobConfig(t *testing.T) {
	cases := []struct {
		name, config, field, want string
	}{
		{"huge hidden", "data: {train: d.safetensors}\nhidden: [1000000000]\n", "config.hidden", "268435456"},
		{"huge hidden (JSON object)", `{"hidden": [1000000000]}`, "config.hidden", "268435456"},
		{"hidden 0", "hidden: [0]\n", "config.hidden[0]", "want 1.."},
		{"batch 1.5", "batch: 1.5\n", "config.batch", "1.5 is not an integer"},
		{"batch 0", "batch: 0\n", "config.batch", "want 1.."},
		{"batch x widths", "batch: 1048576\nhidden: [4096]\n", "config.batch", "activations"},
		{"threads -1", "threads: -1\n", "config.threads", "want 0"},
		{"lr inf", "lr: .inf\n", "config.lr", "finite"},
		{"flip_rates half", "flip_rates: {rho01: 0.1}\n", "config.flip_rates", "rho10 missing"},
		{"method", "method: bogus\n", "config.method", "bogus"},
		{"shards differ", "shards: 16\n", "shards", "16"},
		{"not YAML", "batch: [unclosed\n", "config", "line"},
		{"not a string or object", `[1, 2]`, "config", "JSON string"},
	}
	for _, c := range cases {
		raw := json.RawMessage(c.config)
		if !strings.HasPrefix(c.config, "{") && !strings.HasPrefix(c.config, "[") {
			raw = yamlConfig(t, c.config)
		}
		spec := JobSpec{ID: "j", Shards: 64, MinWorkers: 1, Config: raw}
		err := spec.Validate()
		if err == nil || !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), `field "`+c.field+`"`) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want field %q and %q", c.name, err, c.field, c.want)
			continue
		}
		s := &State{}
		if _, err := s.Apply(Command{Op: OpSubmit, Job: &spec}); !errors.Is(err, ErrInvalidSpec) || s.Job != nil {
			t.Errorf("%s: apply: %v, job %v", c.name, err, s.Job)
		}
	}
	// Good configs pass: the CLI's YAML, a JSON object, none at all.
	for _, raw := range []json.RawMessage{
		yamlConfig(t, "data: {train: d.safetensors}\nout: runs/x\ncodec: s2\nmethod: naive\nbatch: 64\nhidden: [256, 64]\nflip_rates: {rho01: 0.1, rho10: 0.2}\nshards: 64\n"),
		json.RawMessage(`{"lr":0.001}`), nil, json.RawMessage(`null`),
	} {
		spec := JobSpec{ID: "j", Shards: 64, MinWorkers: 1, Config: raw}
		if err := spec.Validate(); err != nil {
			t.Errorf("%s: %v", raw, err)
		}
	}
	big := JobSpec{ID: "j", Shards: 64, MinWorkers: 1, Config: yamlConfig(t, "out: "+strings.Repeat("x", MaxConfigBytes))}
	if err := big.Validate(); err == nil || !strings.Contains(err.Error(), `field "config"`) {
		t.Errorf("oversized config: %v", err)
	}
}

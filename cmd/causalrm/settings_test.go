package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/causalrm/causalrm/nn"
)

// resolveArgs resolves a job from train's job flags, without training.
func resolveArgs(t *testing.T, args ...string) (*Job, error) {
	t.Helper()
	cmd := &cobra.Command{Use: "train"}
	var f jobFlags
	addJobFlags(cmd, &f, true)
	if err := cmd.ParseFlags(args); err != nil {
		return nil, err
	}
	return resolveJob(cmd, &f)
}

func writeJob(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A job file is decoded strictly: a value that is not of its key's type, an
// unknown or repeated key, an empty value or a second document is refused,
// and the message names the file, the line and the key.
func TestJobFileStrict(t *testing.T) {
	head := "data: {train: d.safetensors}\nout: runs/x\nmethod: naive\n"
	cases := []struct{ body, want string }{
		{"batch: 1.5\n", "job.yaml line 4: batch: 1.5 is not an integer"},
		{"batch: 1e3\n", "line 4: batch: 1e3 is not an integer"},
		{"batch: \"64\"\n", `line 4: batch: "64" is not an integer`},
		{"batch:\n", "line 4: batch: no value"},
		{"batch: 99999999999999999999\n", "line 4: batch: 99999999999999999999 is out of range"},
		{"seed: -1\n", "line 4: seed: -1 is out of range"},
		{"max_epochs: 2.0\n", "line 4: max_epochs: 2.0 is not an integer"},
		{"hidden: [256, 6.4]\n", "line 4: hidden[1]: 6.4 is not an integer"},
		{"hidden: 256\n", "line 4: hidden: 256 is not a list"},
		{"hidden:\n", "line 4: hidden: no value"},
		{"lr: fast\n", "line 4: lr: fast is not a number"},
		{"risk: clamped\n", "line 4: risk: clamped: want nonnegative (the default) or plain"},
		{"imputation: exact\n", "line 4: imputation: exact: want clean (the default) or noisy"},
		{"ema: 1\n", "line 4: ema: 1: want in [0,1)"},
		{"reward_models: 17\n", "line 4: reward_models: 17: want 1..16"},
		{"batchsize: 64\n", `line 4: unknown key "batchsize" (did you mean batch?)`},
		{"max-epochs: 3\n", `unknown key "max-epochs" (did you mean max_epochs?)`},
		{"data: {train: a, trian: b}\n", `unknown key "data.trian" (did you mean data.train?)`},
		{"batch: 64\nbatch: 128\n", "line 5: batch: given twice (first at line 4)"},
		{"method: bogus\n", `line 4: method: unknown method "bogus"`},
		{"---\nbatch: 3\n", "a second YAML document"},
		{"data: [unclosed\n", "job.yaml line"},
	}
	for _, c := range cases {
		text := head + c.body
		if strings.HasPrefix(c.body, "data:") || strings.HasPrefix(c.body, "method:") {
			text = "out: runs/x\nseed: 1\nlr: 0.001\n" + c.body // the body on line 4 still
		}
		_, err := resolveArgs(t, "--config", writeJob(t, text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.body, err, c.want)
		}
	}
	// The README's example and the job.yaml train writes are accepted.
	job, err := resolveArgs(t, "--config", writeJob(t, readmeJob))
	if err != nil {
		t.Fatal(err)
	}
	if job.Batch != 512 || job.FlipRates == nil || job.FlipRates.Rho10 != 0.2 || len(job.Hidden) != 2 {
		t.Fatalf("README job decoded as %+v", job.Config)
	}
	job.Progress = nil
	p := filepath.Join(t.TempDir(), "job.yaml")
	if err := writeYAML(p, job); err != nil {
		t.Fatal(err)
	}
	again, err := resolveArgs(t, "--config", p)
	if err != nil {
		t.Fatalf("train's own job.yaml refused: %v", err)
	}
	if again.Batch != job.Batch || again.Method != job.Method || again.Out != job.Out {
		t.Fatalf("round trip changed the job: %+v", again.Config)
	}
}

const readmeJob = `data: {train: runs/data.safetensors}   # val:, test: for separate files
out: runs/demo
method: causalrm-dr
seed: 1
batch: 512
lr: 0.0005
max_epochs: 600
patience: 30
hidden: [256, 64]
reduce: exact          # or fast
propensity: learn      # or given (use the data's p column)
flip_rates: {rho01: 0.1, rho10: 0.2}   # optional: known rates skip the noise stage
monitor: val           # reward-stage early stopping: val estimator, or train loss
`

// flip_rates with one rate is refused (it used to set the other to 0).
func TestJobFileFlipRatesNeedBoth(t *testing.T) {
	for body, want := range map[string]string{
		"flip_rates: {rho01: 0.1}\n": "flip_rates: rho10 missing",
		"flip_rates: {rho10: 0.1}\n": "flip_rates: rho01 missing",
		"flip_rates: {}\n":           "flip_rates: rho01 missing",
	} {
		_, err := resolveArgs(t, "--config", writeJob(t, "data: {train: d.safetensors}\n"+body))
		if err == nil || !strings.Contains(err.Error(), "job.yaml line 2: "+want) {
			t.Errorf("%q: got %v, want %q", body, err, want)
		}
	}
	job, err := resolveArgs(t, "--config", writeJob(t, "data: {train: d.safetensors}\nflip_rates: {rho01: 0.1, rho10: 0}\n"))
	if err != nil || job.FlipRates == nil || job.FlipRates.Rho01 != 0.1 || job.FlipRates.Rho10 != 0 {
		t.Fatalf("both rates: %v %+v", err, job)
	}
}

// Negative counts and unknown codecs are refused naming the flag, before
// anything runs (--workers -1 used to train in this process).
func TestFlagsRefusedByName(t *testing.T) {
	nope := filepath.Join(t.TempDir(), "nope.safetensors")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"train", "--data", nope, "--workers", "-1"}, "--workers -1: want >= 0"},
		{[]string{"train", "--data", nope, "--threads", "-1"}, "--threads -1: want 0"},
		{[]string{"train", "--data", nope, "--codec", "bogus"}, `--codec bogus: want none, s2, zstd`},
		{[]string{"train", "--data", nope, "--codec", "s2"}, "--codec s2 is the wire codec between worker processes: it needs --workers"},
		{[]string{"train", "--data", nope, "--batch", "0"}, "--batch 0: want 1..1048576"},
		{[]string{"train", "--data", nope, "--batch", "1.5"}, `--batch "1.5": want an integer`},
		{[]string{"train", "--data", nope, "--hidden", "64,x"}, `--hidden "64,x": want integers separated by commas`},
		{[]string{"train", "--data", nope, "--hidden", "0"}, "--hidden 0: hidden[0] = 0: want 1..65536"},
		{[]string{"train", "--data", nope, "--lr", "NaN"}, "--lr NaN: want a finite value > 0"},
		{[]string{"train", "--data", nope, "--max-epochs", "0"}, "--max-epochs 0: want 1.."},
		{[]string{"train", "--data", nope, "--progress-every", "0"}, "--progress-every 0: want >= 1"},
		{[]string{"train", "--data", nope, "--flip-rates", "rho01=0.1"}, `--flip-rates "rho01=0.1": want RHO01,RHO10 like 0.1,0.2`},
		{[]string{"train", "--data", nope, "--flip-rates", "0.1,x"}, `--flip-rates "0.1,x": want RHO01,RHO10 like 0.1,0.2 ("x" is not a number)`},
		{[]string{"train", "--data", nope, "--flip-rates", "0.6,0.5"}, "--flip-rates 0.6,0.5: want rho01, rho10 >= 0 with rho01 + rho10 < 1"},
		{[]string{"train", "--data", nope, "--method", "bogus"}, `--method "bogus": want one of naive, ips`},
		{[]string{"worker", "--data", nope, "--threads", "-2", "--peers", "127.0.0.1:1"}, "--threads -2"},
		{[]string{"compare", "--data", nope, "--threads", "-2"}, "--threads -2"},
		{[]string{"worker", "--data", nope, "--peers", "127.0.0.1:1", "--codec", "bogus"}, `--codec bogus: want none, s2, zstd`},
		{[]string{"worker", "--coordinators", "127.0.0.1:1", "--batch", "64", "--hidden", "8"}, "--batch, --hidden: an elastic worker (--coordinators or --registry) takes its job from the coordinators"},
		{[]string{"eval", "--model", nope, "--data", nope, "--threads", "-1"}, "--threads -1: want 0"},
		{[]string{"eval", "--model", nope, "--data", nope, "--split", "bogus"}, `--split "bogus": want train, val or test`},
	}
	for _, c := range cases {
		out, err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q\n%s", c.args, err, c.want, out)
		}
		if err != nil && strings.Contains(err.Error(), "strconv.") {
			t.Errorf("%v: the message names Go's parser: %v", c.args, err)
		}
	}
}

// Unknown flags and commands get the nearest known name.
func TestUnknownFlagSuggestion(t *testing.T) {
	for args, want := range map[string]string{
		"train --learning-rate 0.1": "unknown flag --learning-rate for causalrm train (did you mean --lr?)",
		"train --max-epoch 3":       "(did you mean --max-epochs?)",
		"train --batch-size 3":      "(did you mean --batch?)",
		"simulate --row 5":          "(did you mean --rows?)",
		"trian":                     "Did you mean this?\n\ttrain",
	} {
		_, err := run(t, strings.Fields(args)...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", args, err, want)
		}
	}
}

// simulate: an explicit 0 that sim would read as "the default" is refused
// with the flag's range; sim's messages name flags; the extension of --out
// picks the writer.
func TestSimulateFlagsAndFormats(t *testing.T) {
	dir := t.TempDir()
	small := []string{"simulate", "--rows", "100", "--test-rows", "20", "--dim", "4", "--latent", "2"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--obs-rate", "0"}, "--obs-rate 0: want in (0,1]"},
		{[]string{"--levels", "0"}, "--levels 0: want >= 2"},
		{[]string{"--rating-noise", "0"}, "--rating-noise 0: want a finite value > 0"},
		{[]string{"--latent", "16", "--dim", "8"}, "--latent 16 must be <= --dim 8"},
		{[]string{"--obs-rate", "1.5"}, "--obs-rate 1.5 must be in (0,1]"},
		{[]string{"--rho01", "0.6", "--rho10", "0.5"}, "--rho01 + --rho10 1.1 must be < 1"},
		{[]string{"--rows", "3"}, "--rows 3 must be >= 5"},
		{[]string{"--rows", "100000000", "--dim", "100000"}, "more than the limit of 2147483648"},
	} {
		args := append(append([]string{}, small...), c.args...)
		args = append(args, "--out", filepath.Join(dir, "x.safetensors"))
		_, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.args, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "sim: ") {
			t.Errorf("%v: message names the Go package: %v", c.args, err)
		}
	}
	if _, err := run(t, append(small, "--out", filepath.Join(dir, "x.csv"))...); err == nil ||
		!strings.Contains(err.Error(), "want .safetensors, .parquet, .jsonl or .jsonl.gz") {
		t.Errorf("--out x.csv: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.csv")); err == nil {
		t.Error("--out x.csv was written")
	}
	magic := map[string]func([]byte) bool{
		"d.parquet":  func(b []byte) bool { return bytes.HasPrefix(b, []byte("PAR1")) },
		"d.jsonl":    func(b []byte) bool { return json.Valid(bytes.SplitN(b, []byte("\n"), 2)[0]) },
		"d.jsonl.gz": func(b []byte) bool { return bytes.HasPrefix(b, []byte{0x1f, 0x8b}) },
		"d.safetensors": func(b []byte) bool {
			return len(b) > 9 && b[8] == '{'
		},
	}
	var sums []string
	for name, ok := range magic {
		p := filepath.Join(dir, name)
		if out, err := run(t, append(small, "--out", p)...); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		raw, _ := os.ReadFile(p)
		if !ok(raw) {
			t.Errorf("%s is not in its extension's format: % x", name, raw[:min(len(raw), 16)])
		}
		// Each format reads back as the same data.
		log, err := run(t, "train", "--data", p, "--out", filepath.Join(dir, "run-"+name), "--max-epochs", "1", "--hidden", "4", "--quiet")
		if err != nil {
			t.Fatalf("train on %s: %v\n%s", name, err, log)
		}
		for _, l := range strings.Split(log, "\n") {
			if strings.HasPrefix(l, "reward model sha256") {
				sums = append(sums, l)
			}
		}
	}
	for _, s := range sums {
		if s != sums[0] {
			t.Errorf("formats train different models: %v", sums)
		}
	}
}

// Size limits: a hidden width of 10^9 in a job file or a flag is refused
// with the parameter count and the limit (every process used to try a 72 GB
// allocation); a model within the limits for a 1-dimensional input but not
// for the data's dimension is refused once the data is loaded; a batch
// whose activations cannot fit is refused.
func TestSizeLimits(t *testing.T) {
	dir := t.TempDir()
	want := "more than the limit of 268435456 (1 GiB of float32 per copy)"
	if _, err := resolveArgs(t, "--config", writeJob(t, "data: {train: d.safetensors}\nhidden: [1000000000]\n")); err == nil ||
		!strings.Contains(err.Error(), "job.yaml line 2: hidden: [1000000000]: 3.0e9 parameters or more") || !strings.Contains(err.Error(), want) {
		t.Errorf("job file: %v", err)
	}
	if _, err := resolveArgs(t, "--data", "d.safetensors", "--hidden", "1000000000"); err == nil ||
		!strings.Contains(err.Error(), "--hidden 1000000000: 3.0e9 parameters or more") {
		t.Errorf("flag: %v", err)
	}
	if _, err := resolveArgs(t, "--data", "d.safetensors", "--batch", "1048576", "--hidden", "2048"); err == nil ||
		!strings.Contains(err.Error(), "--batch 1048576") || !strings.Contains(err.Error(), "activations") {
		t.Errorf("batch x width: %v", err)
	}
	wide := filepath.Join(dir, "wide.safetensors")
	if out, err := run(t, "simulate", "--rows", "10", "--test-rows", "5", "--dim", "4096", "--latent", "2", "--out", wide); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	_, err := run(t, "train", "--data", wide, "--out", filepath.Join(dir, "o"), "--hidden", "65536", "--quiet")
	runtime.ReadMemStats(&ms1)
	if err == nil || !strings.Contains(err.Error(), "hidden [65536] (input dimension 4096): 268566529 parameters") {
		t.Errorf("wide data: %v", err)
	}
	if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 256<<20 {
		t.Errorf("refusing the wide model allocated %d bytes", d)
	}
}

// eval refuses a model file whose JSON claims a huge shape before
// allocating it, and one whose tensors do not match its JSON.
func TestEvalRefusesHugeModelFile(t *testing.T) {
	dir := t.TempDir()
	m, err := nn.New(nn.Config{Dims: []int{4, 3, 1}, Slope: 0.01}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := nn.Save(dir, "reward", m, nil, map[string]string{"method": "naive"}); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "d.jsonl")
	var b strings.Builder
	for i := 0; i < 5; i++ {
		b.WriteString(`{"id":"r` + string(rune('0'+i)) + `","x":[1,2,3,4],"o":0}` + "\n")
	}
	os.WriteFile(data, []byte(b.String()), 0o644)
	cfg := filepath.Join(dir, "reward.json")
	if out, err := run(t, "eval", "--model", cfg, "--data", data, "--split", "train"); err != nil {
		t.Fatalf("eval of the real model: %v\n%s", err, out)
	}
	orig, _ := os.ReadFile(cfg)
	for dims, want := range map[string]string{
		"[4, 1000000000, 1]": "hidden [1000000000] (input dimension 4): 6.0e9 parameters, more than the limit of 268435456",
		"[4, 60000, 1]":      `tensor "0.weight" has shape [3 4]`,
	} {
		os.WriteFile(cfg, []byte(strings.Replace(string(orig), `"dims": [`, `"dims": `+dims+`, "was": [`, 1)), 0o644)
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		_, err := run(t, "eval", "--model", cfg, "--data", data, "--split", "train")
		runtime.ReadMemStats(&ms1)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("dims %s: got %v, want %q", dims, err, want)
		}
		if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 64<<20 {
			t.Errorf("dims %s: allocated %d bytes before refusing", dims, d)
		}
	}
}

// Messages reachable from the CLI name flags and keys, not Go identifiers.
func TestMessagesNameNoGoIdentifiers(t *testing.T) {
	dir := t.TempDir()
	noval := filepath.Join(dir, "noval.jsonl")
	var b strings.Builder
	for i := 0; i < 20; i++ {
		split := "train"
		if i >= 15 {
			split = "test"
		}
		b.WriteString(`{"id":"r` + strings.Repeat("i", i+1) + `","x":[1,2],"o":1,"y":1,"r":1,"split":"` + split + `"}` + "\n")
	}
	os.WriteFile(noval, []byte(b.String()), 0o644)
	_, err := run(t, "train", "--data", noval, "--out", filepath.Join(dir, "o"))
	if err == nil || !strings.Contains(err.Error(), "--val") {
		t.Errorf("no validation rows: %v", err)
	}
	for _, bad := range []string{"LoadSpec", "AllowEmptyVal", "strconv.", "sim: ", "main.Job", "trainer.Config"} {
		if err != nil && strings.Contains(err.Error(), bad) {
			t.Errorf("message names %q: %v", bad, err)
		}
	}
	_, err = resolveArgs(t, "--config", writeJob(t, "bogus: 1\n"))
	if err == nil || strings.Contains(err.Error(), "main.Job") || strings.Contains(err.Error(), "not found in type") {
		t.Errorf("unknown key message: %v", err)
	}
}

// The job file's codec is checked like --codec, and is the job's codec
// (train --workers used to ignore it); --codec given overrides it.
func TestJobFileCodec(t *testing.T) {
	resolve := func(args ...string) (string, *Job, error) {
		cmd := &cobra.Command{Use: "train"}
		var f jobFlags
		var codec string
		addJobFlags(cmd, &f, true)
		cmd.Flags().StringVar(&codec, "codec", "none", "")
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		job, err := resolveJob(cmd, &f)
		return codec, job, err
	}
	for body, want := range map[string]string{
		"codec: bogus\n": `job.yaml line 2: codec: bogus: want none, s2, zstd`,
		"codec: fp16\n":  "job.yaml line 2: codec: fp16: a lossy codec needs reduce fast",
	} {
		if _, _, err := resolve("--config", writeJob(t, "data: {train: d.safetensors}\n"+body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", body, err, want)
		}
	}
	p := writeJob(t, "data: {train: d.safetensors}\ncodec: zstd\n")
	if _, job, err := resolve("--config", p); err != nil || job.Codec != "zstd" {
		t.Errorf("the file's codec: %v", err)
	}
	if codec, job, err := resolve("--config", p, "--codec", "s2"); err != nil || codec != "s2" || job.Codec != "s2" {
		t.Errorf("--codec over the file's: %q %v", codec, err)
	}
}

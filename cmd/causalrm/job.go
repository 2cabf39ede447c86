package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/internal/strictyaml"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/trainer"
)

// Job is a job file (--config job.yaml): the data, the output directory and
// every training setting. Flags given on the command line override it.
type Job struct {
	Data DataSpec `yaml:"data"`
	Out  string   `yaml:"out"`
	// Codec is the all-reduce wire codec of a multi-worker job.
	Codec          string `yaml:"codec,omitempty"`
	trainer.Config `yaml:",inline"`
}

// DataSpec names the data files; one file may hold every split.
type DataSpec struct {
	Train string `yaml:"train"`
	Val   string `yaml:"val"`
	Test  string `yaml:"test"`
}

type jobFlags struct {
	config, data, val, test, out string
	method, reduce, propensity   string
	monitor, flipRates           string
	seed                         uint64
	batch, maxEpochs, patience   int
	shards, threads, every       int
	lr, wd, clip, quantile       float64
	hidden                       []int
	quiet, force, nonneg         bool
}

func addJobFlags(cmd *cobra.Command, f *jobFlags, withMethod bool) {
	d := trainer.DefaultConfig()
	fs := cmd.Flags()
	fs.StringVar(&f.config, "config", "", "job file (YAML); flags given override it")
	fs.StringVar(&f.data, "data", "", "data file (.safetensors, .parquet, .jsonl); may hold train, val and test")
	fs.StringVar(&f.val, "val", "", "separate validation file")
	fs.StringVar(&f.test, "test", "", "separate clean test file")
	fs.StringVar(&f.out, "out", "", "output directory (default runs/<name>)")
	if withMethod {
		fs.StringVar(&f.method, "method", string(d.Method), "estimator: naive, ips, dr, noise, causalrm-ips, causalrm-dr")
	}
	fs.Uint64Var(&f.seed, "seed", d.Seed, "seed of initialisation and batch order")
	fs.IntVar(&f.batch, "batch", d.Batch, "global batch size")
	fs.Float64Var(&f.lr, "lr", d.LR, "Adam learning rate")
	fs.Float64Var(&f.wd, "weight-decay", d.WeightDecay, "L2 weight decay (added to the gradient, torch Adam semantics)")
	fs.IntVar(&f.maxEpochs, "max-epochs", d.MaxEpochs, "most epochs per stage")
	fs.IntVar(&f.patience, "patience", d.Patience, "early-stopping patience in epochs")
	fs.IntSliceVar(&f.hidden, "hidden", d.Hidden, "hidden layer widths")
	fs.IntVar(&f.shards, "shards", d.Shards, "virtual shards")
	fs.StringVar(&f.reduce, "reduce", d.Reduce, "exact (bit-reproducible fixed point) or fast (float32)")
	fs.IntVar(&f.threads, "threads", 0, "threads for arithmetic (0: all cores); exact results do not depend on it")
	fs.StringVar(&f.propensity, "propensity", d.Propensity, "learn the propensity model, or use the data's p column (given)")
	fs.StringVar(&f.flipRates, "flip-rates", "", "known flip rates rho01,rho10 (skips the noise stage)")
	fs.StringVar(&f.monitor, "monitor", d.Monitor, "early stopping of the reward stage on the val estimator (val) or training loss (train)")
	fs.Float64Var(&f.clip, "propensity-clip", d.Clip, "lower clip c of p_hat")
	fs.Float64Var(&f.quantile, "quantile", d.Quantile, "anchor quantile q of the flip-rate estimate")
	fs.IntVar(&f.every, "progress-every", 1, "print progress every N epochs")
	fs.BoolVar(&f.nonneg, "nonnegative", false, "experiment, not in the paper (docs/method.md): clamp the reward risk's two class parts at zero (nnPU-style)")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress output")
	fs.BoolVar(&f.force, "force", false, "replace an existing output directory")
}

// maxJobFile bounds a job file's size: settings, not data.
const maxJobFile = 1 << 20

// jobYAML is how job files (and the jobs the coordinators hold) are
// decoded: strictly, and flip_rates with both of its keys.
func jobYAML(lines map[string]int) strictyaml.Options {
	return strictyaml.Options{
		Required: map[reflect.Type][]string{reflect.TypeFor[causal.Rates](): {"rho01", "rho10"}},
		Lines:    lines,
	}
}

// decodeJobFile decodes a job file's text over job (which holds the
// defaults): unknown keys, repeated keys, a 1.5 where an integer goes and
// a flip_rates without both rates are refused, naming the line and key.
func decodeJobFile(name string, raw []byte, job *Job, lines map[string]int) error {
	if len(raw) > maxJobFile {
		return fmt.Errorf("%s: %d bytes, more than the limit of %d for a job file", name, len(raw), maxJobFile)
	}
	return strictyaml.Decode(name, raw, job, jobYAML(lines))
}

// readJobFile reads a job file of at most maxJobFile bytes.
func readJobFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if fi.Size() > maxJobFile {
		return nil, fmt.Errorf("%s: %d bytes, more than the limit of %d for a job file", path, fi.Size(), maxJobFile)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxJobFile+1))
}

// resolveJob merges defaults, the job file and the flags given.
func resolveJob(cmd *cobra.Command, f *jobFlags) (*Job, error) {
	var raw []byte
	if f.config != "" {
		var err error
		if raw, err = readJobFile(f.config); err != nil {
			return nil, err
		}
	}
	return resolveJobText(cmd, f, raw)
}

// resolveJobText is resolveJob with the job file's text (f.config names
// it; none when empty) already read.
func resolveJobText(cmd *cobra.Command, f *jobFlags, raw []byte) (*Job, error) {
	job := &Job{Config: trainer.DefaultConfig()}
	lines := map[string]int{}
	if f.config != "" {
		if err := decodeJobFile(f.config, raw, job, lines); err != nil {
			return nil, err
		}
	}
	ch := cmd.Flags().Changed
	set := func(name string, apply func()) {
		if ch(name) {
			apply()
		}
	}
	set("data", func() { job.Data.Train = f.data })
	set("val", func() { job.Data.Val = f.val })
	set("test", func() { job.Data.Test = f.test })
	set("out", func() { job.Out = f.out })
	var err error
	if cmd.Flags().Lookup("method") != nil && (ch("method") || f.config == "") {
		if job.Method, err = causal.ParseMethod(f.method); err != nil {
			return nil, fmt.Errorf("--method %q: want one of %s", f.method, methodList())
		}
	}
	set("seed", func() { job.Seed = f.seed })
	set("batch", func() { job.Batch = f.batch })
	set("lr", func() { job.LR = f.lr })
	set("weight-decay", func() { job.WeightDecay = f.wd })
	set("max-epochs", func() { job.MaxEpochs = f.maxEpochs })
	set("patience", func() { job.Patience = f.patience })
	set("hidden", func() { job.Hidden = f.hidden })
	set("shards", func() { job.Shards = f.shards })
	set("reduce", func() { job.Reduce = f.reduce })
	set("threads", func() { job.Threads = f.threads })
	set("propensity", func() { job.Propensity = f.propensity })
	set("monitor", func() { job.Monitor = f.monitor })
	set("propensity-clip", func() { job.Clip = f.clip })
	set("quantile", func() { job.Quantile = f.quantile })
	set("nonnegative", func() { job.NonNegative = f.nonneg })
	if ch("flip-rates") {
		r, err := parseFlipRates(f.flipRates)
		if err != nil {
			return nil, err
		}
		job.FlipRates = r
	}
	if err := resolveCodec(cmd, f.config, lines, job); err != nil {
		return nil, err
	}
	if f.every < 1 {
		return nil, fmt.Errorf("--progress-every %d: want >= 1 (epochs between progress lines)", f.every)
	}
	job.ProgressEach = f.every
	if !f.quiet {
		job.Progress = cmd.ErrOrStderr()
	}
	if job.Data.Train == "" {
		return nil, fmt.Errorf("no data: give --data FILE or data.train in the job file")
	}
	if err := job.Config.Validate(); err != nil {
		return nil, settingErr(cmd, f.config, lines, err)
	}
	return job, nil
}

// parseFlipRates reads --flip-rates RHO01,RHO10.
func parseFlipRates(s string) (*causal.Rates, error) {
	bad := func(why string) error {
		return fmt.Errorf("--flip-rates %q: want RHO01,RHO10 like 0.1,0.2%s", s, why)
	}
	parts := strings.Split(s, ",")
	if len(parts) != 2 {
		return nil, bad("")
	}
	var v [2]float64
	for i, p := range parts {
		x, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil {
			return nil, bad(fmt.Sprintf(" (%q is not a number)", strings.TrimSpace(p)))
		}
		v[i] = x
	}
	return &causal.Rates{Rho01: v[0], Rho10: v[1]}, nil
}

func methodList() string {
	var ms []string
	for _, m := range causal.AllMethods() {
		ms = append(ms, string(m))
	}
	return strings.Join(ms, ", ")
}

// settingErr says which flag or job-file key a config error is about: the
// flag when it was given (flags override the file), else the file's line.
func settingErr(cmd *cobra.Command, config string, lines map[string]int, err error) error {
	var fe *trainer.FieldError
	if !errors.As(err, &fe) {
		return err
	}
	base, _, _ := strings.Cut(fe.Field, "[")
	if fl := cmd.Flags().Lookup(strings.ReplaceAll(base, "_", "-")); fl != nil && fl.Changed {
		v := strings.Trim(fl.Value.String(), "[]")
		if fe.Field != base {
			return fmt.Errorf("--%s %s: %s = %v: %s", fl.Name, v, fe.Field, fe.Value, fe.Want)
		}
		return fmt.Errorf("--%s %s: %s", fl.Name, v, fe.Want)
	}
	if config != "" {
		for _, k := range []string{fe.Field, base} {
			if line, ok := lines[k]; ok {
				return fmt.Errorf("%s line %d: %s: %v: %s", config, line, fe.Field, fe.Value, fe.Want)
			}
		}
	}
	return fmt.Errorf("%s %v: %s", fe.Field, fe.Value, fe.Want)
}

// load reads the job's data, checking every row, and checks the model's
// size for the data's embedding dimension.
func (j *Job) load() (*shard.Dataset, error) {
	ds, err := shard.Load(shard.LoadSpec{Train: j.Data.Train, Val: j.Data.Val, Test: j.Data.Test})
	if err != nil {
		return nil, loadErr(err)
	}
	if err := j.Config.ValidateFor(ds.Train.D); err != nil {
		return nil, fmt.Errorf("%s (d=%d): %w", j.Data.Train, ds.Train.D, err)
	}
	return ds, nil
}

// loadErr says what to do about a missing validation or test split in the
// CLI's terms (the loader's message names its Go options).
func loadErr(err error) error {
	var re *shard.RowError
	if !errors.As(err, &re) || !errors.Is(err, shard.ErrEmptySplit) || re.Field != "" {
		return err
	}
	e := *re
	switch re.Split {
	case shard.SplitVal:
		e.Msg = "no validation rows: give a validation file with --val (data.val in a job file), or rows of split val in this file"
	case shard.SplitTest:
		e.Msg = "no test rows: give a clean test file with --test (data.test in a job file), or rows of split test in this file"
	default:
		return err
	}
	return &e
}

// checkWorkersCodec validates train's --workers and --codec, whatever else
// is given: a negative count or an unknown codec is refused, and so is a
// codec without --workers (it would be ignored).
func checkWorkersCodec(cmd *cobra.Command, workers int, codec string) error {
	if workers < 0 {
		return fmt.Errorf("--workers %d: want >= 0 (0: train in this process)", workers)
	}
	if c := collective.Codec(codec); !c.Lossless() && !c.Lossy() {
		return fmt.Errorf("--codec %q: want none, s2, zstd (exact), or fp16, int8 (lossy, with --reduce fast)", codec)
	}
	if cmd.Flags().Changed("codec") && workers == 0 && codec != string(collective.CodecNone) {
		return fmt.Errorf("--codec %s is the wire codec between worker processes: it needs --workers N", codec)
	}
	return nil
}

// checkElasticJobFlags refuses job flags given to an elastic worker: its
// job comes from the coordinators, so they would be ignored. --quiet and
// --threads are the process's own (train --workers passes them).
func checkElasticJobFlags(cmd *cobra.Command) error {
	probe := &cobra.Command{}
	addJobFlags(probe, &jobFlags{}, true)
	var given []string
	probe.Flags().VisitAll(func(fl *pflag.Flag) {
		if fl.Name != "quiet" && fl.Name != "threads" && cmd.Flags().Changed(fl.Name) {
			given = append(given, "--"+fl.Name)
		}
	})
	if len(given) > 0 {
		return fmt.Errorf("%s: an elastic worker (--coordinators or --registry) takes its job from the coordinators; give job settings to causalrm submit", strings.Join(given, ", "))
	}
	return nil
}

// resolveCodec merges the job file's codec and the command's --codec (when
// it has one): the flag, when given, is the job's codec; else the file's
// codec becomes the flag's value, so that the command uses it (train
// --workers used to ignore it). The codec must be known, and a lossy one
// needs reduce fast.
func resolveCodec(cmd *cobra.Command, config string, lines map[string]int, job *Job) error {
	fl := cmd.Flags().Lookup("codec")
	src := "--codec"
	switch {
	case fl != nil && fl.Changed:
		job.Codec = fl.Value.String()
	case job.Codec != "":
		src = "codec"
		if line, ok := lines["codec"]; ok {
			src = fmt.Sprintf("%s line %d: codec", config, line)
		}
		if fl != nil {
			if err := fl.Value.Set(job.Codec); err != nil {
				return fmt.Errorf("%s: %w", src, err)
			}
		}
	default:
		return nil
	}
	c := collective.Codec(job.Codec)
	if !c.Lossless() && !c.Lossy() {
		return fmt.Errorf("%s %q: want none, s2, zstd (exact), or fp16, int8 (lossy, with reduce fast)", src, job.Codec)
	}
	if c.Lossy() && job.Reduce != "fast" {
		return fmt.Errorf("%s %s is lossy: it needs --reduce fast (reduce: fast in a job file)", src, job.Codec)
	}
	return nil
}

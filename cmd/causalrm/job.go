package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/causalrm/causalrm/causal"
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
	fs.BoolVar(&f.nonneg, "nonnegative", false, "experiment, not in CAUSALRM.md: clamp the reward risk's two class parts at zero (nnPU-style)")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress output")
	fs.BoolVar(&f.force, "force", false, "replace an existing output directory")
}

// resolveJob merges defaults, the job file and the flags given.
func resolveJob(cmd *cobra.Command, f *jobFlags) (*Job, error) {
	job := &Job{Config: trainer.DefaultConfig()}
	if f.config != "" {
		raw, err := os.ReadFile(f.config)
		if err != nil {
			return nil, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(job); err != nil && err != io.EOF {
			return nil, fmt.Errorf("%s: %w", f.config, err)
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
			return nil, fmt.Errorf("--method: %w", err)
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
		parts := strings.Split(f.flipRates, ",")
		if len(parts) != 2 {
			return nil, fmt.Errorf("--flip-rates %q: want rho01,rho10", f.flipRates)
		}
		var r causal.Rates
		if r.Rho01, err = strconv.ParseFloat(strings.TrimSpace(parts[0]), 64); err == nil {
			r.Rho10, err = strconv.ParseFloat(strings.TrimSpace(parts[1]), 64)
		}
		if err != nil {
			return nil, fmt.Errorf("--flip-rates %q: %w", f.flipRates, err)
		}
		job.FlipRates = &r
	}
	job.ProgressEach = f.every
	if !f.quiet {
		job.Progress = cmd.ErrOrStderr()
	}
	if job.Data.Train == "" {
		return nil, fmt.Errorf("no data: give --data FILE or data.train in the job file")
	}
	if err := job.Config.Validate(); err != nil {
		return nil, err
	}
	return job, nil
}

// load reads the job's data, checking every row.
func (j *Job) load() (*shard.Dataset, error) {
	return shard.Load(shard.LoadSpec{Train: j.Data.Train, Val: j.Data.Val, Test: j.Data.Test})
}

package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/job"
	"github.com/causalrm/causalrm/trainer"
)

// Job is a job file; the job package has its schema. Flags given on the
// command line override it.
type Job = job.Job

// DataSpec names a job's data files.
type DataSpec = job.DataSpec

type jobFlags struct {
	config, data, val, test, out string
	method, reduce, propensity   string
	monitor, flipRates, risk     string
	flipEstimator, imputation    string
	flipRepeats                  int
	monitorWindow                int
	ema                          float64
	rewardModels                 int
	seed                         uint64
	batch, maxEpochs, patience   int
	shards, threads, every       int
	lr, wd, clip, quantile       float64
	hidden                       []int
	quiet, force                 bool
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
	fs.IntVar(&f.monitorWindow, "monitor-window", d.MonitorWindow, "reward stage: select the epoch by the mean of the monitored value over this many epochs ending at it (1: each epoch alone, the paper)")
	fs.Float64Var(&f.ema, "ema", d.EMA, "reward stage: evaluate, select and save a moving average of the parameters at epoch ends with this decay per epoch (0: off, the paper)")
	fs.IntVar(&f.rewardModels, "reward-models", d.RewardModelCount(), "reward models trained from different initialisations and averaged into the saved one (its hidden layers are this many times wider)")
	fs.Float64Var(&f.clip, "propensity-clip", d.Clip, "lower clip c of p_hat")
	fs.Float64Var(&f.quantile, "quantile", d.Quantile, "anchor quantile q of the flip-rate estimate (--flip-estimator anchor)")
	fs.StringVar(&f.flipEstimator, "flip-estimator", d.FlipEstimator, "flip-rate estimator: crossfit (labels of the tails of out-of-fold noise-model logits, with 95% intervals) or anchor (the paper's quantiles of the in-sample logits, which run low); docs/method.md")
	fs.IntVar(&f.flipRepeats, "flip-repeats", d.FlipRepeats, "crossfit: deals of the observed rows into folds whose out-of-fold logits are averaged (each deal trains 5 noise models; more deals, a steadier estimate)")
	fs.IntVar(&f.every, "progress-every", 1, "print progress every N epochs")
	fs.StringVar(&f.risk, "risk", d.Risk, "reward risk of noise, dr and the CausalRM estimators: nonnegative (its two class parts clamped at zero, nnPU-style) or plain (the paper's formula, unbounded below; docs/method.md)")
	fs.StringVar(&f.imputation, "imputation", d.Imputation, "causalrm-dr: impute the clean-label probability implied by the flip rates (clean) or the imputation model's noisy-label prediction (noisy, the paper); docs/method.md")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress output")
	fs.BoolVar(&f.force, "force", false, "replace an existing output directory")
}

// resolveJob merges defaults, the job file and the flags given.
func resolveJob(cmd *cobra.Command, f *jobFlags) (*Job, error) {
	var raw []byte
	if f.config != "" {
		var err error
		if raw, err = job.ReadFile(f.config); err != nil {
			return nil, err
		}
	}
	return resolveJobText(cmd, f, raw)
}

// resolveJobText is resolveJob with the job file's text (f.config names
// it; none when empty) already read.
func resolveJobText(cmd *cobra.Command, f *jobFlags, raw []byte) (*Job, error) {
	j := job.Default()
	lines := map[string]int{}
	if f.config != "" {
		if err := job.Decode(f.config, raw, j, lines); err != nil {
			return nil, err
		}
	}
	if err := applyJobFlags(cmd, f, j); err != nil {
		return nil, err
	}
	if f.every < 1 {
		return nil, fmt.Errorf("--progress-every %d: want >= 1 (epochs between progress lines)", f.every)
	}
	j.ProgressEach = f.every
	if !f.quiet {
		j.Progress = cmd.ErrOrStderr()
	}
	if j.Data.Train == "" {
		return nil, fmt.Errorf("no data: give --data FILE or data.train in the job file")
	}
	if err := j.Validate(); err != nil {
		return nil, settingErr(cmd, f.config, lines, err)
	}
	return j, nil
}

// applyJobFlags sets the job's settings from the flags given.
func applyJobFlags(cmd *cobra.Command, f *jobFlags, job *Job) error {
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
			return fmt.Errorf("--method %q: want one of %s", f.method, methodList())
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
	set("monitor-window", func() { job.MonitorWindow = f.monitorWindow })
	set("ema", func() { job.EMA = f.ema })
	set("reward-models", func() { job.RewardModels = f.rewardModels })
	set("propensity-clip", func() { job.Clip = f.clip })
	set("quantile", func() { job.Quantile = f.quantile })
	set("flip-estimator", func() { job.FlipEstimator = f.flipEstimator })
	set("flip-repeats", func() { job.FlipRepeats = f.flipRepeats })
	set("risk", func() { job.Risk = f.risk })
	set("imputation", func() { job.Imputation = f.imputation })
	// --codec is not a job flag of every command; where there is one and
	// it was given, it is the job's codec (Validate checks it).
	if fl := cmd.Flags().Lookup("codec"); fl != nil && fl.Changed {
		job.Codec = fl.Value.String()
	}
	if ch("flip-rates") {
		r, err := parseFlipRates(f.flipRates)
		if err != nil {
			return err
		}
		job.FlipRates = r
	}
	return nil
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

// checkElasticJobFlags refuses job flags given to an elastic worker: its
// job comes from the coordinators, so they would be ignored. --quiet,
// --threads and --progress-every are the process's own (train --workers
// passes them).
func checkElasticJobFlags(cmd *cobra.Command) error {
	probe := &cobra.Command{}
	addJobFlags(probe, &jobFlags{}, true)
	var given []string
	probe.Flags().VisitAll(func(fl *pflag.Flag) {
		if fl.Name != "quiet" && fl.Name != "threads" && fl.Name != "progress-every" && cmd.Flags().Changed(fl.Name) {
			given = append(given, "--"+fl.Name)
		}
	})
	if len(given) > 0 {
		return fmt.Errorf("%s: an elastic worker (--coordinators or --registry) takes its job from the coordinators; give job settings to causalrm submit", strings.Join(given, ", "))
	}
	return nil
}

package main

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/report"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/trainer"
)

// reportData lists the data's splits for a report: the file each came
// from, its rows and its rows with feedback.
func reportData(ds *shard.Dataset) []report.Split {
	if ds == nil {
		return nil
	}
	var out []report.Split
	for _, s := range []*shard.Split{ds.Train, ds.Val, ds.Test} {
		if s == nil {
			continue
		}
		sp := report.Split{Name: s.Name, File: s.Source, Rows: s.N, Observed: s.Observed()}
		if s == ds.Test && s.R != nil {
			sp.Clean = true
		}
		out = append(out, sp)
	}
	return out
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// reportSettings lists the settings a report shows, by their flag names;
// the method and the seed only when withRun (a comparison has several).
func reportSettings(cfg trainer.Config, withRun bool) []report.Setting {
	var out []report.Setting
	add := func(name, value, meaning string) {
		out = append(out, report.Setting{Name: name, Value: value, Meaning: meaning})
	}
	if withRun {
		add("method", string(cfg.Method), "the reward stage's estimator")
	}
	risk := "the paper's formula, unbounded below"
	if cfg.Risk == trainer.RiskNonNegative {
		risk = "the reward risk's two class parts clamped at zero"
	}
	add("risk", cfg.Risk, risk)
	reduce := "float32 sums, fast"
	if cfg.Reduce == "exact" {
		reduce = "fixed-point sums: the same bits on any threads, workers or device"
	}
	add("reduce", cfg.Reduce, reduce)
	add("batch", strconv.Itoa(cfg.Batch), "rows per training step")
	add("lr", strconv.FormatFloat(cfg.LR, 'g', -1, 64), "Adam learning rate")
	add("hidden", joinInts(cfg.Hidden), "hidden layer widths of every model")
	add("max-epochs", strconv.Itoa(cfg.MaxEpochs), "most epochs per stage")
	add("patience", strconv.Itoa(cfg.Patience), "epochs without improvement before a stage stops")
	if withRun {
		add("seed", strconv.FormatUint(cfg.Seed, 10), "initial weights and batch order")
	}
	prop := "a propensity model is trained"
	if cfg.Propensity == "given" {
		prop = "the data's p column"
	}
	add("propensity", cfg.Propensity, prop)
	if cfg.FlipRates != nil {
		add("flip-rates", fmt.Sprintf("%g,%g", cfg.FlipRates.Rho01, cfg.FlipRates.Rho10), "given: the noise stage is skipped")
	}
	mon := "the reward stage stops early on the validation estimate"
	if cfg.Monitor == "train" {
		mon = "the reward stage stops early on its training loss"
	}
	add("monitor", cfg.Monitor, mon)
	if w := cfg.MonitorWindow; w > 1 {
		add("monitor-window", strconv.Itoa(w), "the reward epoch is selected by the mean of this many epochs' estimates ending at it")
	}
	if k := cfg.RewardModelCount(); k > 1 {
		add("reward-models", strconv.Itoa(k), "reward models from different initialisations, averaged into the saved one")
	}
	ema := "the reward model is the kept epoch's own parameters"
	if cfg.EMA > 0 {
		ema = "the reward model is a moving average of its epoch-end parameters, with this decay per epoch"
	}
	add("ema", strconv.FormatFloat(cfg.EMA, 'g', -1, 64), ema)
	if !withRun || cfg.Method == causal.CausalDR {
		imp := "causalrm-dr imputes the clean-label probability the flip rates imply"
		if cfg.Imputation == trainer.ImputationNoisy {
			imp = "causalrm-dr imputes the imputation model's noisy-label prediction (the paper)"
		}
		add("imputation", cmp.Or(cfg.Imputation, trainer.ImputationClean), imp)
	}
	return out
}

// baselineCommand is the command line that trains the naive baseline
// beside a run's method on the same data, settings and seed: compare
// with the run's own job.yaml. job.yaml names the data as given, so where
// a path is relative the command starts in this process's directory.
func baselineCommand(job *Job) string {
	out := job.Out
	if out == "" {
		out = "RUN"
	}
	cmd := fmt.Sprintf("causalrm compare --config %s --methods naive,%s --seeds 1 --out %s",
		shellQuote(filepath.Join(out, "job.yaml")), job.Method, shellQuote(filepath.Clean(out)+"-naive"))
	for _, p := range append(job.Inputs(), out) {
		if !filepath.IsAbs(p) {
			if wd, err := os.Getwd(); err == nil {
				return "cd " + shellQuote(wd) + " && " + cmd
			}
			break
		}
	}
	return cmd
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

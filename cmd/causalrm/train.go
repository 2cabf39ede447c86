package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/internal/atomicfile"
	"github.com/causalrm/causalrm/job"
	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/report"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/trainer"
)

func trainCmd() *cobra.Command {
	var f jobFlags
	var workers int
	var codec string
	var dev deviceFlags
	var statusAddr string
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train a CausalRM reward model (all stages) and write it with its metrics and report",
		Long: `Runs every stage the estimator needs (propensity, noise with flip-rate
estimation, imputation) and then the reward model, each with early stopping,
and writes to the output directory:

  reward.safetensors, reward.json          the reward model (sigmoid of its logit is the reward)
  <stage>.safetensors, <stage>.json        the auxiliary models
  metrics.json                             test metrics, flip rates, propensity quality, epochs
  report.md, *.png                         training curves and diagnostics
  job.yaml                                 the resolved settings

With --reduce exact (the default) the model file is bit-identical for the same
seed and data whatever --threads is, and whatever --workers is: an embedded
coordinator and N worker processes (the elastic runtime of a multi-node job)
sum their integer gradients with a ring all-reduce and train the same bits;
a worker that dies or is paused past the heartbeat timeout is replaced by a
new worker process (up to 3 times per worker), which joins with a live
peer's state, and the bits stay the same.
With --reduce fast and a lossy codec the workers form a static ring, each
holding the embeddings of its virtual shards only. Outputs appear all at once when training
succeeds; a failed or interrupted run writes nothing.

With --device cuda (or cuda:N) the model's passes run on a CUDA GPU, found at
run time (the CUDA driver and cuBLAS; --cuda-libs or $CAUSALRM_CUDA_LIBS name
a directory to search too). In exact mode the GPU trains the CPU's bits; in
fast mode it differs in the last bits, and --tf32 trades more precision for
speed. With --workers, --device may list one device per worker, assigned in
turn: --workers 4 --device cuda:0,cuda:1 alternates two GPUs, --workers 2
--device cuda,cpu gives worker 0 the GPU and worker 1 the CPU.`,
		Example: `  causalrm simulate --out data.safetensors
  causalrm train --data data.safetensors --out runs/demo
  causalrm train --config job.yaml --method causalrm-dr --seed 3
  causalrm train --data data.safetensors --out runs/gpu --device cuda
  causalrm train --data data.safetensors --out runs/two --workers 2 --device cuda:0,cuda:1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if workers < 0 {
				return fmt.Errorf("--workers %d: want >= 0 (0: train in this process)", workers)
			}
			// A typo in --device fails before anything else.
			if workers <= 0 && strings.Contains(dev.device, ",") {
				return fmt.Errorf("--device %q: a list of devices (one per worker, in turn) needs --workers", dev.device)
			}
			devs, err := assignDevices(dev.device, max(workers, 1))
			if err != nil {
				return err
			}
			job, err := resolveJob(cmd, &f)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("codec") && workers == 0 && codec != string(collective.CodecNone) {
				return fmt.Errorf("--codec %s is the wire codec between worker processes: it needs --workers N", codec)
			}
			if job.Out == "" {
				job.Out = filepath.Join("runs", fmt.Sprintf("%s-seed%d", job.Method, job.Seed))
			}
			// Refuse an --out that replacing would destroy data before
			// anything starts (prepareOut checks again when it stages).
			if err := checkOut(job.Out, f.force, jobInputs(job, f.config)); err != nil {
				return err
			}
			if err := checkStatusAddr(statusAddr, workers, job.Reduce); err != nil {
				return err
			}
			if workers > 0 {
				return trainWorkers(cmd, job, workers, &dev, devs, f.force, statusAddr)
			}
			runners, closeDev, err := dev.open()
			if err != nil {
				return err
			}
			defer closeDev()
			job.Runners = runners
			return runTrain(cmd.Context(), job, f.force, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	addJobFlags(cmd, &f, true)
	cmd.Flags().IntVar(&workers, "workers", 0, "train with N worker processes on 127.0.0.1 (ring all-reduce); 0: in this process")
	cmd.Flags().StringVar(&statusAddr, "status-addr", "", statusAddrUsage)
	cmd.Flags().StringVar(&codec, "codec", "", "with --workers: all-reduce wire codec none, s2 (default), zstd (exact), or fp16, int8 (lossy with error feedback, needs --reduce fast)")
	dev.add(cmd.Flags())
	cmd.Flags().Lookup("device").Usage = deviceUsage + "; with --workers a comma-separated list, one device per worker in turn (--workers 2 --device cuda,cpu: worker 0 on the GPU, worker 1 on the CPU)"
	return cmd
}

// trainWorkers is train --workers N: the elastic runtime in exact mode,
// the static ring in fast mode. The workers open their own devices; the
// GPUs are checked here so that a missing one fails before any starts.
func trainWorkers(cmd *cobra.Command, job *Job, workers int, dev *deviceFlags, devs []string, force bool, statusAddr string) error {
	if _, err := dev.probe(devs); err != nil {
		return err
	}
	wd := &workerDevices{flags: dev, devs: devs}
	if job.Reduce == "exact" {
		return runElastic(cmd.Context(), job, workers, wd, force, statusAddr, cmd.OutOrStdout(), cmd.ErrOrStderr())
	}
	return runCluster(cmd.Context(), job, workers, wd, force, cmd.OutOrStdout(), cmd.ErrOrStderr())
}

// prepareOut and commitOut (the staging of a run's output directory) are
// in outdir.go.

func loadData(job *Job, log io.Writer) (*shard.Dataset, error) {
	t0 := time.Now()
	ds, err := job.Load()
	if err != nil {
		return nil, err
	}
	if job.Progress != nil {
		fmt.Fprintf(log, "loaded %s: train %d, val %d, test %d rows, d=%d, %.0f%% of train observed (%.1fs)\n",
			job.Data.Train, ds.Train.N, ds.Val.N, testRows(ds), ds.Train.D, 100*observedShare(ds.Train), time.Since(t0).Seconds())
	}
	return ds, nil
}

func testRows(ds *shard.Dataset) int {
	if ds.Test == nil {
		return 0
	}
	return ds.Test.N
}

func observedShare(s *shard.Split) float64 {
	return float64(s.Observed()) / float64(max(s.N, 1))
}

// RunMetrics is metrics.json; the job package has its schema.
type RunMetrics = job.RunMetrics

func runTrain(ctx context.Context, job *Job, force bool, stdout, log io.Writer) error {
	start := time.Now()
	staging, err := prepareOut(job.Out, force, job.Inputs(), log)
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging) // a no-op once renamed
	ds, err := loadData(job, log)
	if err != nil {
		return err
	}
	o, err := trainJob(ctx, job, ds, nil, nil, nil, log)
	if err != nil {
		return err
	}
	if err := writeOutputs(staging, o, job, start); err != nil {
		return err
	}
	if err := commitOut(staging, job.Out); err != nil {
		return err
	}
	printWarnings(log, o.stageWarnings()) // the data's were printed before training
	printSummary(stdout, job.Out, o.rm)
	return nil
}

// outcome is a finished training run, ready to be written.
type outcome struct {
	tr     *trainer.Trainer
	reward *nn.MLP // the saved reward model (the average of several with --reward-models)
	rm     *RunMetrics
	ds     *shard.Dataset // the data it trained on (the report names its splits)
}

// trainJob trains every stage of the job's method and scores the test
// split. red and own are nil in one process; a worker passes its ring and
// its virtual shards (then every rank must call it: the test metrics are
// gathered across ranks). The data's warnings go to warn (nil: nowhere)
// before training starts.
func trainJob(ctx context.Context, job *Job, ds *shard.Dataset, red trainer.Reducer, xexp []int, own []int, warn io.Writer) (*outcome, error) {
	tr, err := trainer.New(job.Config, ds, red, xexp)
	if err != nil {
		return nil, err
	}
	printWarnings(warn, tr.DataWarnings)
	if own != nil {
		if err := tr.Own(own); err != nil {
			return nil, err
		}
	}
	res, err := tr.Reward(ctx, job.Method)
	if err != nil {
		return nil, err
	}
	return finishJob(ctx, job, ds, tr, res)
}

// finishJob scores the test split with the trained reward model and
// gathers the run's metrics.
func finishJob(ctx context.Context, job *Job, ds *shard.Dataset, tr *trainer.Trainer, res *trainer.StageResult) (*outcome, error) {
	rm := &RunMetrics{Method: string(job.Method), Seed: job.Seed, Reduce: job.Reduce, Backend: nn.Backend(),
		ObservedShare: observedShare(ds.Train)}
	if ds.Test != nil && ds.Test.R != nil {
		m, _, err := tr.Test(ctx, res.Model)
		if err != nil {
			return nil, err
		}
		rm.Test = &m
	}
	fillAux(rm, tr, ds)
	rm.Warnings = runWarnings(tr, rm.Stages)
	return &outcome{tr: tr, reward: res.Model, rm: rm, ds: ds}, nil
}

// writeOutputs writes the models, metrics.json, job.yaml and the report.
func writeOutputs(dir string, o *outcome, job *Job, start time.Time) error {
	if err := writeModels(dir, o.tr, o.reward, job); err != nil {
		return err
	}
	sum, err := fileSHA256(filepath.Join(dir, "reward.safetensors"))
	if err != nil {
		return err
	}
	o.rm.RewardSHA256 = sum
	o.rm.ElapsedSeconds = time.Since(start).Seconds()
	if err := writeJSON(filepath.Join(dir, "metrics.json"), o.rm); err != nil {
		return err
	}
	if err := writeYAML(filepath.Join(dir, "job.yaml"), job); err != nil {
		return err
	}
	return report.Write(dir, reportRun(o.rm, o.tr, job, o.ds))
}

// trueRates reads the flip rates a generated dataset records in its clean
// labels, when it has them (for the report's comparison only).
func trueRates(s *shard.Split) *causal.Rates {
	if s.R == nil {
		return nil
	}
	var n1, n0, f10, f01 float64
	for i, o := range s.O {
		if o != 1 {
			continue
		}
		if s.R[i] == 1 {
			n1++
			if s.Y[i] == 0 {
				f01++
			}
		} else {
			n0++
			if s.Y[i] == 1 {
				f10++
			}
		}
	}
	if n1 == 0 || n0 == 0 {
		return nil
	}
	return &causal.Rates{Rho01: f01 / n1, Rho10: f10 / n0}
}

func fillAux(rm *RunMetrics, tr *trainer.Trainer, ds *shard.Dataset) {
	if tr.RatesKnown {
		r := tr.Rates
		rm.FlipRates = &r
		rm.FlipRatesSource = "given"
		if tr.RatesEstimated {
			rm.FlipRatesSource = "estimated"
		}
		if tr.Flip != nil {
			f := *tr.Flip
			rm.FlipRatesEstimate = &f
		}
	}
	rm.TrueFlipRates = trueRates(ds.Train)
	if !math.IsNaN(tr.PropensityValMSE) {
		v := tr.PropensityValMSE
		rm.PropensityValMSE = &v
	}
	rm.PropensityCalib = tr.Calib
	for _, name := range []string{trainer.StagePropensity, trainer.StageNoise, trainer.StageImputation} {
		if s, ok := tr.Stages[name]; ok {
			rm.Stages = append(rm.Stages, s)
		}
		if name == trainer.StageNoise {
			rm.Stages = append(rm.Stages, tr.FoldStages()...) // the flip-rate estimate's cross-fitting folds
		}
	}
	for j := 0; ; j++ { // the reward stage, and the others averaged with it
		s, ok := tr.Stages[trainer.RewardStage(causal.Method(rm.Method), j)]
		if !ok {
			break
		}
		rm.Stages = append(rm.Stages, s)
	}
}

// writeModels saves the reward model as reward.* and each auxiliary stage
// under its own name (not the noise stage's cross-fitting folds, which only
// served the flip-rate estimate, nor the reward models that reward
// averages).
func writeModels(dir string, tr *trainer.Trainer, reward *nn.MLP, job *Job) error {
	for name, s := range tr.Stages {
		if trainer.IsFoldStage(name) {
			continue
		}
		file := name
		meta := map[string]string{"stage": name, "seed": fmt.Sprint(job.Seed), "reduce": job.Reduce}
		if strings.HasPrefix(name, trainer.StageReward+"/") {
			m := strings.TrimPrefix(name, trainer.StageReward+"/")
			if m != string(job.Method) {
				continue
			}
			file, meta["stage"], meta["method"] = "reward", trainer.StageReward, m
		}
		model := s.Model
		if file == "reward" && reward != nil {
			model = reward
			if k := job.RewardModelCount(); k > 1 {
				meta["reward_models"] = fmt.Sprint(k)
			}
		}
		if err := nn.Save(dir, file, model, tr.XExp, meta); err != nil {
			return err
		}
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:]), nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

func writeYAML(path string, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// reportRun gathers what report.md shows: the run's metrics, the data's
// splits (ds; nil: not named), the settings of job and the command that
// trains the naive baseline beside it.
func reportRun(rm *RunMetrics, tr *trainer.Trainer, job *Job, ds *shard.Dataset) *report.Run {
	run := &report.Run{Method: rm.Method, Seed: rm.Seed, ObservedShare: rm.ObservedShare,
		StageEpochs: map[string]int{}, Test: map[string]float64{}, PropensityValMSE: math.NaN(),
		Elapsed: time.Duration(rm.ElapsedSeconds * float64(time.Second)), Data: reportData(ds)}
	cfg := tr.Config()
	if job != nil {
		cfg = job.Config
		run.JobFile = "job.yaml"
		run.BaselineCommand = baselineCommand(job)
	}
	run.Settings = reportSettings(cfg, true)
	run.MaxEpochs = cfg.MaxEpochs
	for _, s := range rm.Stages {
		ep := make([]int, len(s.Train))
		for i := range ep {
			ep[i] = i + 1
		}
		run.Curves = append(run.Curves, report.Curve{Stage: s.Name, Epochs: ep, Train: s.Train, Val: s.Val, Best: s.BestEpoch,
			MonitorTrain: strings.HasPrefix(s.Name, trainer.StageReward+"/") && cfg.Monitor == "train"})
		run.StageEpochs[s.Name] = s.Epochs
	}
	if rm.FlipRates != nil {
		run.FlipRates = &report.FlipRates{Rho01: rm.FlipRates.Rho01, Rho10: rm.FlipRates.Rho10}
		run.FlipRatesSource = rm.FlipRatesSource
		run.FlipInterval = flipInterval(rm.FlipRatesEstimate)
	}
	if rm.TrueFlipRates != nil {
		run.TrueRates = &report.FlipRates{Rho01: rm.TrueFlipRates.Rho01, Rho10: rm.TrueFlipRates.Rho10}
	}
	if rm.PropensityValMSE != nil {
		run.PropensityValMSE = *rm.PropensityValMSE
	}
	for _, b := range rm.PropensityCalib {
		run.PropensityCalib = append(run.PropensityCalib, report.CalibBin{Lo: b.Lo, Hi: b.Hi, MeanPred: b.MeanPred, ObsRate: b.ObsRate, N: b.N})
	}
	if t := rm.Test; t != nil {
		run.Test = map[string]float64{"r2": t.R2, "mae": t.MAE, "rmse": t.RMSE, "auroc": t.AUROC, "pearson": t.Pearson}
	}
	for _, w := range rm.Warnings {
		run.Warnings = append(run.Warnings, report.Warning{Kind: w.Kind, Message: w.Message})
	}
	return run
}

func printSummary(w io.Writer, out string, rm *RunMetrics) {
	fmt.Fprintf(w, "wrote %s (method %s, seed %d)\n", out, rm.Method, rm.Seed)
	if rm.FlipRates != nil {
		fmt.Fprintf(w, "flip rates (%s): rho01 %.4f rho10 %.4f\n", rm.FlipRatesSource, rm.FlipRates.Rho01, rm.FlipRates.Rho10)
	}
	if t := rm.Test; t != nil {
		fmt.Fprintf(w, "test: R2 %.4f  MAE %.4f  RMSE %.4f  AUROC %.4f  Pearson %.4f\n", t.R2, t.MAE, t.RMSE, t.AUROC, t.Pearson)
	}
	fmt.Fprintf(w, "reward model sha256 %s\n", rm.RewardSHA256)
	fmt.Fprintf(w, "report: %s\n", filepath.Join(out, "report.md"))
}

func removeAll(dir string) { _ = os.RemoveAll(dir) }

// flipInterval is the report's view of a cross-fitted estimate's interval;
// nil for nil.
func flipInterval(e *causal.FlipEstimate) *report.FlipInterval {
	if e == nil {
		return nil
	}
	return &report.FlipInterval{N01: e.N01, N10: e.N10,
		Lo: report.FlipRates{Rho01: e.Lo.Rho01, Rho10: e.Lo.Rho10}, Hi: report.FlipRates{Rho01: e.Hi.Rho01, Rho10: e.Hi.Rho10}}
}

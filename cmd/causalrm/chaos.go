package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/causalrm/causalrm/chaos"
)

// chaosCmd is `causalrm chaos`: fault injection against a real elastic job
// on 127.0.0.1 (package chaos; docs/chaos.md). Only flag parsing here.
func chaosCmd() *cobra.Command {
	var (
		cfg              chaos.Config
		faults, scenario string
		hidden           string
	)
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Run a real elastic job on 127.0.0.1 under injected faults and check it trains the one-process bytes",
		Long: `Starts a coordinator group and workers of this binary on 127.0.0.1, submits a
small job, and injects faults at moments drawn from --seed (kill -9 of workers
and coordinators, SIGSTOP pauses, a restart of every worker from the last
checkpoint or of every coordinator, join/leave storms, workers started in the
same instant, a coordinator cut off by a TCP proxy, slow or corrupted links
between workers, a coordinator whose disk is full). After every run it
checks the oracle: the reward model has the sha256 of the one-process
'causalrm train' of the same job, the coordinators' step log holds every step
of every epoch exactly once, no process is left behind, and no stall (no
committed step for --stall while workers are alive).

Writes chaos.md, chaos.json and timeline.png into --out, with the command that
replays each failed run; exits non-zero when a run fails. Fault kinds:
` + wrapWords(chaos.KindNames()+".", 78) + `

  causalrm chaos --runs 12 --seed 1                       # a short matrix, every kind
  causalrm chaos --runs 200 --seed 1000 --faults-per-run 3 # a soak
  causalrm chaos --faults kill-leader,pause-worker --runs 4
  causalrm chaos --scenario faults.yaml                   # [{kind, at, duration, target}]`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Binary, err = os.Executable(); err != nil {
				return err
			}
			if cfg.Kinds, err = chaos.ParseKinds(faults); err != nil {
				return fmt.Errorf("--faults: %w", err)
			}
			if scenario != "" {
				if cfg.Scenario, err = chaos.LoadScenario(scenario); err != nil {
					return fmt.Errorf("--scenario: %w", err)
				}
			}
			for _, s := range splitAddrs(hidden) {
				w, err := strconv.Atoi(s)
				if err != nil || w < 1 {
					return fmt.Errorf("--hidden %q: want positive widths separated by commas, like 16,8", hidden)
				}
				cfg.Job.Hidden = append(cfg.Job.Hidden, w)
			}
			cfg.Replay = replayFlags(cmd.Flags())
			cfg.Log = cmd.ErrOrStderr()
			sum, err := chaos.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if sum.Failed > 0 {
				return fmt.Errorf("chaos: %d of %d runs failed (%s/chaos.md)", sum.Failed, len(sum.Runs), cfg.Out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "chaos: %d runs passed (%s/chaos.md)\n", len(sum.Runs), cfg.Out)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.Data, "data", "", "training data (default: a small data set generated into --out)")
	fs.StringVar(&faults, "faults", "all", "fault kinds to draw from, comma-separated ("+chaos.KindNames()+"), or all")
	fs.IntVar(&cfg.FaultsPerRun, "faults-per-run", 2, "faults drawn for each run")
	fs.StringVar(&scenario, "scenario", "", "YAML list of faults {kind, at: seconds, duration: seconds, target} injected in every run instead of drawn ones")
	fs.IntVar(&cfg.Runs, "runs", 1, "runs; run i has seed --seed+i-1")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "seed of the first run's faults")
	fs.DurationVar(&cfg.Window, "duration", 8*time.Second, "the window after the first committed step in which faults are placed")
	fs.IntVar(&cfg.Workers, "workers", 3, "workers kept running (a dead one is replaced by a new one)")
	fs.IntVar(&cfg.Coordinators, "coordinators", 3, "coordinators: 1, 3 or 5")
	fs.IntVar(&cfg.MinWorkers, "min-workers", 0, "the job's --min-workers (default --workers minus 1)")
	fs.StringVar(&cfg.Out, "out", "runs/chaos", "directory of the report, the reference and each run's logs")
	fs.DurationVar(&cfg.Stall, "stall", 30*time.Second, "fail a run when no step is committed for this long while workers are alive")
	fs.DurationVar(&cfg.RunTimeout, "run-timeout", 5*time.Minute, "bound of one run")
	fs.DurationVar(&cfg.StepDelay, "step-delay", 40*time.Millisecond, "slow every worker's step down by this much, so that faults land mid-training")
	fs.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", 2*time.Second, "the coordinators' --heartbeat-timeout")
	fs.DurationVar(&cfg.OpTimeout, "op-timeout", 15*time.Second, "the workers' --op-timeout (0: the worker's default, 2m); below --stall, so that a call lost on a mangled link fails and is relinked before the stall detector fires")
	fs.IntVar(&cfg.ReportEvery, "report-every", 5, "the job's --report-every")
	fs.IntVar(&cfg.CheckpointEvery, "checkpoint-every", 20, "the job's --checkpoint-every (steps)")
	fs.IntVar(&cfg.Rows, "rows", 2000, "generated data: training rows")
	fs.IntVar(&cfg.TestRows, "test-rows", 200, "generated data: test rows")
	fs.IntVar(&cfg.Dim, "dim", 16, "generated data: embedding dimension")
	fs.StringVar(&cfg.Job.Method, "method", "causalrm-dr", "the job's estimator")
	fs.StringVar(&hidden, "hidden", "16,8", "the job's hidden layer widths")
	fs.IntVar(&cfg.Job.Batch, "batch", 64, "the job's batch size")
	fs.IntVar(&cfg.Job.MaxEpochs, "max-epochs", 4, "the job's most epochs per stage")
	fs.IntVar(&cfg.Job.Shards, "shards", 12, "the job's virtual shards")
	fs.Uint64Var(&cfg.Job.Seed, "job-seed", 1, "the job's --seed (initialisation and batch order)")
	fs.StringVar(&cfg.WantSHA256, "expect-sha256", "", "the reward model's expected sha256 (default: the one-process run's)")
	return cmd
}

// replayFlags are the flags given on the command line except --seed,
// --runs and --out, quoted for a shell: with --seed S --runs 1 they replay
// one run.
func replayFlags(fs *pflag.FlagSet) []string {
	var out []string
	fs.Visit(func(f *pflag.Flag) {
		switch f.Name {
		case "seed", "runs", "out":
			return
		}
		out = append(out, "--"+f.Name, chaos.ShellQuote(f.Value.String()))
	})
	return out
}

// wrapWords breaks s into lines of at most width characters at spaces.
func wrapWords(s string, width int) string {
	var b strings.Builder
	n := 0
	for i, w := range strings.Fields(s) {
		if i > 0 && n+1+len(w) > width {
			b.WriteByte('\n')
			n = 0
		} else if i > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(w)
		n += len(w)
	}
	return b.String()
}

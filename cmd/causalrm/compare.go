package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/report"
	"github.com/causalrm/causalrm/trainer"
)

func compareCmd() *cobra.Command {
	var f jobFlags
	var seeds int
	var methods []string
	cmd := &cobra.Command{
		Use:   "compare",
		Short: "Train every estimator on the same data and seeds and print the paper's table",
		Long: `Trains the reward model with each estimator (naive, ips, dr, noise,
causalrm-ips, causalrm-dr) for seeds 1..--seeds (or --seed, --seed+1, ...) and
prints test R^2, MAE, RMSE, AUROC and Pearson as mean ± std over the seeds.
The auxiliary stages are trained once per seed and shared by every method.
Writes compare.md, compare.json and a bar chart to the output directory.`,
		Example: `  causalrm compare --data data.safetensors --seeds 3 --out runs/compare`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			job, err := resolveJob(cmd, &f)
			if err != nil {
				return err
			}
			var ms []causal.Method
			for _, s := range methods {
				m, err := causal.ParseMethod(s)
				if err != nil {
					return fmt.Errorf("--methods: %w", err)
				}
				ms = append(ms, m)
			}
			if seeds < 1 {
				return fmt.Errorf("--seeds %d: want >= 1", seeds)
			}
			if job.Out == "" {
				job.Out = filepath.Join("runs", "compare")
			}
			if err := checkOut(job.Out, f.force, jobInputs(job, f.config)); err != nil {
				return err
			}
			return runCompare(cmd, job, ms, seeds, f.force)
		},
	}
	addJobFlags(cmd, &f, false)
	cmd.Flags().IntVar(&seeds, "seeds", 3, "number of seeds, starting at --seed")
	var names []string
	for _, m := range causal.AllMethods() {
		names = append(names, string(m))
	}
	cmd.Flags().StringSliceVar(&methods, "methods", names, "estimators to compare")
	return cmd
}

// CompareResult is compare.json.
type CompareResult struct {
	Data    DataSpec                     `json:"data"`
	Seeds   []uint64                     `json:"seeds"`
	Reduce  string                       `json:"reduce"`
	Results map[string][]*causal.Metrics `json:"results"` // method -> per seed
	Rates   map[uint64]*causal.Rates     `json:"flip_rates"`
	Epochs  map[string][]map[string]int  `json:"epochs"`
	Seconds float64                      `json:"elapsed_seconds"`
}

func runCompare(cmd *cobra.Command, job *Job, methods []causal.Method, nseeds int, force bool) error {
	ctx, log := cmd.Context(), cmd.ErrOrStderr()
	start := time.Now()
	staging, err := prepareOut(job.Out, force, job.Inputs(), log)
	if err != nil {
		return err
	}
	defer removeAll(staging)
	ds, err := loadData(job, log)
	if err != nil {
		return err
	}
	res := &CompareResult{Data: job.Data, Reduce: job.Reduce, Results: map[string][]*causal.Metrics{},
		Rates: map[uint64]*causal.Rates{}, Epochs: map[string][]map[string]int{}}
	var xexp []int
	for k := 0; k < nseeds; k++ {
		cfg := job.Config
		cfg.Seed = job.Seed + uint64(k)
		res.Seeds = append(res.Seeds, cfg.Seed)
		tr, err := trainer.New(cfg, ds, nil, xexp)
		if err != nil {
			return err
		}
		xexp = tr.XExp
		if k == 0 {
			printWarnings(log, tr.DataWarnings)
		}
		if err := tr.Prepare(ctx, methods...); err != nil {
			return err
		}
		if tr.RatesKnown {
			r := tr.Rates
			res.Rates[cfg.Seed] = &r
		}
		for mi, m := range methods {
			st, err := tr.Reward(ctx, m)
			if err != nil {
				return fmt.Errorf("seed %d, %s: %w", cfg.Seed, m, err)
			}
			printWarnings(log, trainer.StageWarnings(st))
			met, _, err := tr.Test(ctx, st.Model)
			if err != nil {
				return err
			}
			res.Results[string(m)] = append(res.Results[string(m)], &met)
			ep := map[string]int{}
			for name, s := range tr.Stages {
				if !strings.HasPrefix(name, trainer.StageReward+"/") || name == trainer.StageReward+"/"+string(m) {
					ep[name] = s.Epochs
				}
			}
			res.Epochs[string(m)] = append(res.Epochs[string(m)], ep)
			fmt.Fprintf(log, "seed %d %-13s R2 %.4f AUROC %.4f (reward stage %d epochs) [seed %d of %d, method %d of %d, %s]\n",
				cfg.Seed, m, met.R2, met.AUROC, st.Epochs, k+1, nseeds, mi+1, len(methods), compareETA(start, k, nseeds))
		}
	}
	res.Seconds = time.Since(start).Seconds()
	rows := compareRows(methods, res)
	if err := report.WriteCompare(staging, rows, res.Seeds); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(staging, "compare.json"), res); err != nil {
		return err
	}
	if err := writeYAML(filepath.Join(staging, "job.yaml"), job); err != nil {
		return err
	}
	if err := commitOut(staging, job.Out); err != nil {
		return err
	}
	printCompare(cmd.OutOrStdout(), job, res, rows)
	return nil
}

func compareRows(methods []causal.Method, res *CompareResult) []report.CompareRow {
	var rows []report.CompareRow
	for _, m := range methods {
		row := report.CompareRow{Method: string(m)}
		for _, met := range res.Results[string(m)] {
			row.PerSeed = append(row.PerSeed, map[string]float64{"r2": met.R2, "mae": met.MAE,
				"rmse": met.RMSE, "auroc": met.AUROC, "pearson": met.Pearson})
		}
		rows = append(rows, row)
	}
	return rows
}

func printCompare(w io.Writer, job *Job, res *CompareResult, rows []report.CompareRow) {
	fmt.Fprintf(w, "%s: %d seeds %v, reduce %s, %.0fs\n\n", job.Data.Train, len(res.Seeds), res.Seeds, res.Reduce, res.Seconds)
	fmt.Fprint(w, report.FormatCompareTable(rows))
	for _, s := range res.Seeds {
		if r := res.Rates[s]; r != nil {
			fmt.Fprintf(w, "seed %d flip rates: rho01 %.4f rho10 %.4f\n", s, r.Rho01, r.Rho10)
		}
	}
	fmt.Fprintf(w, "wrote %s\n", job.Out)
}

// compareETA is the elapsed time and, from the second seed on, the time
// left for the remaining seeds at the mean time per seed so far.
func compareETA(start time.Time, k, nseeds int) string {
	el := time.Since(start)
	if k == 0 || k+1 >= nseeds {
		return el.Round(time.Second).String()
	}
	per := el / time.Duration(k)
	return fmt.Sprintf("%s, about %s left", el.Round(time.Second), (per * time.Duration(nseeds-k)).Round(time.Second))
}

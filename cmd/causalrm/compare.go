package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/report"
	"github.com/causalrm/causalrm/shard"
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
Writes compare.md, compare.json, job.yaml and compare.png (R² and AUROC per
method, mean and standard deviation over the seeds) to the output directory.`,
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

// CompareResult is compare.json: what was compared (methods, seeds,
// data, settings) and each method's test metrics per seed.
type CompareResult struct {
	Methods  []string                     `json:"methods"`
	Seeds    []uint64                     `json:"seeds"`
	Data     compareData                  `json:"data"`
	Reduce   string                       `json:"reduce"`
	Settings map[string]any               `json:"settings"` // the job's settings every method shared (method and seed aside)
	Results  map[string][]*causal.Metrics `json:"results"`  // method -> per seed
	Rates    map[uint64]*causal.Rates     `json:"flip_rates"`
	// RatesSource is where the flip rates came from: given (--flip-rates,
	// job key flip_rates) or estimated (by each seed's noise stage).
	RatesSource string        `json:"flip_rates_source,omitempty"`
	TrueRates   *causal.Rates `json:"true_flip_rates,omitempty"`
	// Estimates are the cross-fitted estimates behind estimated Rates,
	// with their 95% intervals, per seed (empty for given rates and the
	// anchor estimator).
	Estimates map[uint64]*causal.FlipEstimate `json:"flip_rates_estimate,omitempty"`
	Epochs    map[string][]map[string]int     `json:"epochs"`
	Seconds   float64                         `json:"elapsed_seconds"`
}

// compareData names the data of a comparison: the files as given and
// each split's file and rows.
type compareData struct {
	Train  string         `json:"train"`
	Val    string         `json:"val,omitempty"`
	Test   string         `json:"test,omitempty"`
	Splits []compareSplit `json:"splits"`
}

type compareSplit struct {
	Name     string `json:"name"`
	File     string `json:"file"`
	Rows     int    `json:"rows"`
	Observed int    `json:"observed"`
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
	res := &CompareResult{Data: compareData{Train: job.Data.Train, Val: job.Data.Val, Test: job.Data.Test},
		Reduce: job.Reduce, Results: map[string][]*causal.Metrics{},
		Rates: map[uint64]*causal.Rates{}, Epochs: map[string][]map[string]int{}}
	for _, m := range methods {
		res.Methods = append(res.Methods, string(m))
	}
	for _, s := range reportData(ds) {
		res.Data.Splits = append(res.Data.Splits, compareSplit{Name: s.Name, File: s.File, Rows: s.Rows, Observed: s.Observed})
	}
	if res.Settings, err = compareSettings(job); err != nil {
		return err
	}
	res.TrueRates = trueRates(ds.Train)
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
			res.RatesSource = "given"
			if tr.RatesEstimated {
				res.RatesSource = "estimated"
			}
			if tr.Flip != nil {
				f := *tr.Flip
				if res.Estimates == nil {
					res.Estimates = map[uint64]*causal.FlipEstimate{}
				}
				res.Estimates[cfg.Seed] = &f
			}
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
	if err := report.WriteCompare(staging, compareReport(job, ds, res, rows)); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(staging, "compare.json"), res); err != nil {
		return err
	}
	if err := writeCompareJob(filepath.Join(staging, "job.yaml"), job, res); err != nil {
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

// compareReport is what compare.md shows.
func compareReport(job *Job, ds *shard.Dataset, res *CompareResult, rows []report.CompareRow) *report.Comparison {
	c := &report.Comparison{Rows: rows, Seeds: res.Seeds, Data: reportData(ds), Settings: reportSettings(job.Config, false),
		JobFile: "job.yaml", JSONFile: "compare.json"}
	for _, s := range res.Seeds {
		if r := res.Rates[s]; r != nil {
			c.FlipRates = append(c.FlipRates, report.SeedRates{Seed: s, Rates: report.FlipRates{Rho01: r.Rho01, Rho10: r.Rho10},
				Source: res.RatesSource, Interval: flipInterval(res.Estimates[s])})
		}
	}
	if r := res.TrueRates; r != nil {
		c.TrueRates = &report.FlipRates{Rho01: r.Rho01, Rho10: r.Rho10}
	}
	return c
}

// compareSettings are the job's settings as compare.json lists them: its
// training configuration's keys, less the method and the seed (compare
// has several) and the threads (they do not change the result).
func compareSettings(job *Job) (map[string]any, error) {
	raw, err := json.Marshal(job.Config)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	delete(m, "method")
	delete(m, "seed")
	delete(m, "threads")
	return m, nil
}

// writeCompareJob writes a comparison's job.yaml: the job file it ran
// (so that compare --config job.yaml runs it again), headed by the
// methods and seeds it compared, with the method and seed keys marked as
// what compare does with them.
func writeCompareJob(path string, job *Job, res *CompareResult) error {
	var doc yaml.Node
	if err := doc.Encode(job); err != nil {
		return err
	}
	seeds := make([]string, len(res.Seeds))
	for i, s := range res.Seeds {
		seeds[i] = fmt.Sprint(s)
	}
	doc.HeadComment = fmt.Sprintf("causalrm compare: methods %s; seeds %s.\nThis is the job file every method and seed ran with; run it again with\n  causalrm compare --config job.yaml --methods %s --seeds %d --out DIR",
		strings.Join(res.Methods, ", "), strings.Join(seeds, ", "), strings.Join(res.Methods, ","), len(res.Seeds))
	for i := 0; i+1 < len(doc.Content); i += 2 {
		switch doc.Content[i].Value {
		case "method":
			doc.Content[i+1].LineComment = "not used by compare: it trains each of the methods above"
		case "seed":
			doc.Content[i+1].LineComment = fmt.Sprintf("the first seed: compare ran seeds %s", strings.Join(seeds, ", "))
		}
	}
	return writeYAML(path, &doc)
}

func printCompare(w io.Writer, job *Job, res *CompareResult, rows []report.CompareRow) {
	fmt.Fprintf(w, "%s: methods %s, %d seeds %v, reduce %s, %.0fs\n\n", job.Data.Train, strings.Join(res.Methods, ","), len(res.Seeds), res.Seeds, res.Reduce, res.Seconds)
	fmt.Fprint(w, report.FormatCompareTable(rows))
	for _, s := range res.Seeds {
		if r := res.Rates[s]; r != nil {
			fmt.Fprintf(w, "seed %d flip rates (%s): rho01 %.4f rho10 %.4f", s, res.RatesSource, r.Rho01, r.Rho10)
			if e := res.Estimates[s]; e != nil {
				fmt.Fprintf(w, " (95%% intervals %.4f-%.4f, %.4f-%.4f)", e.Lo.Rho01, e.Hi.Rho01, e.Lo.Rho10, e.Hi.Rho10)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintf(w, "wrote %s (report: %s)\n", job.Out, filepath.Join(job.Out, report.CompareFile))
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

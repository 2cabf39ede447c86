package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/gpu"
	"github.com/causalrm/causalrm/internal/atomicfile"
	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/trainer"
)

// scoreChunk is the rows eval scores per pass.
const scoreChunk = 4096

func evalCmd() *cobra.Command {
	var modelPath, data, split, scores string
	var exact bool
	var threads int
	var dev deviceFlags
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Score a file with a saved reward model; metrics when it has clean labels",
		Long: `Scores the rows of a file with a reward model written by train (--model
names the run directory or its reward.json), and prints the paper's metrics
when the rows have clean labels (r). The rows need only an id and an
embedding x: feedback columns (o, y) and split labels are optional. Without
--split it scores the file's test split if it has one, else every row.`,
		Example: `  causalrm eval --model runs/demo --data data.safetensors
  causalrm eval --model runs/demo --data new.jsonl --scores scores.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if modelPath == "" || data == "" {
				return fmt.Errorf("--model and --data are required")
			}
			if threads < 0 || threads > trainer.MaxThreads {
				return fmt.Errorf("--threads %d: want 0 (all cores) or 1..%d", threads, trainer.MaxThreads)
			}
			split = strings.ToLower(split)
			if split != "" && split != "train" && split != "val" && split != "test" {
				return fmt.Errorf("--split %q: want train, val or test (any case), or none for the test split if the file has one, else every row", split)
			}
			modelPath = modelFile(modelPath)
			if _, err := gpu.ParseDevice(dev.device); err != nil {
				return fmt.Errorf("--device: %w", err)
			}
			model, xexp, fc, err := nn.Load(modelPath)
			if err != nil {
				return err
			}
			if err := model.Cfg.CheckRows(scoreChunk); err != nil {
				return fmt.Errorf("--model %s: %w", modelPath, err)
			}
			ds, err := shard.Load(shard.LoadSpec{Train: data, AllowEmptyVal: true, AllowNoTest: true, AllowUnlabelled: true})
			if err != nil {
				return err
			}
			if split == "" {
				split = "train" // a file without split labels is one train split
				if ds.Test != nil && ds.Test.N > 0 {
					split = "test"
				}
			}
			// A file without split labels is read as one "train" split.
			s := map[string]*shard.Split{"train": ds.Train, "val": ds.Val, "test": ds.Test}[split]
			if s == nil || s.N == 0 {
				return fmt.Errorf("%s has no %s split (a file without split labels is one train split: --split train)", data, split)
			}
			if s.D != model.Cfg.Dims[0] {
				return fmt.Errorf("%s: embeddings have d=%d, the model wants %d", data, s.D, model.Cfg.Dims[0])
			}
			nn.SetThreads(threads)
			if xexp != nil {
				nn.QuantizeX(s.X, s.D, xexp)
			}
			runners, closeDev, err := dev.open()
			if err != nil {
				return err
			}
			defer closeDev()
			if runners == nil {
				runners = nn.CPURunner
			}
			eng, err := runners(model, exact && xexp != nil, xexp, 512)
			if err != nil {
				return err
			}
			pred, err := trainer.ScoreWith(cmd.Context(), eng, s, scoreChunk, causal.Sigmoid)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "scored %d rows of %s (%s) with %s (%s)\n", s.N, data, split, modelPath, fc.Meta["method"])
			if s.R != nil {
				m := causal.Evaluate(pred, s.R)
				fmt.Fprintf(w, "R2 %.4f  MAE %.4f  RMSE %.4f  AUROC %.4f  Pearson %.4f\n", m.R2, m.MAE, m.RMSE, m.AUROC, m.Pearson)
			}
			if scores != "" {
				return writeScores(scores, s.IDs, pred)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&modelPath, "model", "", "a run directory written by train, or its reward.json (or .safetensors)")
	cmd.Flags().StringVar(&data, "data", "", "file to score")
	cmd.Flags().StringVar(&split, "split", "", "split of the file to score: train, val or test (default: test if the file has one, else every row; a file without split labels is one train split)")
	cmd.Flags().StringVar(&scores, "scores", "", "write id and reward per row to this JSONL file")
	cmd.Flags().BoolVar(&exact, "exact", true, "use the exact forward pass (same bits as training)")
	cmd.Flags().IntVar(&threads, "threads", 0, "threads (0: all cores)")
	dev.add(cmd.Flags())
	return cmd
}

// modelFile is the model file --model names: a run directory means its
// reward.json.
func modelFile(p string) string {
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return filepath.Join(p, "reward.json")
	}
	return p
}

// writeScores writes one {"id", "reward"} JSON line per row, atomically.
func writeScores(path string, ids []string, pred []float64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, func(out io.Writer) error {
		bw := bufio.NewWriter(out)
		enc := json.NewEncoder(bw)
		for i, p := range pred {
			if err := enc.Encode(struct {
				ID     string  `json:"id"`
				Reward float64 `json:"reward"`
			}{ids[i], p}); err != nil {
				return err
			}
		}
		return bw.Flush()
	})
}

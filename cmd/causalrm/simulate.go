package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/sim"
)

func simulateCmd() *cobra.Command {
	cfg := sim.DefaultConfig()
	var out, from string
	var force bool
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Make a semi-synthetic observational-feedback dataset (the paper's protocol)",
		Long: `Applies the semi-synthetic protocol of CAUSALRM.md section 6: an 80/20
train/validation split, rating-dependent propensities p = alpha^(5-g') scaled
to a target observation rate, Bernoulli observation, a binary preference from
the median rating level, and label flips (rho01, rho10) on observed rows. The
test split stays clean and fully observed.

Without --from it first generates synthetic embeddings with latent structure
and a graded rating; with --from it applies the protocol to your own fully
labelled file (a 'rating' column, e.g. HelpSteer helpfulness).

Writes the authors' safetensors layout (X_train, y_train_binary, mask_train,
..., propensity_*, ratings), plus r_train_binary / r_val_binary, the clean
labels, for diagnostics.`,
		Example: `  causalrm simulate --rows 20000 --dim 256 --alpha 0.5 --rho01 0.1 --rho10 0.2 --out data.safetensors
  causalrm simulate --from helpsteer.parquet --alpha 0.1 --out helpsteer-obs.safetensors`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return fmt.Errorf("--out FILE.safetensors is required")
			}
			if _, err := os.Stat(out); err == nil && !force {
				return fmt.Errorf("%s exists (use --force to replace it)", out)
			}
			t0 := time.Now()
			var ds *shard.Dataset
			var err error
			if from != "" {
				full, lerr := shard.Load(shard.LoadSpec{Train: from, AllowEmptyVal: true})
				if lerr != nil {
					return lerr
				}
				if full.Val != nil && full.Val.N == 0 {
					full.Val = nil // step 1 splits validation off train
				}
				ds, err = sim.Apply(full, cfg)
			} else {
				ds, err = sim.Generate(cfg)
			}
			if err != nil {
				return err
			}
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
				return err
			}
			if err := shard.WriteSafetensors(out, ds); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: train %d, val %d, test %d rows, d=%d, %.1f%% of train observed (%.1fs)\n",
				out, ds.Train.N, ds.Val.N, ds.Test.N, ds.Train.D, 100*observedShare(ds.Train), time.Since(t0).Seconds())
			return nil
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&cfg.TrainRows, "rows", cfg.TrainRows, "training rows before the 80/20 train/val split")
	fs.IntVar(&cfg.TestRows, "test-rows", cfg.TestRows, "clean test rows")
	fs.IntVar(&cfg.Dim, "dim", cfg.Dim, "embedding dimension d")
	fs.Float64Var(&cfg.Alpha, "alpha", cfg.Alpha, "selection strength in (0,1]; smaller is more biased")
	fs.Float64Var(&cfg.Rho01, "rho01", cfg.Rho01, "flip rate P(y=0 | r=1) on observed rows")
	fs.Float64Var(&cfg.Rho10, "rho10", cfg.Rho10, "flip rate P(y=1 | r=0) on observed rows")
	fs.Float64Var(&cfg.ObsRate, "obs-rate", cfg.ObsRate, "target share of observed rows")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed")
	fs.IntVar(&cfg.Latent, "latent", cfg.Latent, "rank of the latent structure")
	fs.IntVar(&cfg.Clusters, "clusters", cfg.Clusters, "mixture components")
	fs.IntVar(&cfg.Levels, "levels", cfg.Levels, "rating levels")
	fs.Float64Var(&cfg.NoiseSpread, "noise-spread", 0, "spread of the rating noise across latent clusters: cluster c's std is rating-noise*exp(spread*N(0,1)) (0: the same everywhere)")
	fs.Float64Var(&cfg.RatingNoise, "rating-noise", sim.DefaultRatingNoise, "std of the noise between the embedding's latent score and the rating (larger: x predicts the rating less well)")
	fs.StringVar(&out, "out", "", "output file (.safetensors)")
	fs.StringVar(&from, "from", "", "apply the protocol to this fully labelled file (needs a rating column) instead of generating")
	fs.BoolVar(&force, "force", false, "replace an existing output file")
	return cmd
}

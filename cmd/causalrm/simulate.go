package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/causalrm/causalrm/job"
	"github.com/causalrm/causalrm/nn"
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
		Long: `Applies the semi-synthetic protocol of docs/method.md: an 80/20
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
			write, err := simWriter(out)
			if err != nil {
				return err
			}
			if err := checkSimFlags(cmd, cfg, from != ""); err != nil {
				return err
			}
			if _, err := os.Stat(out); err == nil && !force {
				return fmt.Errorf("%s exists (use --force to replace it)", out)
			}
			t0 := time.Now()
			var ds *shard.Dataset
			if from != "" {
				full, lerr := shard.Load(shard.LoadSpec{Train: from, AllowEmptyVal: true})
				if lerr != nil {
					return job.LoadError(lerr)
				}
				if full.Val != nil && full.Val.N == 0 {
					full.Val = nil // step 1 splits validation off train
				}
				ds, err = sim.Apply(full, cfg)
			} else {
				ds, err = sim.Generate(cfg)
			}
			if err != nil {
				return simErr(err)
			}
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
				return err
			}
			if err := write(out, ds); err != nil {
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
	fs.StringVar(&out, "out", "", "output file: .safetensors, .parquet, .jsonl or .jsonl.gz (the extension picks the format)")
	fs.StringVar(&from, "from", "", "apply the protocol to this fully labelled file (needs a rating column) instead of generating")
	fs.BoolVar(&force, "force", false, "replace an existing output file")
	return cmd
}

// simFormats maps an output extension to its writer.
var simFormats = []struct {
	ext   string
	write func(string, *shard.Dataset) error
}{
	{".safetensors", shard.WriteSafetensors},
	{".parquet", shard.WriteParquet},
	{".jsonl", shard.WriteJSONL},
	{".jsonl.gz", shard.WriteJSONL},
	{".ndjson", shard.WriteJSONL},
	{".ndjson.gz", shard.WriteJSONL},
}

// simWriter picks the writer of --out by its extension.
func simWriter(out string) (func(string, *shard.Dataset) error, error) {
	if out == "" {
		return nil, fmt.Errorf("--out FILE is required (.safetensors, .parquet, .jsonl or .jsonl.gz)")
	}
	lower := strings.ToLower(out)
	for _, f := range simFormats {
		if strings.HasSuffix(lower, f.ext) && len(lower) > len(f.ext) {
			return f.write, nil
		}
	}
	return nil, fmt.Errorf("--out %s: unknown extension %q: want .safetensors, .parquet, .jsonl or .jsonl.gz", out, filepath.Ext(out))
}

// simFlags names each sim.Config field by its flag.
var simFlags = map[string]string{
	"TrainRows": "rows", "TestRows": "test-rows", "Dim": "dim", "Alpha": "alpha", "Rho01": "rho01",
	"Rho10": "rho10", "ObsRate": "obs-rate", "Seed": "seed", "Latent": "latent", "Clusters": "clusters",
	"Levels": "levels", "RatingNoise": "rating-noise", "NoiseSpread": "noise-spread",
}

// simErr names the flags in sim's validation errors.
func simErr(err error) error {
	var fe *sim.FieldError
	if !errors.As(err, &fe) {
		if msg, ok := strings.CutPrefix(err.Error(), "sim: "); ok {
			return errors.New(msg)
		}
		return err
	}
	return errors.New(fe.Describe(func(field string) string {
		if f, ok := simFlags[field]; ok {
			return "--" + f
		}
		return field
	}))
}

// maxSimValues bounds the embedding values simulate generates: 2^31
// float32 are 8 GiB.
const maxSimValues = 1 << 31

// checkSimFlags refuses what sim would silently replace or what cannot
// fit: sim reads a zero --obs-rate, --latent, --clusters, --levels or
// --rating-noise as "use the default", so an explicit 0 is refused here
// with the flag's range; the rest is sim's validation, with flag names.
func checkSimFlags(cmd *cobra.Command, cfg sim.Config, apply bool) error {
	ch := cmd.Flags().Changed
	for _, z := range []struct {
		flag string
		zero bool
		want string
	}{
		{"obs-rate", cfg.ObsRate == 0, "in (0,1]: the target share of observed rows"},
		{"latent", cfg.Latent == 0, "1..--dim"},
		{"clusters", cfg.Clusters == 0, ">= 1"},
		{"levels", cfg.Levels == 0, ">= 2"},
		{"rating-noise", cfg.RatingNoise == 0, "a finite value > 0"},
	} {
		if ch(z.flag) && z.zero {
			return fmt.Errorf("--%s 0: want %s", z.flag, z.want)
		}
	}
	if apply {
		// --from takes the rows and embeddings from the file.
		for _, f := range []string{"rows", "test-rows", "dim", "latent", "clusters", "levels", "rating-noise", "noise-spread"} {
			if ch(f) {
				return fmt.Errorf("--%s: not used with --from (the file gives the rows, embeddings and ratings)", f)
			}
		}
		return nil
	}
	if err := cfg.Validate(); err != nil {
		return simErr(err)
	}
	if v := (float64(cfg.TrainRows) + float64(cfg.TestRows)) * float64(cfg.Dim); v > maxSimValues {
		return fmt.Errorf("(--rows %d + --test-rows %d) x --dim %d = %s embedding values, more than the limit of %d (8 GiB of float32)",
			cfg.TrainRows, cfg.TestRows, cfg.Dim, nn.FormatCount(v), maxSimValues)
	}
	return nil
}

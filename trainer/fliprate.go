package trainer

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/shard"
)

// flipEstimator is the configured flip-rate estimator ("" reads as the
// default, causal.FlipCrossFit).
func (c Config) flipEstimator() string {
	if c.FlipEstimator == "" {
		return causal.FlipCrossFit
	}
	return c.FlipEstimator
}

// flipRepeats is the configured number of cross-fitting deals (0 reads as
// causal.DefaultFlipRepeats).
func (c Config) flipRepeats() int {
	if c.FlipRepeats == 0 {
		return causal.DefaultFlipRepeats
	}
	return c.FlipRepeats
}

// FoldStage is the name of cross-fitting fold k (0-based) of the noise
// stage: "noise-fold1" and so on.
func FoldStage(k int) string { return FoldStageOf(0, k) }

// FoldStageOf is the name of fold k of cross-fitting repetition r (both
// 0-based): FoldStage(k) for the first, "noise-fold1-r2" and so on after.
func FoldStageOf(r, k int) string {
	if r == 0 {
		return fmt.Sprintf("%s-fold%d", StageNoise, k+1)
	}
	return fmt.Sprintf("%s-fold%d-r%d", StageNoise, k+1, r+1)
}

// IsFoldStage reports whether a stage name is a cross-fitting fold of the
// noise stage (FoldStage).
func IsFoldStage(name string) bool { return strings.HasPrefix(name, StageNoise+"-fold") }

// FoldStages lists the cross-fitting fold stages in t.Stages, in the order
// they ran.
func (t *Trainer) FoldStages() []*StageResult {
	var out []*StageResult
	for r := range t.cfg.flipRepeats() {
		for k := range causal.DefaultFlipFolds {
			if s := t.Stages[FoldStageOf(r, k)]; s != nil {
				out = append(out, s)
			}
		}
	}
	return out
}

// observedBCEStage is a stage trained with BCE against the noisy label on
// the given training rows, validated on the observed validation rows.
func (t *Trainer) observedBCEStage(name string, rows []int32) *stage {
	tr, va := t.ds.Train, t.ds.Val
	return &stage{
		name: name, rows: rows, valRows: shard.ObservedRows(va),
		loss: func(r int32, f float64) (float64, float64) { return causal.BCERow(f, tr.Y[r]) },
		valLoss: func(r int32, f float64) float64 {
			l, _ := causal.BCERow(f, va.Y[r])
			return l
		},
	}
}

// crossFitRates is the default flip-rate estimate (docs/method.md,
// "Flip-rate estimation"): the observed training rows are dealt into
// causal.DefaultFlipFolds folds in row order (the j-th observed row to fold
// j mod K); fold k's noise model trains on the other folds (early stopping
// on the observed validation rows, as the full noise model) and scores
// fold k. The observed validation rows get the mean of the K models'
// logits (summed in fold order). causal.EstimateFlipRatesTail then reads
// the rates off the labels of the lowest and highest of these out-of-fold
// logits.
//
// Every holder computes the same bits: each fold is a stage like any
// other, its scores are gathered on every holder, and the rest is a pure
// function of them. A fold already in t.Stages (a restored snapshot) is
// not trained again. The folds stay in t.Stages (IsFoldStage names them):
// a run lists them with its stages, but saves only the full noise model.
func (t *Trainer) crossFitRates(ctx context.Context) (causal.FlipEstimate, error) {
	z, y, err := t.crossFitLogits(ctx)
	if err != nil {
		return causal.FlipEstimate{}, err
	}
	return causal.EstimateFlipRatesTail(z, y, causal.DefaultFlipTail), nil
}

// crossFitLogits returns crossFitRates' out-of-fold logits and the noisy
// labels of the observed training rows (in row order) followed by those of
// the observed validation rows. With R repetitions (flipRepeats) each
// training row's logit is the mean of R out-of-fold logits, one from each
// repetition's fold models (repetition 1 deals the rows as j mod K, a later
// one by a fixed permutation), and a validation row's the mean over all
// R·K models.
func (t *Trainer) crossFitLogits(ctx context.Context) ([]float64, []uint8, error) {
	tr, va := t.ds.Train, t.ds.Val
	K, R := causal.DefaultFlipFolds, t.cfg.flipRepeats()
	obs, obsVal := shard.ObservedRows(tr), shard.ObservedRows(va)
	if len(obs) < K {
		return nil, nil, fmt.Errorf("%w: noise stage: %d observed training rows, fewer than the %d cross-fitting folds", ErrConfig, len(obs), K)
	}
	z := make([]float64, len(obs)+len(obsVal))
	for r := range R {
		// pos[j] is observed row j's place in this repetition's deal.
		pos := make([]int32, len(obs))
		if r == 0 {
			for j := range pos {
				pos[j] = int32(j)
			}
		} else {
			for i, j := range shard.EpochPerm(t.cfg.Seed, StageNoise+"-crossfit", r, len(obs)) {
				pos[j] = int32(i)
			}
		}
		for k := range K {
			if err := t.foldLogits(ctx, FoldStageOf(r, k), obs, obsVal, func(j int) bool { return int(pos[j])%K == k }, z); err != nil {
				return nil, nil, err
			}
		}
	}
	y := make([]uint8, len(z))
	for j, r := range obs {
		y[j] = tr.Y[r]
		z[j] /= float64(R)
	}
	for j, r := range obsVal {
		z[len(obs)+j] /= float64(R * K)
		y[len(obs)+j] = va.Y[r]
	}
	for _, v := range z {
		if math.IsInf(v, 0) {
			return nil, nil, fmt.Errorf("noise stage: an infinite out-of-fold logit")
		}
	}
	return z, y, nil
}

// foldLogits trains (or takes from t.Stages) the fold stage name, which
// trains on the observed training rows j with !held(j), and adds its
// logits of the held rows and of the observed validation rows to z
// (training rows first, in row order, then the validation rows). A fold
// it trains ends, after its scoring, with the stage hook, like any other
// trained stage.
func (t *Trainer) foldLogits(ctx context.Context, name string, obs, obsVal []int32, held func(j int) bool, z []float64) error {
	tr, va := t.ds.Train, t.ds.Val
	nHeld := 0
	for j := range obs {
		if held(j) {
			nHeld++
		}
	}
	res := t.Stages[name]
	trained := res == nil
	if trained {
		rows := make([]int32, 0, len(obs)-nHeld)
		for j, r := range obs {
			if !held(j) {
				rows = append(rows, r)
			}
		}
		var err error
		if res, err = t.runStage(ctx, t.observedBCEStage(name, rows)); err != nil {
			return err
		}
	}
	if res.Scores == nil {
		id := func(f float64) float64 { return f }
		zt, err := t.score(ctx, res.Model, tr, id)
		if err != nil {
			return err
		}
		zv, err := t.score(ctx, res.Model, va, id)
		if err != nil {
			return err
		}
		for j, r := range obs {
			if held(j) {
				res.Scores = append(res.Scores, zt[r])
			}
		}
		for _, r := range obsVal {
			res.Scores = append(res.Scores, zv[r])
		}
	}
	if want := nHeld + len(obsVal); len(res.Scores) != want {
		return fmt.Errorf("%w: %s holds %d scores, want %d", ErrSnapshot, name, len(res.Scores), want)
	}
	if trained {
		if err := t.stageDone(ctx, name); err != nil {
			return err
		}
	}
	i := 0
	for j := range obs {
		if held(j) {
			z[j] += res.Scores[i]
			i++
		}
	}
	for j := range obsVal {
		z[len(obs)+j] += res.Scores[i]
		i++
	}
	return nil
}

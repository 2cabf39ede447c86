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

// FoldStage is the name of cross-fitting fold k (0-based) of the noise
// stage: "noise-fold1" and so on.
func FoldStage(k int) string { return fmt.Sprintf("%s-fold%d", StageNoise, k+1) }

// IsFoldStage reports whether a stage name is a cross-fitting fold of the
// noise stage (FoldStage).
func IsFoldStage(name string) bool { return strings.HasPrefix(name, StageNoise+"-fold") }

// FoldStages lists the cross-fitting fold stages in t.Stages, in fold order.
func (t *Trainer) FoldStages() []*StageResult {
	var out []*StageResult
	for k := range causal.DefaultFlipFolds {
		if s := t.Stages[FoldStage(k)]; s != nil {
			out = append(out, s)
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
// the observed validation rows.
func (t *Trainer) crossFitLogits(ctx context.Context) ([]float64, []uint8, error) {
	tr, va := t.ds.Train, t.ds.Val
	K := causal.DefaultFlipFolds
	obs, obsVal := shard.ObservedRows(tr), shard.ObservedRows(va)
	if len(obs) < K {
		return nil, nil, fmt.Errorf("%w: noise stage: %d observed training rows, fewer than the %d cross-fitting folds", ErrConfig, len(obs), K)
	}
	z := make([]float64, len(obs)+len(obsVal))
	id := func(f float64) float64 { return f }
	for k := range K {
		name := FoldStage(k)
		res := t.Stages[name]
		if res == nil {
			rows := make([]int32, 0, len(obs))
			for j, r := range obs {
				if j%K != k {
					rows = append(rows, r)
				}
			}
			var err error
			if res, err = t.runStage(ctx, t.observedBCEStage(name, rows)); err != nil {
				return nil, nil, err
			}
		}
		if res.Scores == nil {
			zt, err := t.score(ctx, res.Model, tr, id)
			if err != nil {
				return nil, nil, err
			}
			zv, err := t.score(ctx, res.Model, va, id)
			if err != nil {
				return nil, nil, err
			}
			for j := k; j < len(obs); j += K {
				res.Scores = append(res.Scores, zt[obs[j]])
			}
			for _, r := range obsVal {
				res.Scores = append(res.Scores, zv[r])
			}
		}
		if want := (len(obs)-k+K-1)/K + len(obsVal); len(res.Scores) != want {
			return nil, nil, fmt.Errorf("%w: fold %d holds %d scores, want %d", ErrSnapshot, k+1, len(res.Scores), want)
		}
		i := 0
		for j := k; j < len(obs); j += K {
			z[j] = res.Scores[i]
			i++
		}
		for j := range obsVal {
			z[len(obs)+j] += res.Scores[i]
			i++
		}
	}
	y := make([]uint8, len(z))
	for j, r := range obs {
		y[j] = tr.Y[r]
	}
	for j, r := range obsVal {
		z[len(obs)+j] /= float64(K)
		y[len(obs)+j] = va.Y[r]
	}
	for _, v := range z {
		if math.IsInf(v, 0) {
			return nil, nil, fmt.Errorf("noise stage: an infinite out-of-fold logit")
		}
	}
	return z, y, nil
}

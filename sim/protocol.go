package sim

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/causalrm/causalrm/shard"
)

// PCG stream constants: rand.NewPCG(cfg.Seed, stream). One stream per purpose
// keeps the draws of one step independent of every other step's settings; in
// particular the per-row uniforms deciding observation and flips are the same
// for every Alpha, Rho and ObsRate, so sweeps compare like with like (common
// random numbers).
const (
	streamSplit   = 1  // train/val permutation
	streamObserve = 2  // one uniform per train+val row: o = u < p
	streamFlip    = 3  // one uniform per train+val row: flip if u < rho
	streamWorld   = 10 // mixture means, mixing matrix A, score directions
	streamCalib   = 11 // latent sample that fixes the rating thresholds
	streamTrain   = 12 // training-part rows of Generate
	streamTest    = 13 // test rows of Generate
	streamNoise   = 14 // per-cluster rating noise scales (NoiseSpread)
)

// ValFraction is the share of the training part that step 1 moves to validation.
const ValFraction = 0.2

func newRand(seed uint64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, stream))
}

// Propensity is step 2 before normalisation: with g' = 1 + 4 (g-min)/(max-min),
// it is alpha^(5-g') for g' < 5 and exactly 1 at the top level. It is monotone
// non-decreasing in g for alpha in (0,1].
func Propensity(g, min, max, alpha float64) float64 {
	gp := 1 + 4*(g-min)/(max-min)
	if gp >= 5 {
		return 1
	}
	return math.Pow(alpha, 5-gp)
}

// Levels returns the sorted distinct rating values and their median (the mean
// of the two middle ones when the count is even). Step 4 thresholds on the
// median of the levels, not of the rows, so r does not depend on how the rows
// are distributed over the levels.
func Levels(ratings ...[]float32) (levels []float64, median float64) {
	for _, rs := range ratings {
		for _, g := range rs {
			levels = append(levels, float64(g))
		}
	}
	slices.Sort(levels)
	levels = slices.Compact(levels)
	m := len(levels)
	switch {
	case m == 0:
		return nil, math.NaN()
	case m%2 == 1:
		return levels, levels[m/2]
	default:
		return levels, (levels[m/2-1] + levels[m/2]) / 2
	}
}

// Apply turns a fully labelled dataset into observational feedback by steps
// 1-6 of docs/method.md ("The semi-synthetic protocol"). full.Train (and full.Val, if given) must have a
// Rating column; full.Test must have Rating or R. full is not modified; the
// result's Test shares X with full.Test (read-only), everything else is new.
//
//  1. full.Train is split ValFraction into validation with a seeded permutation
//     (stream streamSplit); rows keep their input order inside each split. If
//     full.Val is non-nil it is taken as the validation split and not re-split.
//  2. g' = 1 + 4 (g-min)/(max-min), min and max over all ratings in the dataset
//     (train, val and test); p = Propensity(g); then p *= k with k chosen so that
//     the mean of p over the train+val rows equals cfg.ObsRate. P = min(p, 1) is
//     recorded. When the top level holds fewer than ObsRate of the rows (tiny
//     alpha), clipping makes the realised observed share fall below ObsRate;
//     that is the protocol, not a bug.
//  3. o ~ Bernoulli(P), one uniform per row from stream streamObserve.
//  4. r = 1 if g > the median of the distinct rating levels (see Levels).
//  5. On observed rows only, y flips 1->0 with cfg.Rho01 and 0->1 with cfg.Rho10
//     (one uniform per row from stream streamFlip, drawn for every row).
//     Y = noisy label where O = 1 and 0 elsewhere; R keeps the clean label.
//  6. Test: O = 1, Y = R, P = nil (clean and fully observed).
//
// Rows are visited in the order train then val for both uniform streams. Rows
// without IDs get "train-<i>" (index in full.Train), "val-<i>" or "test-<i>".
func Apply(full *shard.Dataset, cfg Config) (*shard.Dataset, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validateProtocol(); err != nil {
		return nil, err
	}
	if err := checkInput(full); err != nil {
		return nil, err
	}
	var valRating []float32
	if full.Val != nil {
		valRating = full.Val.Rating
	}
	levels, median := Levels(full.Train.Rating, valRating, full.Test.Rating)
	gmin, gmax := levels[0], levels[len(levels)-1]
	if gmin == gmax {
		return nil, fmt.Errorf("sim: all ratings equal %v; the protocol needs at least two levels", gmin)
	}
	train, val, err := splitTrainVal(full, cfg.Seed)
	if err != nil {
		return nil, err
	}
	parts := []*shard.Split{train, val}
	raw, k := propensities(parts, gmin, gmax, cfg)
	observe(parts, raw, k, median, cfg)
	test := cleanTest(full.Test, median)
	return &shard.Dataset{Train: train, Val: val, Test: test}, nil
}

// checkInput rejects a dataset Apply cannot use: missing splits, bad
// shapes, dimensions that differ, a test split with neither rating nor r.
func checkInput(full *shard.Dataset) error {
	if full == nil || full.Train == nil {
		return errors.New("sim: the protocol needs a training split (rows of split train)")
	}
	if full.Test == nil {
		return errors.New("sim: the protocol needs a test split (rows of split test)")
	}
	if err := checkSplit(full.Train, true); err != nil {
		return err
	}
	if full.Val != nil {
		if err := checkSplit(full.Val, true); err != nil {
			return err
		}
		if full.Val.D != full.Train.D {
			return fmt.Errorf("sim: val dimension %d != train dimension %d", full.Val.D, full.Train.D)
		}
	}
	if err := checkSplit(full.Test, false); err != nil {
		return err
	}
	if full.Test.D != full.Train.D {
		return fmt.Errorf("sim: test dimension %d != train dimension %d", full.Test.D, full.Train.D)
	}
	if full.Test.Rating == nil && full.Test.R == nil {
		return errors.New("sim: test split needs a rating or a clean label r")
	}
	return nil
}

// splitTrainVal is step 1: the train and validation splits, the latter
// ValFraction of full.Train by a seeded permutation unless full.Val is given.
func splitTrainVal(full *shard.Dataset, seed uint64) (train, val *shard.Split, err error) {
	if full.Val != nil {
		return gather(full.Train, "train", "train", nil), gather(full.Val, "val", "val", nil), nil
	}
	n := full.Train.N
	nVal := int(math.Round(ValFraction * float64(n)))
	if nVal < 1 || n-nVal < 1 {
		return nil, nil, fmt.Errorf("sim: %d training rows are too few for an 80/20 train/val split", n)
	}
	perm := newRand(seed, streamSplit).Perm(n)
	valIdx, trainIdx := perm[:nVal], perm[nVal:]
	slices.Sort(valIdx)
	slices.Sort(trainIdx)
	return gather(full.Train, "train", "train", trainIdx), gather(full.Train, "val", "train", valIdx), nil
}

// propensities is step 2: the raw propensity of every row of parts, and
// the one scale factor k that brings their mean over train+val to
// cfg.ObsRate.
func propensities(parts []*shard.Split, gmin, gmax float64, cfg Config) (raw [][]float64, k float64) {
	raw = make([][]float64, len(parts))
	sum, count := 0.0, 0
	for i, s := range parts {
		raw[i] = make([]float64, s.N)
		for j, g := range s.Rating {
			raw[i][j] = Propensity(float64(g), gmin, gmax, cfg.Alpha)
			sum += raw[i][j]
		}
		count += s.N
	}
	return raw, cfg.ObsRate / (sum / float64(count))
}

// observe is steps 3-5 on parts: P, the observation o, the clean label r
// and the noisy observed label y, drawing one uniform of each stream per
// row in order.
func observe(parts []*shard.Split, raw [][]float64, k, median float64, cfg Config) {
	obsRng := newRand(cfg.Seed, streamObserve)
	flipRng := newRand(cfg.Seed, streamFlip)
	for i, s := range parts {
		s.P = make([]float32, s.N)
		s.O = make([]uint8, s.N)
		s.Y = make([]uint8, s.N)
		s.R = make([]uint8, s.N)
		for j, g := range s.Rating {
			p := math.Min(k*raw[i][j], 1)
			s.P[j] = float32(p)
			if s.P[j] == 0 {
				// Keep the "known propensity in (0,1]" contract when a tiny
				// alpha underflows float32; such a row is never observed anyway.
				s.P[j] = math.SmallestNonzeroFloat32
			}
			uo, uf := obsRng.Float64(), flipRng.Float64()
			if float64(g) > median {
				s.R[j] = 1
			}
			if uo >= p {
				continue // unobserved: O = Y = 0
			}
			s.O[j] = 1
			y := s.R[j]
			if y == 1 && uf < cfg.Rho01 {
				y = 0
			} else if y == 0 && uf < cfg.Rho10 {
				y = 1
			}
			s.Y[j] = y
		}
	}
}

// cleanTest is step 6: the test split clean and fully observed (O = 1,
// Y = R, no P), sharing X with t.
func cleanTest(t *shard.Split, median float64) *shard.Split {
	test := &shard.Split{
		Name: "test", Source: t.Source, N: t.N, D: t.D,
		IDs: ids(t.IDs, "test", t.N, nil), X: t.X,
		O: make([]uint8, t.N), R: make([]uint8, t.N),
	}
	if t.Rating != nil {
		test.Rating = slices.Clone(t.Rating)
		for j, g := range t.Rating {
			if float64(g) > median {
				test.R[j] = 1
			}
		}
	} else {
		copy(test.R, t.R)
	}
	for j := range test.O {
		test.O[j] = 1
	}
	test.Y = slices.Clone(test.R)
	return test
}

// checkSplit rejects shapes Apply cannot index safely and ratings it cannot rescale.
func checkSplit(s *shard.Split, needRating bool) error {
	name := s.Name
	if name == "" {
		name = "split"
	}
	if s.N < 1 || s.D < 1 {
		return fmt.Errorf("sim: %s split has N=%d D=%d; need at least one row and one dimension", name, s.N, s.D)
	}
	if len(s.X) != s.N*s.D {
		return fmt.Errorf("sim: %s split has %d embedding values, want N*D = %d", name, len(s.X), s.N*s.D)
	}
	if s.IDs != nil && len(s.IDs) != s.N {
		return fmt.Errorf("sim: %s split has %d ids for %d rows", name, len(s.IDs), s.N)
	}
	if s.R != nil && len(s.R) != s.N {
		return fmt.Errorf("sim: %s split has %d clean labels for %d rows", name, len(s.R), s.N)
	}
	if s.Rating == nil {
		if needRating {
			return fmt.Errorf("sim: %s split has no rating column; the protocol needs a graded rating", name)
		}
		return nil
	}
	if len(s.Rating) != s.N {
		return fmt.Errorf("sim: %s split has %d ratings for %d rows", name, len(s.Rating), s.N)
	}
	for i, g := range s.Rating {
		if math.IsNaN(float64(g)) || math.IsInf(float64(g), 0) {
			return fmt.Errorf("sim: %s split row %d has non-finite rating %v", name, i, g)
		}
	}
	return nil
}

// gather copies rows idx (all rows when idx is nil) of src into a new split
// carrying X, IDs and Rating; the protocol fills O, Y, P and R afterwards.
func gather(src *shard.Split, name, idPrefix string, idx []int) *shard.Split {
	if idx == nil {
		idx = make([]int, src.N)
		for i := range idx {
			idx[i] = i
		}
	}
	d := src.D
	out := &shard.Split{
		Name: name, Source: src.Source, N: len(idx), D: d,
		IDs:    ids(src.IDs, idPrefix, src.N, idx),
		X:      make([]float32, len(idx)*d),
		Rating: make([]float32, len(idx)),
	}
	for j, i := range idx {
		copy(out.X[j*d:(j+1)*d], src.X[i*d:(i+1)*d])
		out.Rating[j] = src.Rating[i]
	}
	return out
}

// ids returns the IDs of rows idx (all n rows when idx is nil), synthesising
// "<prefix>-<index>" when the input has none.
func ids(src []string, prefix string, n int, idx []int) []string {
	if idx == nil {
		if src != nil {
			return slices.Clone(src)
		}
		idx = make([]int, n)
		for i := range idx {
			idx[i] = i
		}
	}
	out := make([]string, len(idx))
	for j, i := range idx {
		if src != nil {
			out[j] = src[i]
		} else {
			out[j] = fmt.Sprintf("%s-%d", prefix, i)
		}
	}
	return out
}

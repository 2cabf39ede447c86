package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/causalrm/causalrm/shard"
)

// Shape of the synthetic world. Fixed rather than configurable: they only need
// to make the task learnable but not trivial, and fewer knobs keep runs
// comparable.
const (
	clusterSpread = 2.0 // std of mixture means per latent axis (clusters well apart)
	embedNoise    = 0.1 // isotropic noise added to A z
	calibRows     = 1 << 14
)

// world is the seeded generative model: a Gaussian mixture in latent space, a
// linear map to the embedding space and a non-linear rating score.
type world struct {
	cfg        Config
	means      [][]float64 // Clusters x Latent
	a          []float64   // Dim x Latent, row-major
	u, v, w    []float64   // unit score directions in latent space
	thresholds []float64   // Levels-1 ascending score cut points
	noise      []float64   // per-cluster rating noise std
}

func newWorld(cfg Config) *world {
	rng := newRand(cfg.Seed, streamWorld)
	L, D := cfg.Latent, cfg.Dim
	w := &world{cfg: cfg, means: make([][]float64, cfg.Clusters), a: make([]float64, D*L)}
	for c := range w.means {
		w.means[c] = make([]float64, L)
		for k := range w.means[c] {
			w.means[c][k] = clusterSpread * rng.NormFloat64()
		}
	}
	// Var(z_k) ~ 1 + spread^2, so this scale gives Var(x_j) ~ 1.
	scale := 1 / math.Sqrt(float64(L)*(1+clusterSpread*clusterSpread))
	for i := range w.a {
		w.a[i] = scale * rng.NormFloat64()
	}
	w.u, w.v, w.w = unitVec(rng, L), unitVec(rng, L), unitVec(rng, L)
	// Its own stream, so NoiseSpread = 0 leaves every other draw unchanged.
	nrng := newRand(cfg.Seed, streamNoise)
	w.noise = make([]float64, cfg.Clusters)
	for c := range w.noise {
		w.noise[c] = cfg.RatingNoise * math.Exp(cfg.NoiseSpread*nrng.NormFloat64())
	}

	// Thresholds at equal quantiles of the score on a fixed-size sample, so the
	// levels are about equally populated and do not depend on TrainRows.
	crng := newRand(cfg.Seed, streamCalib)
	z := make([]float64, L)
	scores := make([]float64, calibRows)
	for i := range scores {
		c := w.latent(crng, z)
		scores[i] = w.score(crng, z, c)
	}
	slices.Sort(scores)
	for l := 1; l < cfg.Levels; l++ {
		w.thresholds = append(w.thresholds, scores[l*calibRows/cfg.Levels])
	}
	return w
}

func unitVec(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	norm := 0.0
	for i := range v {
		v[i] = rng.NormFloat64()
		norm += v[i] * v[i]
	}
	norm = math.Sqrt(norm)
	for i := range v {
		v[i] /= norm
	}
	return v
}

// latent draws z from the mixture (equal weights, unit covariance) and
// returns its component.
func (w *world) latent(rng *rand.Rand, z []float64) int {
	c := rng.IntN(len(w.means))
	mu := w.means[c]
	for k := range z {
		z[k] = mu[k] + rng.NormFloat64()
	}
	return c
}

// score is the noisy, non-linear quality of latent point z: a saturating
// trend, a quadratic bump and an oscillating interaction, so a linear model on
// x cannot recover it.
func (w *world) score(rng *rand.Rand, z []float64, cluster int) float64 {
	sd := math.Sqrt(1 + clusterSpread*clusterSpread)
	h1, h2, h3 := dot(w.u, z)/sd, dot(w.v, z)/sd, dot(w.w, z)/sd
	s := math.Tanh(2*h1) + 0.5*(h2*h2-1) + 0.5*math.Sin(2*h3*h1)
	return s + w.noise[cluster]*rng.NormFloat64()
}

func dot(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// sample draws n fully labelled rows (X, IDs, Rating) for a split.
func (w *world) sample(name string, n int, rng *rand.Rand) *shard.Split {
	L, D := w.cfg.Latent, w.cfg.Dim
	s := &shard.Split{
		Name: name, Source: "sim", N: n, D: D,
		IDs: make([]string, n), X: make([]float32, n*D), Rating: make([]float32, n),
	}
	z := make([]float64, L)
	for i := 0; i < n; i++ {
		c := w.latent(rng, z)
		x := s.X[i*D : (i+1)*D]
		for j := range x {
			x[j] = float32(dot(w.a[j*L:(j+1)*L], z) + embedNoise*rng.NormFloat64())
		}
		sc := w.score(rng, z, c)
		level := 0
		for level < len(w.thresholds) && sc > w.thresholds[level] {
			level++
		}
		s.Rating[i] = float32(level)
		s.IDs[i] = fmt.Sprintf("%s-%d", name, i)
	}
	return s
}

// Generate draws a synthetic fully labelled dataset (TrainRows training-part
// rows, TestRows test rows, integer ratings 0..Levels-1) and passes it through
// Apply. The latent z follows a mixture of Clusters unit Gaussians in Latent
// dimensions; x = A z + noise with A fixed by the seed and scaled so entries of
// x have variance about 1; the rating thresholds a non-linear function of z
// plus Gaussian noise at equal quantiles.
func Generate(cfg Config) (*shard.Dataset, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := newWorld(cfg)
	full := &shard.Dataset{
		Train: w.sample("train", cfg.TrainRows, newRand(cfg.Seed, streamTrain)),
		Test:  w.sample("test", cfg.TestRows, newRand(cfg.Seed, streamTest)),
	}
	return Apply(full, cfg)
}

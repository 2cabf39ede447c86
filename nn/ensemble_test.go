package nn

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// The averaged model's logit equals the mean of its members' logits
// (float64 forward passes of each), for one to four members and depths
// of one to three hidden layers.
func TestAverageIsTheMeanLogit(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, dims := range [][]int{{5, 1}, {7, 6, 1}, {9, 8, 4, 1}, {6, 5, 4, 3, 1}} {
		cfg := Config{Dims: dims, Slope: 0.01}
		for k := 1; k <= 4; k++ {
			var models []*MLP
			for j := range k {
				m, err := New(cfg, uint64(10*k+j))
				if err != nil {
					t.Fatal(err)
				}
				models = append(models, m)
			}
			avg, err := Average(models...)
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i < len(dims)-1; i++ {
				if avg.Cfg.Dims[i] != k*dims[i] {
					t.Fatalf("dims %v, k %d: merged dims %v", dims, k, avg.Cfg.Dims)
				}
			}
			for range 20 {
				x := make([]float64, dims[0])
				for i := range x {
					x[i] = 3 * rng.NormFloat64()
				}
				want := 0.0
				for _, m := range models {
					want += RefForward64(cfg, toF64(m.Params), x) / float64(k)
				}
				got := RefForward64(avg.Cfg, toF64(avg.Params), x)
				if math.Abs(got-want) > 1e-5*math.Max(1, math.Abs(want)) {
					t.Fatalf("dims %v, %d models: merged logit %v, mean of the members' %v", dims, k, got, want)
				}
			}
		}
	}
	a, _ := New(Config{Dims: []int{4, 3, 1}}, 1)
	b, _ := New(Config{Dims: []int{4, 2, 1}}, 1)
	if _, err := Average(a, b); !errors.Is(err, ErrConfig) {
		t.Fatalf("models of different dims: %v", err)
	}
	if _, err := Average(); !errors.Is(err, ErrConfig) {
		t.Fatalf("no models: %v", err)
	}
}

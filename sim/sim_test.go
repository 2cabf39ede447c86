package sim

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/causalrm/causalrm/shard"
)

// small is a fast configuration with enough rows for binomial checks.
func small() Config {
	c := DefaultConfig()
	c.TrainRows, c.TestRows, c.Dim, c.Latent = 20000, 500, 8, 4
	return c
}

func gen(t *testing.T, c Config) *shard.Dataset {
	t.Helper()
	ds, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// tol is a 5-sigma binomial tolerance for a rate p estimated from n trials.
func tol(p float64, n int) float64 { return 5 * math.Sqrt(p*(1-p)/float64(n)) }

func TestShapes(t *testing.T) {
	c := small()
	ds := gen(t, c)
	if ds.Train.N+ds.Val.N != c.TrainRows || ds.Val.N != c.TrainRows/5 || ds.Test.N != c.TestRows {
		t.Fatalf("sizes train %d val %d test %d", ds.Train.N, ds.Val.N, ds.Test.N)
	}
	seen := map[string]bool{}
	counts := make([]int, c.Levels)
	for _, s := range []*shard.Split{ds.Train, ds.Val, ds.Test} {
		if len(s.X) != s.N*c.Dim || len(s.O) != s.N || len(s.Y) != s.N || len(s.R) != s.N || len(s.IDs) != s.N {
			t.Fatalf("%s: column lengths wrong", s.Name)
		}
		for _, id := range s.IDs {
			if seen[id] {
				t.Fatalf("duplicate id %q", id)
			}
			seen[id] = true
		}
		for _, g := range s.Rating {
			if g != float32(int(g)) || g < 0 || int(g) >= c.Levels {
				t.Fatalf("rating %v not an integer level", g)
			}
			counts[int(g)]++
		}
		var ss float64
		for _, x := range s.X {
			ss += float64(x) * float64(x)
		}
		if rms := math.Sqrt(ss / float64(len(s.X))); rms < 0.3 || rms > 3 {
			t.Fatalf("%s: x rms %v, want O(1)", s.Name, rms)
		}
	}
	for l, n := range counts {
		if share := float64(n) / float64(c.TrainRows+c.TestRows); share < 0.1 || share > 0.3 {
			t.Errorf("level %d holds %.3f of rows, want about %.2f", l, share, 1/float64(c.Levels))
		}
	}
	if ds.Test.P != nil {
		t.Error("test split should carry no propensity")
	}
	for i := range ds.Test.O {
		if ds.Test.O[i] != 1 || ds.Test.Y[i] != ds.Test.R[i] {
			t.Fatal("test split must be clean and fully observed")
		}
	}
}

func TestObservedShare(t *testing.T) {
	for _, obs := range []float64{0.2, 0.1} {
		c := small()
		c.ObsRate = obs
		ds := gen(t, c)
		n, nObs, sumP := 0, 0, 0.0
		for _, s := range []*shard.Split{ds.Train, ds.Val} {
			for i := range s.O {
				n++
				nObs += int(s.O[i])
				sumP += float64(s.P[i])
				if s.P[i] <= 0 || s.P[i] > 1 {
					t.Fatalf("P %v outside (0,1]", s.P[i])
				}
			}
		}
		if m := sumP / float64(n); math.Abs(m-obs) > 1e-5 {
			t.Errorf("mean P %v, want %v (no clipping at alpha 0.5)", m, obs)
		}
		if share := float64(nObs) / float64(n); math.Abs(share-obs) > tol(obs, n) {
			t.Errorf("observed share %v, want %v +- %v", share, obs, tol(obs, n))
		}
	}
}

func TestPropensityMonotone(t *testing.T) {
	for _, alpha := range []float64{0.005, 0.1, 0.5, 1} {
		prev := 0.0
		for g := 0.0; g <= 4; g += 0.25 {
			p := Propensity(g, 0, 4, alpha)
			if p < prev || p <= 0 || p > 1 {
				t.Fatalf("alpha %v: p(%v)=%v after %v", alpha, g, p, prev)
			}
			prev = p
		}
		if Propensity(4, 0, 4, alpha) != 1 || Propensity(10, 1, 10, alpha) != 1 {
			t.Fatalf("alpha %v: top level must have p = 1 before scaling", alpha)
		}
	}
	if got, want := Propensity(2, 0, 4, 0.5), 0.25; math.Abs(got-want) > 1e-12 {
		t.Fatalf("p(g'=3) = %v, want 0.5^2 = %v", got, want)
	}
	// In a generated dataset P is a function of the rating, increasing in it.
	ds := gen(t, small())
	byLevel := map[float32]float32{}
	for _, s := range []*shard.Split{ds.Train, ds.Val} {
		for i, g := range s.Rating {
			if p, ok := byLevel[g]; ok && p != s.P[i] {
				t.Fatalf("level %v has two propensities %v and %v", g, p, s.P[i])
			}
			byLevel[g] = s.P[i]
		}
	}
	for l := float32(1); l < 5; l++ {
		if byLevel[l] <= byLevel[l-1] {
			t.Fatalf("P(level %v)=%v not above P(level %v)=%v", l, byLevel[l], l-1, byLevel[l-1])
		}
	}
	if r := byLevel[4] / byLevel[3]; math.Abs(float64(r)-2) > 1e-5 {
		t.Fatalf("alpha 0.5: top/next propensity ratio %v, want 2", r)
	}
}

func TestFlipRates(t *testing.T) {
	for _, rho := range [][2]float64{{0.1, 0.2}, {0.2, 0.1}, {0, 0}} {
		c := small()
		c.TrainRows = 40000
		c.Rho01, c.Rho10 = rho[0], rho[1]
		ds := gen(t, c)
		var n1, f1, n0, f0 int
		for _, s := range []*shard.Split{ds.Train, ds.Val} {
			for i := range s.O {
				if s.O[i] == 0 {
					continue
				}
				if s.R[i] == 1 {
					n1++
					f1 += int(1 - s.Y[i])
				} else {
					n0++
					f0 += int(s.Y[i])
				}
			}
		}
		if n1 < 500 || n0 < 500 {
			t.Fatalf("too few observed rows per class: %d %d", n1, n0)
		}
		if r := float64(f1) / float64(n1); math.Abs(r-rho[0]) > tol(math.Max(rho[0], 1e-3), n1) {
			t.Errorf("rho01: flipped %v of observed positives, want %v", r, rho[0])
		}
		if r := float64(f0) / float64(n0); math.Abs(r-rho[1]) > tol(math.Max(rho[1], 1e-3), n0) {
			t.Errorf("rho10: flipped %v of observed negatives, want %v", r, rho[1])
		}
	}
}

func TestNoFlipsUnobserved(t *testing.T) {
	ds := gen(t, small())
	_, med := Levels(ds.Train.Rating, ds.Val.Rating, ds.Test.Rating)
	if med != 2 {
		t.Fatalf("median of levels 0..4 = %v, want 2", med)
	}
	for _, s := range []*shard.Split{ds.Train, ds.Val, ds.Test} {
		for i := range s.R {
			want := uint8(0)
			if s.Rating[i] > 2 {
				want = 1
			}
			if s.R[i] != want {
				t.Fatalf("%s row %d: clean label %d for rating %v", s.Name, i, s.R[i], s.Rating[i])
			}
			if s.O[i] == 0 && s.Y[i] != 0 {
				t.Fatalf("%s row %d: unobserved row has y = 1", s.Name, i)
			}
		}
	}
}

// Selection bias: observed rows over-represent r = 1, more so at small alpha.
func TestSelectionBias(t *testing.T) {
	prevGap := 0.0
	for _, alpha := range []float64{1, 0.8, 0.5, 0.2} {
		c := small()
		c.Alpha = alpha
		ds := gen(t, c)
		var n, pos, nObs, posObs int
		for _, s := range []*shard.Split{ds.Train, ds.Val} {
			for i := range s.R {
				n++
				pos += int(s.R[i])
				if s.O[i] == 1 {
					nObs++
					posObs += int(s.R[i])
				}
			}
		}
		gap := float64(posObs)/float64(nObs) - float64(pos)/float64(n)
		t.Logf("alpha %v: population mean r %.3f, observed mean r %.3f", alpha, float64(pos)/float64(n), float64(posObs)/float64(nObs))
		if alpha == 1 {
			if math.Abs(gap) > tol(0.5, nObs) {
				t.Errorf("alpha 1 must be unbiased, gap %v", gap)
			}
		} else if gap <= prevGap+0.01 {
			t.Errorf("alpha %v: gap %v not clearly above %v", alpha, gap, prevGap)
		}
		prevGap = gap
	}
}

func TestDeterminism(t *testing.T) {
	c := small()
	c.TrainRows, c.TestRows = 2000, 200
	a, b := gen(t, c), gen(t, c)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed gave different datasets")
	}
	c.Seed++
	d := gen(t, c)
	if reflect.DeepEqual(a.Train.X, d.Train.X) || reflect.DeepEqual(a.Train.O, d.Train.O) {
		t.Fatal("different seeds gave the same data")
	}
}

// userData is a hand-made UltraFeedback-like dataset: ratings 1..10, no IDs.
func userData(nTrain, nTest int) *shard.Dataset {
	mk := func(name string, n int) *shard.Split {
		s := &shard.Split{Name: name, N: n, D: 3, X: make([]float32, 3*n), Rating: make([]float32, n)}
		for i := 0; i < n; i++ {
			s.Rating[i] = float32(1 + i%10)
			s.X[3*i] = float32(i)
		}
		return s
	}
	return &shard.Dataset{Train: mk("train", nTrain), Test: mk("test", nTest)}
}

func TestApplyUserData(t *testing.T) {
	full := userData(1000, 100)
	before := append([]float32(nil), full.Train.X...)
	c := Config{Alpha: 0.5, Rho01: 0.1, Rho10: 0.2, Seed: 7} // ObsRate defaults to 0.2
	ds, err := Apply(full, c)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Train.N != 800 || ds.Val.N != 200 || ds.Test.N != 100 {
		t.Fatalf("split sizes %d/%d/%d", ds.Train.N, ds.Val.N, ds.Test.N)
	}
	if !reflect.DeepEqual(before, full.Train.X) || full.Train.O != nil {
		t.Fatal("Apply modified its input")
	}
	seen := map[string]bool{}
	for _, s := range []*shard.Split{ds.Train, ds.Val, ds.Test} {
		for i := range s.R {
			if seen[s.IDs[i]] {
				t.Fatalf("duplicate id %s", s.IDs[i])
			}
			seen[s.IDs[i]] = true
			// Levels 1..10: median 5.5, so r = 1 for 6..10.
			if want := s.Rating[i] > 5.5; (s.R[i] == 1) != want {
				t.Fatalf("%s: rating %v gave r %d", s.Name, s.Rating[i], s.R[i])
			}
			// Rows keep their embedding: X[0] is the original index, and its
			// rating is 1 + index % 10.
			if orig := int(s.Row(i)[0]); s.Rating[i] != float32(1+orig%10) {
				t.Fatalf("%s row %d: embedding and rating out of step", s.Name, i)
			}
		}
	}
	for i, id := range ds.Train.IDs[:3] {
		if !strings.HasPrefix(id, "train-") {
			t.Fatalf("id %d = %q", i, id)
		}
	}
	// g' for rating 1 is 1 and for 10 is 5: the extreme propensities differ by alpha^4.
	pmin, pmax := float32(2), float32(0)
	for _, p := range append(append([]float32{}, ds.Train.P...), ds.Val.P...) {
		pmin, pmax = min(pmin, p), max(pmax, p)
	}
	if r := float64(pmin / pmax); math.Abs(r-math.Pow(0.5, 4)) > 1e-6 {
		t.Fatalf("propensity range ratio %v, want %v", r, math.Pow(0.5, 4))
	}

	// A given validation split is kept as is.
	full.Val = userData(50, 1).Train
	full.Val.Name = "val"
	ds, err = Apply(full, c)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Train.N != 1000 || ds.Val.N != 50 || ds.Val.IDs[0] != "val-0" {
		t.Fatalf("given val not kept: %d/%d %s", ds.Train.N, ds.Val.N, ds.Val.IDs[0])
	}

	// Test split with only a clean label is accepted.
	full.Test.Rating, full.Test.R = nil, make([]uint8, full.Test.N)
	full.Test.R[3] = 1
	if ds, err = Apply(full, c); err != nil || ds.Test.Y[3] != 1 || ds.Test.R[3] != 1 {
		t.Fatalf("test with R only: %v", err)
	}
}

func TestApplyErrors(t *testing.T) {
	c := Config{Alpha: 0.5, Rho01: 0.1, Rho10: 0.2}
	cases := map[string]func(d *shard.Dataset){
		"no rating column":  func(d *shard.Dataset) { d.Train.Rating = nil },
		"non-finite rating": func(d *shard.Dataset) { d.Train.Rating[2] = float32(math.NaN()) },
		"at least two": func(d *shard.Dataset) {
			d.Train.Rating = make([]float32, d.Train.N)
			d.Test.Rating = nil
			d.Test.R = make([]uint8, d.Test.N)
		},
		"needs a test":   func(d *shard.Dataset) { d.Test = nil },
		"test dimension": func(d *shard.Dataset) { d.Test.D, d.Test.X = 1, make([]float32, d.Test.N) },
		"too few":        func(d *shard.Dataset) { *d = *userData(2, 1) },
	}
	for want, mutate := range cases {
		d := userData(50, 5)
		mutate(d)
		if _, err := Apply(d, c); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v", want, err)
		}
	}
	if _, err := Apply(userData(50, 5), Config{Alpha: 2}); err == nil || !strings.Contains(err.Error(), "Alpha") {
		t.Errorf("bad alpha: %v", err)
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	zeroOptional := DefaultConfig()
	zeroOptional.ObsRate, zeroOptional.Latent, zeroOptional.Clusters, zeroOptional.Levels = 0, 0, 0, 0
	if err := zeroOptional.Validate(); err != nil {
		t.Fatalf("zero optional fields should take defaults: %v", err)
	}
	cases := map[string]func(c *Config){
		"TrainRows": func(c *Config) { c.TrainRows = 4 },
		"TestRows":  func(c *Config) { c.TestRows = 0 },
		"Dim":       func(c *Config) { c.Dim = 0 },
		"Latent":    func(c *Config) { c.Latent = c.Dim + 1 },
		"Clusters":  func(c *Config) { c.Clusters = -1 },
		"Levels":    func(c *Config) { c.Levels = 1 },
		"Alpha":     func(c *Config) { c.Alpha = 0 },
		"Rho01":     func(c *Config) { c.Rho01 = 1 },
		"Rho10":     func(c *Config) { c.Rho10 = math.NaN() },
		"Rho01+":    func(c *Config) { c.Rho01, c.Rho10 = 0.5, 0.5 },
		"ObsRate":   func(c *Config) { c.ObsRate = 1.5 },
	}
	for field, mutate := range cases {
		c := DefaultConfig()
		mutate(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v", field, err)
		}
		if _, gerr := Generate(c); gerr == nil {
			t.Errorf("%s: Generate accepted an invalid config", field)
		}
	}
}

func TestLevelsMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float32
		want float64
	}{
		{[]float32{4, 0, 1, 1, 2, 3, 3}, 2},
		{[]float32{10, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 5.5},
		{[]float32{0, 3, 3, 3, 3, 3, 3}, 1.5},
	} {
		if _, m := Levels(tc.in); m != tc.want {
			t.Errorf("Levels(%v) median %v, want %v", tc.in, m, tc.want)
		}
	}
}

// The generated dataset survives the project's file format unchanged, so a
// CLI "simulate then train" pipeline sees exactly what Generate made.
func TestSafetensorsRoundTrip(t *testing.T) {
	c := small()
	c.TrainRows, c.TestRows = 500, 50
	ds := gen(t, c)
	path := t.TempDir() + "/sim.safetensors"
	if err := shard.WriteSafetensors(path, ds); err != nil {
		t.Fatal(err)
	}
	got, err := shard.Load(shard.LoadSpec{Train: path})
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]*shard.Split{{ds.Train, got.Train}, {ds.Val, got.Val}, {ds.Test, got.Test}} {
		want, have := *pair[0], *pair[1]
		want.Source, have.Source = "", ""
		if !reflect.DeepEqual(want, have) {
			t.Fatalf("%s split changed in the round trip", want.Name)
		}
	}
	// The loaded file, with its ratings, can go through the protocol again.
	if _, err := Apply(got, c); err != nil {
		t.Fatal(err)
	}
}

// TestNoiseSpread: the spread changes only the ratings (and what follows
// from them), never the embeddings; without it every cluster has the same
// rating noise, with it the noise differs between clusters; a bad value is
// refused by name.
func TestNoiseSpread(t *testing.T) {
	c := small()
	c.TrainRows = 4000
	flat := gen(t, c)
	c.NoiseSpread = 1.5
	spread := gen(t, c)
	if !reflect.DeepEqual(flat.Train.X, spread.Train.X) || !reflect.DeepEqual(flat.Test.X, spread.Test.X) {
		t.Fatal("NoiseSpread changed the embeddings")
	}
	if reflect.DeepEqual(flat.Train.Rating, spread.Train.Rating) {
		t.Fatal("NoiseSpread changed no rating")
	}
	w0 := newWorld(small().withDefaults())
	c1 := small()
	c1.NoiseSpread = 1.5
	w1 := newWorld(c1.withDefaults())
	lo, hi := math.Inf(1), 0.0
	for i, s := range w1.noise {
		if w0.noise[i] != w0.cfg.RatingNoise {
			t.Fatalf("spread 0: cluster %d noise %v, want %v", i, w0.noise[i], w0.cfg.RatingNoise)
		}
		lo, hi = min(lo, s), max(hi, s)
	}
	if hi/lo < 3 {
		t.Fatalf("spread 1.5: cluster noise from %v to %v, want a ratio of at least 3", lo, hi)
	}
	c.NoiseSpread = -1
	if _, err := Generate(c); err == nil || !strings.Contains(err.Error(), "NoiseSpread") {
		t.Fatalf("negative spread: %v", err)
	}
}

// Validation errors are *FieldError, so that a caller can name the fields
// its own way (the CLI: --latent 16 must be <= --dim 8).
func TestFieldErrorDescribe(t *testing.T) {
	c := DefaultConfig()
	c.Latent, c.Dim = 16, 8
	err := c.Validate()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("%T %v", err, err)
	}
	flags := map[string]string{"Latent": "--latent", "Dim": "--dim"}
	if got := fe.Describe(func(f string) string { return flags[f] }); !strings.HasPrefix(got, "--latent 16 must be <= --dim 8") {
		t.Fatalf("Describe: %q", got)
	}
	if got := err.Error(); !strings.HasPrefix(got, "sim: Latent 16 must be <= Dim 8") {
		t.Fatalf("Error: %q", got)
	}
}

package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// testData makes n rows of dimension d, quantized onto their column grids.
func testData(t *testing.T, n, d int, seed uint64) ([]float32, []int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n*d)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * math.Pow(2, float64(i%d%5-2)))
	}
	exps := ColumnExps(d, x)
	QuantizeX(x, d, exps)
	return x, exps
}

func toF64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func rowsOf(x []float32, d int) [][]float64 {
	var out [][]float64
	for i := 0; i+d <= len(x); i += d {
		out = append(out, toF64(x[i:i+d]))
	}
	return out
}

func seq(n int) []int32 {
	r := make([]int32, n)
	for i := range r {
		r[i] = int32(i)
	}
	return r
}

func relErr(a, b []float64) float64 {
	num, den := 0.0, 0.0
	for i := range a {
		num += (a[i] - b[i]) * (a[i] - b[i])
		den += b[i] * b[i]
	}
	return math.Sqrt(num / math.Max(den, 1e-300))
}

func TestRefGradMatchesFiniteDifferences(t *testing.T) {
	cfg := Config{Dims: []int{6, 5, 3, 1}, Slope: 0.01}
	m, _ := New(cfg, 3)
	params := toF64(m.Params)
	x, _ := testData(t, 4, 6, 9)
	xs := rowsOf(x, 6)
	w := []float64{0.3, -1.2, 0.7, 2.0}
	obj := func(p []float64) float64 {
		s := 0.0
		for i, r := range xs {
			s += w[i] * RefForward64(cfg, p, r)
		}
		return s
	}
	g := RefGrad64(cfg, params, xs, w)
	const h = 1e-6
	for i := range params {
		p := append([]float64(nil), params...)
		p[i] += h
		up := obj(p)
		p[i] -= 2 * h
		down := obj(p)
		fd := (up - down) / (2 * h)
		if math.Abs(fd-g[i]) > 1e-6*math.Max(1, math.Abs(fd)) {
			t.Fatalf("param %d: analytic %g, finite difference %g", i, g[i], fd)
		}
	}
}

// exactGrad runs the exact pipeline over one group of rows as a single
// holder: forward, maxima, partial, grad.
func exactGrad(t *testing.T, e *Engine, x []float32, rows []int32, w []float64) []float32 {
	t.Helper()
	e.Forward(x, rows)
	mx := e.Maxima(w)
	part := make([]int64, e.M.Cfg.NumParams())
	if err := e.Partial(mx, part); err != nil {
		t.Fatal(err)
	}
	g := make([]float32, len(part))
	if err := e.Grad(part, mx, 1, g); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestExactAndFastGradientsMatchReference(t *testing.T) {
	for _, dims := range [][]int{{16, 8, 4, 1}, {64, 32, 16, 1}, {33, 1}} {
		cfg := Config{Dims: dims, Slope: 0.01}
		m, _ := New(cfg, 11)
		n := 40
		x, exps := testData(t, n, dims[0], 5)
		rng := rand.New(rand.NewPCG(2, 2))
		w := make([]float64, n)
		for i := range w {
			w[i] = rng.NormFloat64()
		}
		want := RefGrad64(cfg, toF64(m.Params), rowsOf(x, dims[0]), w)

		ex, err := NewEngine(m, true, exps, 64)
		if err != nil {
			t.Fatal(err)
		}
		got := toF64(exactGrad(t, ex, x, seq(n), w))
		if e := relErr(got, want); e > 1e-6 {
			t.Errorf("dims %v: exact gradient relative error %g", dims, e)
		}
		fast, _ := NewEngine(m, false, nil, 64)
		fast.Forward(x, seq(n))
		g32 := make([]float32, cfg.NumParams())
		fast.PartialFast(w, g32)
		if e := relErr(toF64(g32), want); e > 1e-5 {
			t.Errorf("dims %v: fast gradient relative error %g", dims, e)
		}
		// forward against the reference
		f := ex.Forward(x, seq(n))
		for i := 0; i < n; i++ {
			ref := RefForward64(cfg, toF64(m.Params), rowsOf(x, dims[0])[i])
			if math.Abs(f[i]-ref) > 1e-6*math.Max(1, math.Abs(ref)) {
				t.Errorf("dims %v row %d: exact forward %g, reference %g", dims, i, f[i], ref)
			}
		}
	}
}

// A row's forward output must not depend on which rows share its GEMM or
// at which position it sits, for the BLAS backend compiled in.
func TestExactForwardRowIndependent(t *testing.T) {
	for _, dims := range [][]int{{256, 64, 16, 1}, {512, 256, 64, 1}} {
		cfg := Config{Dims: dims, Slope: 0.01}
		m, _ := New(cfg, 1)
		n := 70
		x, exps := testData(t, n, dims[0], 8)
		e, _ := NewEngine(m, true, exps, 128)
		all := append([]float64(nil), e.Forward(x, seq(n))...)
		for _, r := range []int32{0, 5, 37, 69} {
			if got := e.Forward(x, []int32{r})[0]; got != all[r] {
				t.Fatalf("%s dims %v: row %d alone %v, in batch %v", Backend(), dims, r, got, all[r])
			}
			rows := []int32{3, 9, r, 1, 2}
			if got := e.Forward(x, rows)[2]; got != all[r] {
				t.Fatalf("%s dims %v: row %d at another position %v, in batch %v", Backend(), dims, r, got, all[r])
			}
		}
	}
}

// The exact partial gradients of any partition of the rows, in any order,
// sum to the same bits as the whole batch at once (a property test).
func TestExactPartialsAnyPartition(t *testing.T) {
	cfg := Config{Dims: []int{48, 16, 8, 1}, Slope: 0.01}
	m, _ := New(cfg, 4)
	n := 60
	x, exps := testData(t, n, 48, 6)
	rng := rand.New(rand.NewPCG(7, 7))
	w := make([]float64, n)
	for i := range w {
		w[i] = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(5)-2))
	}
	e, _ := NewEngine(m, true, exps, 64)
	e.Forward(x, seq(n))
	whole := e.Maxima(w)
	ref := make([]int64, cfg.NumParams())
	if err := e.Partial(whole, ref); err != nil {
		t.Fatal(err)
	}
	for trial := 0; trial < 20; trial++ {
		perm := rng.Perm(n)
		groups := 1 + rng.IntN(6)
		cut := make([][]int32, groups)
		for _, r := range perm {
			g := rng.IntN(groups)
			cut[g] = append(cut[g], int32(r))
		}
		// max-reduce the maxima of the groups, then sum their partials.
		maxima := make([]float64, len(whole))
		engines := make([]*Engine, groups)
		for g, rows := range cut {
			engines[g], _ = NewEngine(m, true, exps, 64)
			engines[g].Forward(x, rows)
			ww := make([]float64, len(rows))
			for i, r := range rows {
				ww[i] = w[r]
			}
			for i, v := range engines[g].Maxima(ww) {
				maxima[i] = math.Max(maxima[i], v)
			}
		}
		for i := range maxima {
			if maxima[i] != whole[i] {
				t.Fatalf("trial %d: reduced maximum %d = %v, whole batch %v", trial, i, maxima[i], whole[i])
			}
		}
		sum := make([]int64, len(ref))
		part := make([]int64, len(ref))
		for g := range cut {
			if err := engines[g].Partial(maxima, part); err != nil {
				t.Fatal(err)
			}
			for i, v := range part {
				sum[i] += v
			}
		}
		for i := range sum {
			if sum[i] != ref[i] {
				t.Fatalf("trial %d (%d groups): element %d sums to %d, whole batch %d", trial, groups, i, sum[i], ref[i])
			}
		}
	}
}

func TestInitLikeTorch(t *testing.T) {
	cfg := DefaultConfig(100)
	a, _ := New(cfg, 42)
	b, _ := New(cfg, 42)
	c, _ := New(cfg, 43)
	same, diff := true, false
	for i := range a.Params {
		same = same && a.Params[i] == b.Params[i]
		diff = diff || a.Params[i] != c.Params[i]
	}
	if !same || !diff {
		t.Fatalf("init not a function of the seed: same=%v diff=%v", same, diff)
	}
	for l := 0; l < cfg.Layers(); l++ {
		bound := float32(1 / math.Sqrt(float64(cfg.Dims[l])))
		lo, hi := float32(0), float32(0)
		for _, v := range append(append([]float32(nil), a.Wd(l)...), a.Bd(l)...) {
			if v < -bound || v > bound {
				t.Fatalf("layer %d: %v outside +-%v", l, v, bound)
			}
			lo, hi = min(lo, v), max(hi, v)
		}
		if lo > -0.9*bound || hi < 0.9*bound {
			t.Errorf("layer %d: values span [%v,%v], expected to fill +-%v", l, lo, hi, bound)
		}
	}
}

func TestAdamFirstStepsByHand(t *testing.T) {
	a := NewAdam(1, 0.1, 0)
	p := []float32{1}
	a.Update(p, []float32{0.5})
	// step 1: m = 0.05, v = 0.00025; mhat = 0.5, vhat = 0.25 -> p -= 0.1 * 0.5/(0.5+1e-8)
	want := 1 - 0.1*0.5/(0.5+1e-8)
	if math.Abs(float64(p[0])-want) > 1e-6 {
		t.Fatalf("after step 1: %v, want %v", p[0], want)
	}
	a.Update(p, []float32{-1})
	m := 0.9*0.05 + 0.1*-1
	v := 0.999*0.00025 + 0.001*1
	want2 := want - (0.1/(1-0.81))*m/(math.Sqrt(v)/math.Sqrt(1-0.999*0.999)+1e-8)
	if math.Abs(float64(p[0])-want2) > 1e-6 {
		t.Fatalf("after step 2: %v, want %v", p[0], want2)
	}
	// weight decay is added to the gradient (L2), not decoupled
	b := NewAdam(1, 0.1, 0.5)
	q := []float32{2}
	b.Update(q, []float32{0})
	if math.Abs(float64(q[0])-(2-0.1)) > 1e-6 { // g = 0 + 0.5*2 = 1 -> step of lr
		t.Fatalf("weight decay: %v, want 1.9", q[0])
	}
}

func TestSaveLoadRoundTripBytes(t *testing.T) {
	cfg := Config{Dims: []int{12, 6, 1}, Slope: 0.01}
	m, _ := New(cfg, 5)
	exps := make([]int, 12)
	for i := range exps {
		exps[i] = i - 20
	}
	dir := t.TempDir()
	if err := Save(dir, "reward", m, exps, map[string]string{"method": "causalrm-ips"}); err != nil {
		t.Fatal(err)
	}
	got, gexp, fc, err := Load(dir + "/reward.json")
	if err != nil {
		t.Fatal(err)
	}
	if fc.Meta["method"] != "causalrm-ips" || len(gexp) != 12 || gexp[3] != -17 {
		t.Fatalf("meta/x_exp not restored: %+v %v", fc.Meta, gexp)
	}
	for i := range m.Params {
		if got.Params[i] != m.Params[i] {
			t.Fatalf("param %d: %v != %v", i, got.Params[i], m.Params[i])
		}
	}
	if _, _, _, err := Load(dir + "/missing.json"); err == nil {
		t.Fatal("loading a missing model succeeded")
	}
}

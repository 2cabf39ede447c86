package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExactStepsSameBitsWithIntGemm trains a few exact steps with the
// integer GEMM forced on (each kernel: AVX2 where the CPU has it, scalar)
// and forced off, and requires the same forward outputs, integer partials
// and parameters bit for bit. The data include columns whose largest value
// rounds up to 2^15 (the int16 edge, fixed up in int64).
func TestExactStepsSameBitsWithIntGemm(t *testing.T) {
	defer func(u int, k intKernelFn) { intGemmUse, intKernel = u, k }(intGemmUse, intKernel)
	const d, n, batch = 300, 160, 96
	cfg := Config{Dims: []int{d, 40, 8, 1}, Slope: 0.01}
	x, _ := testData(t, n, d, 14)
	// Column 0's maximum just below a power of two: it lands on 2^15.
	x[0] = float32(1 - 1.0/(1<<20))
	exps := ColumnExps(d, x)
	QuantizeX(x, d, exps)
	if q := float64(x[0]) / pow2(exps[0]); q != 1<<XBits {
		t.Fatalf("x[0] on its grid = %v, want 2^15", q)
	}
	type trace struct {
		f      []float64
		part   []int64
		params []float32
	}
	run := func(use int) []trace {
		intGemmUse = use
		m, _ := New(cfg, 5)
		e, err := NewEngine(m, true, exps, batch)
		if err != nil {
			t.Fatal(err)
		}
		opt := NewAdam(cfg.NumParams(), 1e-2, 1e-6)
		rng := rand.New(rand.NewPCG(3, 3))
		part := make([]int64, cfg.NumParams())
		grad := make([]float32, cfg.NumParams())
		rows := make([]int32, batch)
		w := make([]float64, batch)
		var out []trace
		for step := 0; step < 4; step++ {
			for i := range rows {
				rows[i] = int32(rng.IntN(n))
				w[i] = rng.NormFloat64()
			}
			f := append([]float64(nil), e.Forward(x, rows)...)
			mx := e.Maxima(w)
			if err := e.Partial(mx, part); err != nil {
				t.Fatal(err)
			}
			if err := e.Grad(part, mx, 1.0/batch, grad); err != nil {
				t.Fatal(err)
			}
			opt.Update(m.Params, grad)
			e.Touch()
			out = append(out, trace{f, append([]int64(nil), part...), append([]float32(nil), m.Params...)})
		}
		return out
	}
	want := run(-1)
	for name, kern := range intKernels() {
		intKernel = kern
		runs, fixups := intGemmRuns.Load(), intGemmFixups.Load()
		got := run(1)
		// 4 steps x (3 forward + 3 weight-gradient products).
		if r := intGemmRuns.Load() - runs; r != 24 {
			t.Fatalf("%s: intGemm ran %d products, want 24", name, r)
		}
		if intGemmFixups.Load() == fixups {
			t.Fatalf("%s: no fixup ran", name)
		}
		for s := range want {
			for i, v := range want[s].f {
				if math.Float64bits(got[s].f[i]) != math.Float64bits(v) {
					t.Fatalf("%s step %d: f[%d] = %v, float64 GEMM %v", name, s, i, got[s].f[i], v)
				}
			}
			for i, v := range want[s].part {
				if got[s].part[i] != v {
					t.Fatalf("%s step %d: partial[%d] = %d, float64 GEMM %d", name, s, i, got[s].part[i], v)
				}
			}
			for i, v := range want[s].params {
				if math.Float32bits(got[s].params[i]) != math.Float32bits(v) {
					t.Fatalf("%s step %d: param %d = %v, float64 GEMM %v", name, s, i, got[s].params[i], v)
				}
			}
		}
	}
}

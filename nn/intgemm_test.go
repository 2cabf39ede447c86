package nn

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"gonum.org/v1/gonum/blas"

	"github.com/causalrm/causalrm/nn/internal/imadd"
)

// intOperand fills rows x cols with integers |v| <= 2^bits: kind 0
// uniform, 1 the grid's edges (+-2^bits and neighbours, with a few
// uniform), 2 every element at +-2^bits.
func intOperand(rng *rand.Rand, n, bits, kind int) []float64 {
	lim := int64(1) << bits
	edges := []int64{lim, lim - 1, lim - 2, lim / 2, lim/2 + lim/4, lim - lim/8 - 1}
	x := make([]float64, n)
	for i := range x {
		var v int64
		switch kind {
		case 0:
			v = rng.Int64N(2*lim+1) - lim
		case 1:
			if rng.IntN(4) == 0 {
				v = rng.Int64N(2*lim+1) - lim
			} else {
				v = edges[rng.IntN(len(edges))]
			}
		default:
			v = lim
		}
		if rng.IntN(2) == 0 {
			v = -v
		}
		x[i] = float64(v)
	}
	return x
}

// dgemmInts is the float64 path: Dgemm, then int64 (exact below 2^52).
func dgemmInts(tA, tB blas.Transpose, m, n, k int, a []float64, lda int, b []float64, ldb int) []int64 {
	c := make([]float64, m*n)
	BLAS().Dgemm(tA, tB, m, n, k, 1, a, lda, b, ldb, 0, c, n)
	out := make([]int64, m*n)
	for i, v := range c {
		out[i] = int64(v)
	}
	return out
}

func intKernels() map[string]intKernelFn {
	ks := map[string]intKernelFn{"scalar": intKernelScalar}
	if imadd.Available {
		ks["avx2"] = intKernelAVX2
	}
	return ks
}

func TestIntGemmMatchesFloat64(t *testing.T) {
	defer func(k intKernelFn, l int) { intKernel, intFixLimit = k, l }(intKernel, intFixLimit)
	if !imadd.Available {
		t.Log("no AVX2: only the scalar kernel is tested")
	}
	type shape struct {
		tA, tB       blas.Transpose
		m, n, k      int
		aBits, bBits int
	}
	var shapes []shape
	// Forward of layer 1 (X W^T: x 15 bits, w 52-15-log2 d) and the weight
	// gradient (dz^T X: dz 52-15-log2 B), at odd sizes around the tiles.
	for _, mnk := range [][3]int{{1, 1, 1}, {6, 16, 2}, {7, 17, 3}, {13, 33, 257}, {37, 41, 301}, {12, 48, 4096}, {5, 3, 999}} {
		m, n, k := mnk[0], mnk[1], mnk[2]
		shapes = append(shapes,
			shape{blas.NoTrans, blas.Trans, m, n, k, XBits, sumBits - XBits - log2ceil(k)},
			shape{blas.Trans, blas.NoTrans, m, n, k, sumBits - XBits - log2ceil(k), XBits},
			shape{blas.NoTrans, blas.NoTrans, m, n, k, 20, sumBits - 20 - log2ceil(k)},
			shape{blas.Trans, blas.Trans, m, n, k, 26, sumBits - 26 - log2ceil(k)})
	}
	// The paper's weight gradient at B=512 (28 x 15 bits) and the forward
	// at d=4096 (15 x 25).
	shapes = append(shapes, shape{blas.Trans, blas.NoTrans, 40, 70, 512, 28, 15}, shape{blas.NoTrans, blas.Trans, 20, 40, 4096, 15, 25})
	rng := rand.New(rand.NewPCG(14, 1))
	for name, kern := range intKernels() {
		intKernel = kern
		for _, s := range shapes {
			for kind := 0; kind < 3; kind++ {
				for _, fixLimit := range []int{64, 0} {
					intFixLimit = fixLimit
					a := intOperand(rng, s.m*s.k, s.aBits, kind)
					b := intOperand(rng, s.k*s.n, s.bBits, kind)
					lda, ldb := s.k, s.k
					if s.tA != blas.NoTrans {
						lda = s.m
					}
					if s.tB == blas.NoTrans {
						ldb = s.n
					}
					want := dgemmInts(s.tA, s.tB, s.m, s.n, s.k, a, lda, b, ldb)
					got := make([]int64, s.m*s.n)
					if !intGemm(s.tA, s.tB, s.m, s.n, s.k, a, lda, s.aBits, b, ldb, s.bBits, got, nil, s.n) {
						if fixLimit == 0 {
							t.Fatalf("%s %+v kind %d: intGemm declined", name, s, kind)
						}
						continue
					}
					gotF := make([]float64, s.m*s.n)
					if !intGemm(s.tA, s.tB, s.m, s.n, s.k, a, lda, s.aBits, b, ldb, s.bBits, nil, gotF, s.n) {
						t.Fatalf("%s %+v kind %d: declined the float64 output only", name, s, kind)
					}
					for i := range want {
						if got[i] != want[i] || gotF[i] != float64(want[i]) {
							t.Fatalf("%s %+v kind %d fixes %d: c[%d] = %d (%v as float64), float64 path %d", name, s, kind, fixLimit, i, got[i], gotF[i], want[i])
						}
					}
				}
			}
		}
	}
}

// TestIntGemmDeclines: values off their grid or not finite go to the
// float64 path.
func TestIntGemmDeclines(t *testing.T) {
	a := []float64{1, 2, 3, 4}
	b := []float64{1, 2, 3, 4}
	c := make([]int64, 4)
	if intGemm(blas.NoTrans, blas.Trans, 2, 2, 2, a, 2, 1, b, 2, 3, c, nil, 2) {
		t.Fatal("accepted 3 and 4 on a 1-bit grid")
	}
	a[0] = nanF()
	if intGemm(blas.NoTrans, blas.Trans, 2, 2, 2, a, 2, 3, b, 2, 3, c, nil, 2) {
		t.Fatal("accepted NaN")
	}
}

func nanF() float64 { z := 0.0; return z / z }

// TestIntPlanBounds holds every plan to the int32 bound it rests on.
func TestIntPlanBounds(t *testing.T) {
	for a := 0; a <= 40; a++ {
		for b := 0; b <= 52-a; b++ {
			p, ok := planInt(a, b)
			if !ok {
				t.Fatalf("no plan for %d x %d bits", a, b)
			}
			if 2*int64(p.kb)*p.a.maxD*p.b.maxD > 1<<31-1 || p.a.maxD > 32767 || p.b.maxD > 32767 {
				t.Fatalf("%d x %d: plan %+v overflows int32", a, b, p)
			}
			for _, s := range []intSide{p.a, p.b} {
				// The pieces cover 2^bits: top digit bound times its weight
				// plus the lower digits' span.
				if s.pieces*int(s.w) < s.bits && s.pieces > 1 {
					t.Fatalf("%d x %d: side %+v too narrow", a, b, s)
				}
			}
		}
	}
	p, _ := planInt(XBits, 25)
	t.Logf("forward at d=4096 (15 x 25 bits): %+v", p)
	p, _ = planInt(28, XBits)
	t.Logf("weight gradient at B=512 (28 x 15 bits): %+v", p)
}

// The kernels alone on the paper's two products: the forward
// X W1^T (512 x 256 x 4096), its transpose W1 X^T (256 x 512 x 4096) and
// the weight gradient dZ1^T X (256 x 4096 x 512), as the integer GEMM,
// OpenBLAS (or gonum) DGEMM and SGEMM. GFLOP/s counts 2 m n k per second
// of wall time; GFLOP/cpu-s per second of the process's CPU time (on a
// shared machine the wall clock also counts time other processes held the
// core; CPU time does not, and at t2 it adds both threads' time).
func BenchmarkExactGemm(b *testing.B) {
	type prod struct {
		name         string
		tA, tB       blas.Transpose
		m, n, k      int
		aBits, bBits int
	}
	prods := []prod{
		{"fwd_XWt_512x256x4096", blas.NoTrans, blas.Trans, 512, 256, 4096, XBits, 25},
		{"fwdT_WXt_256x512x4096", blas.NoTrans, blas.Trans, 256, 512, 4096, 25, XBits},
		{"grad_dZtX_256x4096x512", blas.Trans, blas.NoTrans, 256, 4096, 512, 28, XBits},
	}
	rng := rand.New(rand.NewPCG(14, 2))
	for _, threads := range []int{1, 2} {
		for _, p := range prods {
			a := intOperand(rng, p.m*p.k, p.aBits, 0)
			bb := intOperand(rng, p.k*p.n, p.bBits, 0)
			lda, ldb := p.k, p.k
			if p.tA != blas.NoTrans {
				lda = p.m
			}
			if p.tB == blas.NoTrans {
				ldb = p.n
			}
			a32, b32 := make([]float32, len(a)), make([]float32, len(bb))
			for i, v := range a {
				a32[i] = float32(v)
			}
			for i, v := range bb {
				b32[i] = float32(v)
			}
			flop := 2 * float64(p.m) * float64(p.n) * float64(p.k)
			report := func(b *testing.B, start time.Time, cpu0 time.Duration) {
				b.ReportMetric(flop*float64(b.N)/time.Since(start).Seconds()/1e9, "GFLOP/s")
				if cpu := (cpuTime() - cpu0).Seconds(); cpu > 0 {
					b.ReportMetric(flop*float64(b.N)/cpu/1e9, "GFLOP/cpu-s")
				}
			}
			run := func(name string, fn func()) {
				b.Run(fmt.Sprintf("%s/t%d/%s", p.name, threads, name), func(b *testing.B) {
					defer SetThreads(Threads())
					SetThreads(threads)
					fn()
					b.ResetTimer()
					start, cpu0 := time.Now(), cpuTime()
					for i := 0; i < b.N; i++ {
						fn()
					}
					report(b, start, cpu0)
				})
			}
			ci := make([]int64, p.m*p.n)
			cd := make([]float64, p.m*p.n)
			cs := make([]float32, p.m*p.n)
			for name, kern := range intKernels() {
				if name == "scalar" {
					continue // ~1 GFLOP/s: minutes per run
				}
				run("int16_"+name, func() {
					old := intKernel
					intKernel = kern
					if !intGemm(p.tA, p.tB, p.m, p.n, p.k, a, lda, p.aBits, bb, ldb, p.bBits, ci, nil, p.n) {
						b.Fatal("declined")
					}
					intKernel = old
				})
				// The multiply alone, operands packed once outside the
				// timing: the ceiling without packSide's cost.
				plan, _ := planInt(p.aBits, p.bBits)
				w := new(intWork)
				mp, np, k2 := (p.m+intMR-1)/intMR, (p.n+intNR-1)/intNR, (p.k+1)/2
				w.pa = make([]int16, plan.a.pieces*mp*k2*2*intMR)
				w.pb = make([]int16, plan.b.pieces*np*k2*2*intNR)
				packSide(w.pa, a, lda, p.tA != blas.NoTrans, p.m, p.k, plan.a, intMR)
				packSide(w.pb, bb, ldb, p.tB == blas.NoTrans, p.n, p.k, plan.b, intNR)
				run("int16_"+name+"_multiply_only", func() {
					old := intKernel
					intKernel = kern
					intMultiply(plan, w, p.m, p.n, p.k)
					intKernel = old
				})
			}
			run("dgemm", func() { BLAS().Dgemm(p.tA, p.tB, p.m, p.n, p.k, 1, a, lda, bb, ldb, 0, cd, p.n) })
			run("sgemm", func() { blas32().Sgemm(p.tA, p.tB, p.m, p.n, p.k, 1, a32, lda, b32, ldb, 0, cs, p.n) })
		}
	}
}

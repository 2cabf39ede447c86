package nn

import (
	"math"
	"os"
	"sync"
	"sync/atomic"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"

	"github.com/causalrm/causalrm/nn/internal/imadd"
)

// Integer GEMM for the exact products (measured in docs/benchmarks.md,
// argued in docs/exactness.md): the operands of exact mode are integers on
// power-of-two grids with known bit widths (fixed.go), so their products
// can be computed in integer arithmetic. intGemm splits
// each operand into signed int16 digits ("pieces", the Ozaki scheme on
// integers), multiplies the pieces with VPMADDWD (int16 pairs summed in
// int32), widens the int32 sums into int64 before they can overflow, and
// recombines the pieces with shifts. The result is the exact integer
// product, so it equals, integer for integer, what the float64 GEMM gives
// when every sum stays below 2^52 (fixed.go's budget).
//
// The bound. A value v with |v| <= 2^bits is written in P pieces of base
// 2^w: digits d_0..d_{P-2} in [-2^(w-1), 2^(w-1)) and a top digit t with
// |t| <= T (T computed by digitBound), v = sum_p d_p 2^(w p). With D_A, D_B
// the largest digit magnitudes of the two operands, one VPMADDWD lane holds
// a0*b0 + a1*b1 with |.| <= 2 D_A D_B, and the int32 accumulator of a block
// of kb k-pairs holds at most 2 kb D_A D_B. The plan picks kb with
// 2 kb D_A D_B <= 2^31 - 1, so no int32 sum overflows (digits are at most
// 32767 in magnitude, so VPMADDWD's single overflow, -32768*-32768*2, cannot
// occur). A top digit of exactly +-2^15 (a 15-bit operand in one piece, the
// grid's edge +-2^15) does not fit int16: it is stored as +-32767 and the
// missing +-1 is added afterwards from the other operand in int64 (a fixup;
// only one operand may need them). The int64 sums of the shifted piece
// products are at most sum_k (sum_p |d_p| 2^(w p)) (sum_q |e_q| 2^(w' q));
// each digit sum is below 2^(bits+2), so with the 52-bit budget
// (K 2^(a+b) <= 2^52) they stay below 2^56, far from 2^63.
//
// Layout: C = op(A) op(B) as in Dgemm, with op(A) M x K and op(B) K x N.
// op(A) is packed by micro-panels of intMR rows, k-pair by k-pair (24 bytes
// a pair); op(B) by micro-panels of intNR columns (64 bytes a pair), one
// packed copy per piece, by cache blocks of intKC pairs (packOff); K is
// padded to even with zeros, M and N to the panel sizes.

const (
	intMR = imadd.MR // rows of the micro-kernel's tile
	intNR = imadd.NR // columns
	intKC = 128      // k-pairs per cache block: an intNR panel is 8 KiB
	intMC = 16       // micro-panels of A per cache block
	// intFlushCost is a flush of the int32 tile into int64, in k-pairs.
	intFlushCost = 20
)

// intKernelFn computes a intMR x intNR tile: c[r*ldc+j] += (sum over k2
// pairs of a*b) << shift, summing int32 over blocks of kb pairs.
type intKernelFn func(a, b []int16, c []int64, ldc, k2, kb int, shift uint)

var (
	intKernelScalar intKernelFn = imaddScalar
	intKernelAVX2   intKernelFn = imadd.Madd6x16
	// intKernel is the micro-kernel intGemm uses: AVX2 where the CPU has
	// it (nn/internal/imadd), else the scalar one. Tests set it to force a
	// path.
	intKernel = defaultIntKernel()
	// intFixLimit: intGemm declines (float64 fallback) when the fixups
	// times this exceed the kernel's m*n*k work; tests set 0 to force them.
	intFixLimit = 64
)

func defaultIntKernel() intKernelFn {
	if imadd.Available {
		return intKernelAVX2
	}
	return intKernelScalar
}

// imaddScalar is the scalar micro-kernel with the AVX2 one's arithmetic:
// int32 sums of pairs, widened every kb pairs.
func imaddScalar(a, b []int16, c []int64, ldc, k2, kb int, shift uint) {
	var acc [intMR][intNR]int32
	for p0 := 0; p0 < k2; p0 += kb {
		p1 := min(p0+kb, k2)
		for p := p0; p < p1; p++ {
			ap := a[p*2*intMR : (p+1)*2*intMR]
			bp := b[p*2*intNR : (p+1)*2*intNR]
			for r := 0; r < intMR; r++ {
				a0, a1 := int32(ap[2*r]), int32(ap[2*r+1])
				for j := 0; j < intNR; j++ {
					acc[r][j] += a0*int32(bp[2*j]) + a1*int32(bp[2*j+1])
				}
			}
		}
		for r := range acc {
			for j, v := range acc[r] {
				c[r*ldc+j] += int64(v) << shift
				acc[r][j] = 0
			}
		}
	}
}

// intSide is the split of one operand into pieces.
type intSide struct {
	bits   int // |v| <= 2^bits
	pieces int
	w      uint  // piece width: digit p is worth 2^(w p)
	maxD   int64 // largest |digit| stored (<= 32767)
	fix    bool  // top digits of +-32768 are stored as +-32767 and fixed up
}

// intPlan is how intGemm splits the two operands.
type intPlan struct {
	a, b intSide
	kb   int // k-pairs per int32 block
}

// digitBound returns the largest |top digit| of a value |v| <= 2^bits in
// p pieces of width w (the lower digits are below 2^(w-1)).
func digitBound(bits int, p int, w uint) int64 {
	v := int64(1) << bits
	for i := 0; i < p-1; i++ {
		v = (v + 1<<(w-1)) >> w
	}
	return v
}

// splits lists the ways of cutting a bits-wide operand into p pieces
// (one per p from 1 to 4, the width with the smallest largest digit).
func splits(bits int) []intSide {
	var out []intSide
	for p := 1; p <= 4; p++ {
		best := intSide{}
		for w := uint(2); w <= 15; w++ {
			if p == 1 && w > 2 {
				break // the width of a single piece does not matter
			}
			top := digitBound(bits, p, w)
			if top > 1<<15 {
				continue
			}
			d := top
			if p > 1 && int64(1)<<(w-1) > d {
				d = 1 << (w - 1)
			}
			s := intSide{bits: bits, pieces: p, w: w, maxD: d}
			if d == 1<<15 {
				s.maxD, s.fix = 1<<15-1, true
			}
			if best.pieces == 0 || s.maxD < best.maxD || (s.maxD == best.maxD && !s.fix && best.fix) {
				best = s
			}
		}
		if best.pieces != 0 {
			out = append(out, best)
		}
	}
	return out
}

// planInt picks the cheapest split for operands of aBits and bBits bits
// (|a| <= 2^aBits): cost ~ pieces_a * pieces_b * (1 + intFlushCost/kb),
// a flush of the 6x16 tile into int64 costing 7-20 k-pairs of multiply-adds
// (measured on the AMD EPYC of docs/benchmarks.md: BenchmarkMadd6x16 by CPU
// and by wall time; the paper's shapes get the same plan for any cost
// above 4.4).
// ok is false when no split fits.
func planInt(aBits, bBits int) (plan intPlan, ok bool) {
	if aBits < 0 || bBits < 0 || aBits > 60 || bBits > 60 {
		return plan, false
	}
	bestCost := math.Inf(1)
	for _, sa := range splits(aBits) {
		for _, sb := range splits(bBits) {
			if sa.fix && sb.fix {
				continue
			}
			kb := int((1<<31 - 1) / (2 * sa.maxD * sb.maxD))
			if kb < 1 {
				continue
			}
			kb = min(kb, intKC)
			cost := float64(sa.pieces*sb.pieces) * (1 + intFlushCost/float64(kb))
			if cost < bestCost {
				bestCost, plan, ok = cost, intPlan{a: sa, b: sb, kb: kb}, true
			}
		}
	}
	return plan, ok
}

// intFix is a top digit stored one short: the operand's (row, k) element
// is e larger than its pieces say.
type intFix struct {
	row, k int
	e      int64
}

// intWork is intGemm's scratch.
type intWork struct {
	pa, pb []int16
	c      []int64
}

var intWorkPool = sync.Pool{New: func() any { return new(intWork) }}

func grow16(s []int16, n int) []int16 {
	if cap(s) < n {
		return make([]int16, n)
	}
	return s[:n]
}

// packSide writes the pieces of op(X) (rows x k, element (i, kk) at
// x[i*ld+kk], or x[kk*ld+i] when trans) into micro-panels of mr rows:
// piece p, panel q, pair t, row r, half h at
// p*pieceLen + packOff(q, t) + 2*r + h. It returns the fixups, and false if
// an element is not finite or above 2^s.bits in magnitude.
func packSide(dst []int16, x []float64, ld int, trans bool, rows, k int, s intSide, mr int) ([]intFix, bool) {
	panels := (rows + mr - 1) / mr
	var fixes []intFix
	var mu sync.Mutex
	okAll := true
	// Element (i, kk) of op(X) is x[i*si+kk*sk].
	si, sk := ld, 1
	if trans {
		si, sk = 1, ld
	}
	runParallel(panels, func(q0, q1 int) {
		local, ok := packPanels(dst, x, si, sk, rows, k, s, mr, panels, q0, q1)
		if len(local) > 0 || !ok {
			mu.Lock()
			fixes = append(fixes, local...)
			okAll = okAll && ok
			mu.Unlock()
		}
	})
	return fixes, okAll
}

// packOff is where pair t of micro-panel q starts in a packed piece: by
// cache blocks of intKC pairs, panel after panel inside a block, so the
// panels one block touches are contiguous.
func packOff(q, t, panels, k2, mr int) int {
	t0 := t / intKC * intKC
	tn := min(intKC, k2-t0)
	return (t0*panels + q*tn + t - t0) * 2 * mr
}

// packPanels is packSide for micro-panels [q0, q1): the panel's pairs in
// order, block by block, pair by pair, row by row, so dst is written
// sequentially.
func packPanels(dst []int16, x []float64, si, sk, rows, k int, s intSide, mr, panels, q0, q1 int) ([]intFix, bool) {
	k2 := (k + 1) / 2
	lim := math.Ldexp(1, s.bits)
	half, mask, w := int64(1)<<(s.w-1), int64(1)<<s.w-1, s.w&63
	topShift := s.w * uint(s.pieces-1)
	P := s.pieces
	pieceLen := panels * k2 * 2 * mr
	var fixes []intFix
	for q := q0; q < q1; q++ {
		for t0 := 0; t0 < k2; t0 += intKC {
			tn := min(intKC, k2-t0)
			out := (t0*panels + q*tn) * 2 * mr
			if (q+1)*mr <= rows && 2*(t0+tn) <= k {
				// Interior: no padding; both elements of a pair at once.
				var ok bool
				if fixes, ok = packInterior(dst, x, si, sk, s, mr, q, t0, tn, out, pieceLen, fixes); !ok {
					return nil, false
				}
				continue
			}
			for t := t0; t < t0+tn; t++ {
				for r := 0; r < mr; r++ {
					i := q*mr + r
					for kk := 2 * t; kk < 2*t+2; kk, out = kk+1, out+1 {
						var v int64
						if i < rows && kk < k {
							f := x[i*si+kk*sk]
							if f != f || f > lim || f < -lim {
								return nil, false
							}
							v = int64(f)
						}
						o := out
						for p := 1; p < P; p++ {
							d := ((v + half) & mask) - half
							dst[o] = int16(d)
							v = (v - d) >> w
							o += pieceLen
						}
						if v > 32767 || v < -32767 {
							t := int64(32767)
							if v < 0 {
								t = -32767
							}
							fixes = append(fixes, intFix{row: i, k: kk, e: (v - t) << topShift})
							v = t
						}
						dst[o] = int16(v)
					}
				}
			}
		}
	}
	return fixes, true
}

// packInterior is packPanels' loop for tn full pairs from t0 of the full
// panel q, written from out: the same digits, fewer checks and index
// computations per element.
func packInterior(dst []int16, x []float64, si, sk int, s intSide, mr, q, t0, tn, out, pieceLen int, fixes []intFix) ([]intFix, bool) {
	lim := math.Ldexp(1, s.bits)
	half, mask, w := int64(1)<<(s.w-1), int64(1)<<s.w-1, s.w&63
	topShift := s.w * uint(s.pieces-1)
	P := s.pieces
	for t := 0; t < tn; t++ {
		kk := 2 * (t0 + t)
		o := out + t*2*mr
		for r := 0; r < mr; r++ {
			idx := (q*mr+r)*si + kk*sk
			f0, f1 := x[idx], x[idx+sk]
			if !(f0 >= -lim && f0 <= lim && f1 >= -lim && f1 <= lim) { // NaN too
				return nil, false
			}
			v0, v1 := int64(f0), int64(f1)
			oo := o + 2*r
			for p := 1; p < P; p++ {
				d0, d1 := ((v0+half)&mask)-half, ((v1+half)&mask)-half
				dst[oo], dst[oo+1] = int16(d0), int16(d1)
				v0, v1 = (v0-d0)>>w, (v1-d1)>>w
				oo += pieceLen
			}
			if uint64(v0+32767) > 65534 || uint64(v1+32767) > 65534 {
				for h, v := range [2]*int64{&v0, &v1} {
					if *v > 32767 || *v < -32767 {
						c := int64(32767)
						if *v < 0 {
							c = -32767
						}
						fixes = append(fixes, intFix{row: q*mr + r, k: kk + h, e: (*v - c) << topShift})
						*v = c
					}
				}
			}
			dst[oo], dst[oo+1] = int16(v0), int16(v1)
		}
	}
	return fixes, true
}

// runParallel splits [0,n) into contiguous chunks over up to Threads()
// goroutines, however small the chunks (a chunk here is a panel of rows).
func runParallel(n int, fn func(lo, hi int)) { splitOver(n, min(Threads(), n), fn) }

// intGemm sets c[i*ldc+j] = sum_k op(A)[i,k] op(B)[k,j] exactly, for
// integer-valued a and b with |a| <= 2^aBits, |b| <= 2^bBits (the
// arguments as in blas.Float64.Dgemm with alpha 1 and beta 0, m x n result).
// It returns false, leaving c unspecified, where it cannot (an operand
// above its bound or not finite, no plan, too many fixups); the caller then
// runs the float64 GEMM, which gives the same integers whenever they fit
// 52 bits.
// The result goes to c, or as float64s (exact: below 2^52 in magnitude)
// to cf when c is nil.
func intGemm(tA, tB blas.Transpose, m, n, k int, a []float64, lda, aBits int, b []float64, ldb, bBits int, c []int64, cf []float64, ldc int) bool {
	plan, ok := planInt(aBits, bBits)
	if !ok || m < 1 || n < 1 || k < 1 {
		return false
	}
	return intGemmPlan(plan, tA, tB, m, n, k, a, lda, b, ldb, c, cf, ldc)
}

func intGemmPlan(plan intPlan, tA, tB blas.Transpose, m, n, k int, a []float64, lda int, b []float64, ldb int, c []int64, cf []float64, ldc int) bool {
	k2 := (k + 1) / 2
	mp, np := (m+intMR-1)/intMR, (n+intNR-1)/intNR
	w := intWorkPool.Get().(*intWork)
	defer intWorkPool.Put(w)
	aLen, bLen := mp*k2*2*intMR, np*k2*2*intNR
	w.pa = grow16(w.pa, plan.a.pieces*aLen)
	w.pb = grow16(w.pb, plan.b.pieces*bLen)
	// op(A) is m x k: A[i,k] at a[i*lda+k] (NoTrans) or a[k*lda+i].
	fa, ok := packSide(w.pa, a, lda, tA != blas.NoTrans, m, k, plan.a, intMR)
	if !ok {
		return false
	}
	// op(B) is k x n; as the n x k operand of A*B^T, element (j, k) is at
	// b[j*ldb+k] when tB is Trans, else b[k*ldb+j].
	fb, ok := packSide(w.pb, b, ldb, tB == blas.NoTrans, n, k, plan.b, intNR)
	if !ok {
		return false
	}
	if (len(fa)*n+len(fb)*m)*intFixLimit > m*n*k {
		return false // the fixups would cost more than the kernel saves
	}
	cp := intMultiply(plan, w, m, n, k)
	ldp := np * intNR
	intGemmRuns.Add(1)
	intGemmFixups.Add(int64(len(fa) + len(fb)))
	// Fixups: op(A)[i,kk] is e larger than packed: add e * op(B)[kk, :].
	for _, f := range fa {
		row := cp[f.row*ldp : f.row*ldp+n]
		for j := range row {
			row[j] += f.e * int64(opAt(b, ldb, tB == blas.NoTrans, j, f.k))
		}
	}
	for _, f := range fb {
		for i := 0; i < m; i++ {
			cp[i*ldp+f.row] += f.e * int64(opAt(a, lda, tA != blas.NoTrans, i, f.k))
		}
	}
	runParallel(m, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if c != nil {
				copy(c[i*ldc:i*ldc+n], cp[i*ldp:i*ldp+n])
				continue
			}
			for j, v := range cp[i*ldp : i*ldp+n] {
				cf[i*ldc+j] = float64(v)
			}
		}
	})
	return true
}

// intGemmRuns and intGemmFixups count intGemm's products and fixups (for
// tests: that a path they force did run).
var intGemmRuns, intGemmFixups atomic.Int64

// intGemmUse: 0 runs the integer GEMM where it pays, 1 wherever it can
// (with the scalar kernel where the CPU lacks AVX2: a reference, slow), -1
// never. The environment variable CAUSALRM_INTGEMM=on|off sets 1|-1 (to
// compare the paths end to end: every setting gives the same bits); tests
// set it directly.
var intGemmUse = map[string]int{"on": 1, "off": -1}[os.Getenv("CAUSALRM_INTGEMM")]

// intGemmPays: the exact products go through intGemm with the pure-Go
// (gonum) BLAS on an AVX2 CPU, where it is about 4x gonum's DGEMM; OpenBLAS's
// DGEMM is as fast as it or faster on AVX2 (docs/benchmarks.md), so the
// OpenBLAS build keeps it. Small products stay with the BLAS either way.
func intGemmPays(m, n, k int) bool {
	switch intGemmUse {
	case 1:
		return true
	case -1:
		return false
	}
	if !imadd.Available || m*n*k < 1<<20 {
		return false
	}
	_, native := BLAS().(gonum.Implementation)
	return native
}

// exactProduct is an exact-mode GEMM through intGemm where that pays:
// as intGemm, false when it did not run (the caller runs the float64 GEMM,
// which gives the same integers).
func exactProduct(tA, tB blas.Transpose, m, n, k int, a []float64, lda, aBits int, b []float64, ldb, bBits int, c []int64, cf []float64, ldc int) bool {
	if !intGemmPays(m, n, k) {
		return false
	}
	return intGemm(tA, tB, m, n, k, a, lda, aBits, b, ldb, bBits, c, cf, ldc)
}

// intMultiply runs the micro-kernel over the operands packSide put in w
// (op(A) m x k and op(B) k x n) and returns the padded int64 product,
// row stride ceil(n/intNR)*intNR, before fixups.
func intMultiply(plan intPlan, w *intWork, m, n, k int) []int64 {
	k2 := (k + 1) / 2
	mp, np := (m+intMR-1)/intMR, (n+intNR-1)/intNR
	aLen, bLen := mp*k2*2*intMR, np*k2*2*intNR
	ldp := np * intNR
	if cap(w.c) < mp*intMR*ldp {
		w.c = make([]int64, mp*intMR*ldp)
	}
	cp := w.c[:mp*intMR*ldp]
	clear(cp)
	kern := intKernel
	runParallel(np, func(nb0, nb1 int) {
		for t0 := 0; t0 < k2; t0 += intKC {
			tn := min(intKC, k2-t0)
			for mb0 := 0; mb0 < mp; mb0 += intMC {
				mb1 := min(mb0+intMC, mp)
				for qb := 0; qb < plan.b.pieces; qb++ {
					for nb := nb0; nb < nb1; nb++ {
						bo := qb*bLen + packOff(nb, t0, np, k2, intNR)
						bs := w.pb[bo : bo+tn*2*intNR]
						for pa := 0; pa < plan.a.pieces; pa++ {
							shift := plan.a.w*uint(pa) + plan.b.w*uint(qb)
							for mb := mb0; mb < mb1; mb++ {
								ao := pa*aLen + packOff(mb, t0, mp, k2, intMR)
								co := mb*intMR*ldp + nb*intNR
								kern(w.pa[ao:ao+tn*2*intMR], bs, cp[co:], ldp, tn, plan.kb, shift)
							}
						}
					}
				}
			}
		}
	})
	return cp
}

// opAt is element (i, kk) of an operand packed by packSide (rows x k).
func opAt(x []float64, ld int, trans bool, i, kk int) float64 {
	if trans {
		return x[kk*ld+i]
	}
	return x[i*ld+kk]
}

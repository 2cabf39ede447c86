package gpu

import (
	"fmt"
	"math"
	"sort"
	"unsafe"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"

	"github.com/causalrm/causalrm/gpu/kernels"
	"github.com/causalrm/causalrm/nn"
)

// Host is a Backend in host memory that runs kernels.cu's kernels as Go
// loops written to mirror them. It checks every launch against the PTX's
// parameter lists and the kernels' block shapes, so that the engine's
// launches are tested on machines without a GPU; the GPU tests hold the
// CUDA kernels to these loops bit for bit.
type Host struct {
	params map[string][]string
	allocs map[Ptr][]byte
	bases  []Ptr // sorted
	next   Ptr
	// Limit, when positive, is the memory MemInfo reports (to test plans).
	Limit uint64
	used  uint64
}

// NewHost returns an empty host backend.
func NewHost() (*Host, error) {
	p, err := ptxParams(kernels.PTX)
	if err != nil {
		return nil, err
	}
	return &Host{params: p, allocs: map[Ptr][]byte{}, next: 1 << 32}, nil
}

func (h *Host) Name() string { return "host emulation" }

func (h *Host) Alloc(n int) (Ptr, error) {
	if h.Limit > 0 && h.used+uint64(n) > h.Limit {
		return 0, fmt.Errorf("gpu: host emulation: %d bytes asked, %d of %d free", n, h.Limit-h.used, h.Limit)
	}
	words := make([]uint64, (n+7)/8+1)
	b := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
	p := h.next
	h.next += Ptr((n + 255) &^ 255)
	if n == 0 {
		h.next += 256
	}
	h.allocs[p] = b
	h.bases = append(h.bases, p)
	h.used += uint64(n)
	return p, nil
}

func (h *Host) Free(p Ptr) {
	b, ok := h.allocs[p]
	if !ok {
		return
	}
	h.used -= uint64(len(b))
	delete(h.allocs, p)
	i := sort.Search(len(h.bases), func(i int) bool { return h.bases[i] >= p })
	h.bases = append(h.bases[:i], h.bases[i+1:]...)
}

func (h *Host) MemInfo() (uint64, uint64, error) {
	if h.Limit > 0 {
		return h.Limit - h.used, h.Limit, nil
	}
	return 1 << 40, 1 << 40, nil
}

// bytes resolves [p, p+n) to the allocation that holds it.
func (h *Host) bytes(p Ptr, n int) []byte {
	i := sort.Search(len(h.bases), func(i int) bool { return h.bases[i] > p }) - 1
	if i < 0 {
		panic(fmt.Sprintf("gpu: host emulation: address %#x not allocated", p))
	}
	b := h.allocs[h.bases[i]]
	off := int(p - h.bases[i])
	if off+n > len(b) {
		panic(fmt.Sprintf("gpu: host emulation: %d bytes at %#x run past the %d-byte allocation at %#x", n, p, len(b), h.bases[i]))
	}
	return b[off : off+n]
}

func view[T any](h *Host, p Ptr, n int) []T {
	if p == 0 {
		return nil
	}
	var z T
	if n == 0 {
		return []T{}
	}
	b := h.bytes(p, n*int(unsafe.Sizeof(z)))
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}

func (h *Host) Upload(dst Ptr, src unsafe.Pointer, n int) error {
	copy(h.bytes(dst, n), unsafe.Slice((*byte)(src), n))
	return nil
}

func (h *Host) Download(dst unsafe.Pointer, src Ptr, n int) error {
	copy(unsafe.Slice((*byte)(dst), n), h.bytes(src, n))
	return nil
}

func trans(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}

// gemmSizes are the element counts that row-major A, B and C span.
func gemmSizes(tA, tB bool, m, n, k, lda, ldb, ldc int) (int, int, int) {
	ra, ca, rb, cb := m, k, k, n // A and B as stored
	if tA {
		ra, ca = k, m
	}
	if tB {
		rb, cb = n, k
	}
	return (ra-1)*lda + ca, (rb-1)*ldb + cb, (m-1)*ldc + n
}

func (h *Host) Dgemm(tA, tB bool, m, n, k int, a Ptr, lda int, b Ptr, ldb int, c Ptr, ldc int) error {
	na, nb, nc := gemmSizes(tA, tB, m, n, k, lda, ldb, ldc)
	gonum.Implementation{}.Dgemm(trans(tA), trans(tB), m, n, k, 1, view[float64](h, a, na), lda, view[float64](h, b, nb), ldb, 0, view[float64](h, c, nc), ldc)
	return nil
}

func (h *Host) Sgemm(tA, tB bool, m, n, k int, a Ptr, lda int, b Ptr, ldb int, c Ptr, ldc int) error {
	na, nb, nc := gemmSizes(tA, tB, m, n, k, lda, ldb, ldc)
	gonum.Implementation{}.Sgemm(trans(tA), trans(tB), m, n, k, 1, view[float32](h, a, na), lda, view[float32](h, b, nb), ldb, 0, view[float32](h, c, nc), ldc)
	return nil
}

// blockShape is the block every launch of a kernel must use, where the
// kernel's code depends on it (a shared-memory reduction's size).
var blockShape = map[string][3]uint32{
	"quant_wrows": {blockSize, 1, 1}, "quant_rows": {blockSize, 1, 1},
	"col_maxabs": {32, 8, 1}, "col_sum_i64": {32, 8, 1}, "col_sum_f32": {32, 8, 1},
}

func (h *Host) Launch(kernel string, grid, block [3]uint32, args ...any) error {
	params, ok := h.params[kernel]
	if !ok {
		return fmt.Errorf("gpu: no kernel %s in the PTX module", kernel)
	}
	if err := checkArgs(kernel, params, args); err != nil {
		return err
	}
	if want, ok := blockShape[kernel]; ok && block != want {
		return fmt.Errorf("gpu: kernel %s needs blocks of %v, launched with %v", kernel, want, block)
	}
	if grid[0] == 0 || block[0] == 0 {
		return fmt.Errorf("gpu: kernel %s launched on an empty grid %v x %v", kernel, grid, block)
	}
	if (kernel == "col_maxabs" || kernel == "col_sum_i64" || kernel == "col_sum_f32") && int(grid[1])*256 < int(args[2].(int32)) {
		return fmt.Errorf("gpu: kernel %s: grid %v covers %d of %d rows", kernel, grid, grid[1]*256, args[2].(int32))
	}
	run, ok := hostKernels[kernel]
	if !ok {
		return fmt.Errorf("gpu: host emulation has no kernel %s", kernel)
	}
	run(h, args)
	return nil
}

// kargs are a launch's arguments, already checked against the PTX.
type kargs []any

func (a kargs) p(i int) Ptr       { return a[i].(Ptr) }
func (a kargs) n(i int) int       { return int(a[i].(int32)) }
func (a kargs) f64(i int) float64 { return a[i].(float64) }
func (a kargs) f32(i int) float32 { return a[i].(float32) }

// hostKernels are kernels.cu's kernels as Go loops, by name.
var hostKernels = map[string]func(h *Host, a kargs){
	"widen_rows": func(h *Host, a kargs) {
		m, d := a.n(4), a.n(5)
		hostWiden(view[float64](h, a.p(0), m*d), h.rowsOf(a.p(1), a.p(2), m, d), view[float64](h, a.p(3), d), m, d)
	},
	"gather_rows": func(h *Host, a kargs) {
		m, d := a.n(3), a.n(4)
		dst, rows := view[float32](h, a.p(0), m*d), h.rowsOf(a.p(1), a.p(2), m, d)
		for i := range m {
			copy(dst[i*d:(i+1)*d], rows[i])
		}
	},
	"quant_wrows": func(h *Host, a kargs) {
		out, in := a.n(4), a.n(5)
		hostQuantWRows(view[float64](h, a.p(0), out*in), view[int32](h, a.p(1), out), view[float32](h, a.p(2), out*in), view[float64](h, a.p(3), in), out, in, a.n(6))
	},
	"fwd_exact": func(h *Host, a kargs) {
		m, out := a.n(6), a.n(7)
		hostFwdExact(view[float64](h, a.p(0), m*out), view[float64](h, a.p(1), m*out), view[int32](h, a.p(2), m), view[int32](h, a.p(3), out), view[float32](h, a.p(4), out), a.f64(5), m, out)
	},
	"quant_rows": func(h *Host, a kargs) {
		rows, cols := a.n(3), a.n(4)
		hostQuantRows(view[float64](h, a.p(0), rows*cols), view[int32](h, a.p(1), rows), view[float64](h, a.p(2), rows*cols), rows, cols, a.n(5))
	},
	"col_grid": func(h *Host, a kargs) {
		out, in := a.n(2), a.n(3)
		hostColGrid(view[float64](h, a.p(0), in), view[float32](h, a.p(1), out*in), out, in, a.n(4))
	},
	"quant_wcols": func(h *Host, a kargs) {
		out, in := a.n(3), a.n(4)
		q, w, cs := view[float64](h, a.p(0), out*in), view[float32](h, a.p(1), out*in), view[float64](h, a.p(2), in)
		for t := range q {
			q[t] = rint(float64(w[t]) / cs[t%in])
		}
	},
	"bwd_exact": func(h *Host, a kargs) {
		m, in := a.n(5), a.n(6)
		hostBwdExact(view[float64](h, a.p(0), m*in), view[int32](h, a.p(1), m), view[float64](h, a.p(2), in), view[float64](h, a.p(3), m*in), a.f64(4), m, in)
	},
	"col_maxabs": func(h *Host, a kargs) {
		rows, cols := a.n(2), a.n(3)
		hostColMaxAbs(view[float64](h, a.p(0), cols), view[float64](h, a.p(1), rows*cols), rows, cols)
	},
	"zero64": func(h *Host, a kargs) {
		clear(view[int64](h, a.p(0), a.n(1)))
	},
	"quant_cols": func(h *Host, a kargs) {
		rows, cols := a.n(3), a.n(4)
		q, v, ex := view[float64](h, a.p(0), rows*cols), view[float64](h, a.p(1), rows*cols), view[int32](h, a.p(2), cols)
		for t := range q {
			q[t] = rint(v[t] * math.Ldexp(1, -int(ex[t%cols])))
		}
	},
	"to_int64": func(h *Host, a kargs) {
		dst, src := view[int64](h, a.p(0), a.n(2)), view[float64](h, a.p(1), a.n(2))
		for t := range dst {
			dst[t] = int64(src[t])
		}
	},
	"col_sum_i64": func(h *Host, a kargs) {
		rows, cols := a.n(2), a.n(3)
		dst, q := view[int64](h, a.p(0), cols), view[float64](h, a.p(1), rows*cols)
		for t, v := range q {
			dst[t%cols] += int64(v)
		}
	},
	"fwd_fast": func(h *Host, a kargs) {
		m, out := a.n(4), a.n(5)
		hostFwdFast(view[float32](h, a.p(0), m*out), view[float32](h, a.p(1), m*out), view[float32](h, a.p(2), out), a.f32(3), m, out)
	},
	"bwd_fast": func(h *Host, a kargs) {
		da, zp, slope := view[float32](h, a.p(0), a.n(3)), view[float32](h, a.p(1), a.n(3)), a.f32(2)
		for t := range da {
			if zp[t] <= 0 {
				da[t] = da[t] * slope
			}
		}
	},
	"col_sum_f32": func(h *Host, a kargs) {
		rows, cols := a.n(2), a.n(3)
		chunks := (rows + 255) / 256
		part, v := view[float32](h, a.p(0), chunks*cols), view[float32](h, a.p(1), rows*cols)
		// The kernel's order: 8 lanes each sum every 8th row of the
		// block's 256, then lane 0 adds the other lanes' sums in order.
		for c := range chunks {
			i0, i1 := c*256, min(c*256+256, rows)
			for k := range cols {
				var lane [8]float32
				for y := range lane {
					for i := i0 + y; i < i1; i += 8 {
						lane[y] += v[i*cols+k]
					}
				}
				s := lane[0]
				for _, x := range lane[1:] {
					s += x
				}
				part[c*cols+k] = s
			}
		}
	},
	"col_sum_f32_fin": func(h *Host, a kargs) {
		chunks, cols := a.n(2), a.n(3)
		dst, part := view[float32](h, a.p(0), cols), view[float32](h, a.p(1), chunks*cols)
		for k := range dst {
			s := float32(0)
			for c := range chunks {
				s += part[c*cols+k]
			}
			dst[k] = s
		}
	},
	"grad_exact": func(h *Host, a kargs) {
		out, in := a.n(5), a.n(6)
		g, sum := view[float32](h, a.p(0), out*in), view[int64](h, a.p(1), out*in)
		dz, ax, scale := view[int32](h, a.p(2), out), view[int32](h, a.p(3), in), a.f64(4)
		for t := range g {
			g[t] = float32(float64(sum[t]) * pow2(dz[t/in]) * pow2(ax[t%in]) * scale)
		}
	},
	"grad_bias": func(h *Host, a kargs) {
		out := a.n(4)
		g, sum, dz := view[float32](h, a.p(0), out), view[int64](h, a.p(1), out), view[int32](h, a.p(2), out)
		for k := range g {
			g[k] = float32(float64(sum[k]) * pow2(dz[k]) * a.f64(3))
		}
	},
	"scale_f32": func(h *Host, a kargs) {
		g, src, s, bad := view[float32](h, a.p(0), a.n(4)), view[float32](h, a.p(1), a.n(4)), a.f32(2), view[int32](h, a.p(3), 1)
		for t, v := range src {
			if math.Float32bits(v)&0x7f800000 == 0x7f800000 && int32(t) < bad[0] {
				bad[0] = int32(t)
			}
			g[t] = v * s
		}
	},
	"adam": func(h *Host, a kargs) {
		hostAdam(h, a)
	},
}

// rowsOf resolves the gathered rows of x (row indices at rows).
func (h *Host) rowsOf(x, rows Ptr, m, d int) [][]float32 {
	idx := view[int32](h, rows, m)
	out := make([][]float32, m)
	for i, r := range idx {
		out[i] = view[float32](h, x+Ptr(int64(r)*int64(d)*4), d)
	}
	return out
}

func rint(v float64) float64 { return (v + 1.5*(1<<52)) - 1.5*(1<<52) }

func pow2(e int32) float64 { return math.Ldexp(1, int(e)) }

func maxSticky(a, b float64) float64 {
	if a != a {
		return a
	}
	if b != b || b > a {
		return b
	}
	return a
}

func hostWiden(dst []float64, rows [][]float32, xinv []float64, m, d int) {
	for i := range m {
		for j, v := range rows[i] {
			dst[i*d+j] = float64(v) * xinv[j]
		}
	}
}

func hostQuantWRows(q []float64, exps []int32, w []float32, cs []float64, out, in, wb int) {
	for k := range out {
		mx := 0.0
		for j := range in {
			a := math.Abs(float64(w[k*in+j]))
			if cs != nil {
				a = a * cs[j]
			}
			mx = maxSticky(mx, a)
		}
		ex := int32(nn.GridExp(mx, wb))
		exps[k] = ex
		inv := pow2(-ex)
		for j := range in {
			v := float64(w[k*in+j])
			if cs != nil {
				v = v * cs[j]
			}
			q[k*in+j] = rint(v * inv)
		}
	}
}

func hostFwdExact(z, anext []float64, rexp, wexp []int32, bias []float32, slope float64, m, out int) {
	for t := range m * out {
		i, k := t/out, t%out
		rs := 1.0
		if rexp != nil {
			rs = pow2(rexp[i])
		}
		v := float64(z[t]*rs*pow2(wexp[k])) + float64(bias[k])
		z[t] = v
		if anext != nil {
			anext[t] = leaky(v, slope)
		}
	}
}

func hostQuantRows(q []float64, exps []int32, v []float64, rows, cols, b int) {
	for i := range rows {
		mx := 0.0
		for _, x := range v[i*cols : (i+1)*cols] {
			if a := math.Abs(x); a > mx {
				mx = a
			}
		}
		e := int32(nn.GridExp(mx, b))
		exps[i] = e
		inv := pow2(-e)
		for j, x := range v[i*cols : (i+1)*cols] {
			q[i*cols+j] = rint(x * inv)
		}
	}
}

func hostColGrid(cs []float64, w []float32, out, in, wb int) {
	for j := range in {
		mx := 0.0
		for k := range out {
			if a := math.Abs(float64(w[k*in+j])); a > mx {
				mx = a
			}
		}
		cs[j] = pow2(int32(nn.GridExp(mx, wb)))
	}
}

func hostBwdExact(da []float64, rexp []int32, cs, zp []float64, slope float64, m, in int) {
	for t := range m * in {
		i, j := t/in, t%in
		lg := slope
		if zp[t] > 0 {
			lg = 1
		}
		da[t] = da[t] * (pow2(rexp[i]) * cs[j] * lg)
	}
}

// hostColMaxAbs combines into dst, as the kernel's atomic maximum does.
func hostColMaxAbs(dst, v []float64, rows, cols int) {
	for j := range cols {
		mx := dst[j]
		for i := range rows {
			mx = maxSticky(mx, math.Abs(v[i*cols+j]))
		}
		if mx != mx {
			mx = math.Float64frombits(0x7ff8000000000000)
		}
		dst[j] = mx
	}
}

// leaky is LeakyReLU, as the kernels write it.
func leaky[T float32 | float64](v, slope T) T {
	if v > 0 {
		return v
	}
	return slope * v
}

func hostFwdFast(z, anext, bias []float32, slope float32, m, out int) {
	for t := range m * out {
		v := z[t] + bias[t%out]
		z[t] = v
		if anext != nil {
			anext[t] = leaky(v, slope)
		}
	}
}

// hostAdam is kernels.cu's adam: nn's adamScalar, one rounding per
// operation (the conversions forbid fused multiply-adds).
func hostAdam(h *Host, a kargs) {
	n := a.n(10)
	p, g := view[float32](h, a.p(0), n), view[float32](h, a.p(1), n)
	ms, vs := view[float32](h, a.p(2), n), view[float32](h, a.p(3), n)
	stepSize, invSqrtBC2, b1, b2, wd, eps := a.f32(4), a.f32(5), a.f32(6), a.f32(7), a.f32(8), a.f32(9)
	for i := range p {
		gi := g[i] + float32(wd*p[i])
		m := ms[i] + float32((1-b1)*(gi-ms[i]))
		v := float32(b2*vs[i]) + float32(float32((1-b2)*gi)*gi)
		ms[i], vs[i] = m, v
		denom := float32(float32(math.Sqrt(float64(v)))*invSqrtBC2) + eps
		p[i] = p[i] - float32(stepSize*m)/denom
	}
}

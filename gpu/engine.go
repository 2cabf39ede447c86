package gpu

import (
	"fmt"
	"runtime"

	"github.com/causalrm/causalrm/nn"
)

// blockSize is kernels.cu's BLOCK: the threads of a block-per-row kernel.
const blockSize = 256

// Engine is an nn.Runner on a Device. Its methods mirror nn.Engine's, with
// the same results in exact mode; a device failure is kept in Err.
type Engine struct {
	dev   *Device
	b     Backend
	ref   *nn.Engine // grids, bit splits and Grad: host arithmetic shared with the CPU
	mlp   *nn.MLP
	exact bool
	dims  []int
	slope float64
	err   error

	wo, bo      []int
	bufs        *buffers
	paramsValid bool // the device's parameters are the host's (no Touch since the upload)
	wqValid     bool // exact: the quantized weights are of the device's parameters
	keep        bool // Resident: the gradient stays on the device
	opt         *nn.Adam
	hostStale   bool // Resident: the device holds newer parameters and moments than the host
	m           int
	f           []float64
	f32         []float32
	dl32        []float32
	nMax        int       // exact: how many gradient maxima a step has
	expsOf      []float64 // exact: the maxima whose grid exponents the device holds
	exps        []int32
}

// buffers are an engine's device allocations, freed by a cleanup when the
// engine is garbage (nn.Runner has no Close).
type buffers struct {
	ptrs   []Ptr
	params Ptr   // the flat float32 parameters
	xs     Ptr   // exact: 2^XExp[j] (layer 0's weight columns); float64
	xinv   Ptr   // exact: 2^-XExp[j]
	wq     []Ptr // exact: row-quantized weights, float64
	wexp   []Ptr // exact: their row exponents, int32
	grad   Ptr   // the partial gradient: int64 (exact) or float32 (fast)
	gemm   Ptr   // exact: weight-gradient GEMM result, float64
	wqc    Ptr   // exact: column-quantized weights of layer l >= 1
	cs     Ptr   // exact: their column scales
	maxima Ptr   // exact: the gradient maxima, float64
	exps   Ptr   // exact: the grid exponents Partial uses, int32
	grad32 Ptr   // Resident, exact: the float32 gradient
	ms, vs Ptr   // Resident: Adam's moments
	bad    Ptr   // Resident, fast: index of the first non-finite gradient element

	rowsCap int   // rows the per-row buffers below hold
	rows    Ptr   // int32 row indices
	x       Ptr   // the batch's rows: float64 grid values (exact) or float32
	a, z    []Ptr // layer inputs (l >= 1) and pre-activations
	dz      []Ptr // d loss / d z per layer
	qa, qd  Ptr   // exact: quantized operands
	rexp    Ptr   // exact: row exponents, int32
	part    Ptr   // fast: column sums per 256 rows, float32
	perRow  []Ptr // the allocations that depend on rowsCap
}

func newEngine(dev *Device, mlp *nn.MLP, exact bool, xexp []int, batch int) (*Engine, error) {
	ref, err := nn.NewEngine(mlp, exact, xexp, batch)
	if err != nil {
		return nil, err
	}
	cfg := mlp.Cfg
	e := &Engine{dev: dev, b: dev.b, ref: ref, mlp: mlp, exact: exact, dims: cfg.Dims, slope: cfg.Slope}
	e.wo, e.bo = cfg.Offsets()
	e.bufs = &buffers{}
	// Free the device memory once the engine is unreachable; the frees
	// run at the device's next call, on the goroutine that makes it.
	runtime.AddCleanup(e, func(b *buffers) { dev.freeLater(b.ptrs...) }, e.bufs)
	if err := e.allocFixed(xexp); err != nil { // the caller holds the device
		dev.free(e.bufs.ptrs...)
		e.bufs.ptrs = nil
		return nil, err
	}
	return e, nil
}

func (e *Engine) layers() int { return len(e.dims) - 1 }

// alloc takes n elements of size bytes each, checking the plan against
// the device's free memory first.
func (e *Engine) alloc(n, size int) (Ptr, error) {
	p, err := e.dev.alloc(n*size, "the model's buffers")
	if err == nil {
		e.bufs.ptrs = append(e.bufs.ptrs, p)
	}
	return p, err
}

// allocFixed takes the buffers whose size depends only on the model.
func (e *Engine) allocFixed(xexp []int) error {
	b, L := e.bufs, e.layers()
	P := len(e.mlp.Params)
	var err error
	if b.params, err = e.alloc(P, 4); err != nil {
		return err
	}
	if !e.exact {
		b.grad, err = e.alloc(P, 4)
		return err
	}
	if b.grad, err = e.alloc(P, 8); err != nil {
		return err
	}
	d := e.dims[0]
	xs, xinv := make([]float64, d), make([]float64, d)
	for j, x := range xexp {
		xs[j], xinv[j] = pow2(int32(x)), pow2(int32(-x))
	}
	if b.xs, err = e.alloc(d, 8); err != nil {
		return err
	}
	if b.xinv, err = e.alloc(d, 8); err != nil {
		return err
	}
	if err := firstErr(upload(e.b, b.xs, xs), upload(e.b, b.xinv, xinv)); err != nil {
		return err
	}
	maxW, maxIn, nMax, nExp := 0, 0, 0, 0
	b.wq, b.wexp = make([]Ptr, L), make([]Ptr, L)
	for l := 0; l < L; l++ {
		in, out := e.dims[l], e.dims[l+1]
		if b.wq[l], err = e.alloc(out*in, 8); err != nil {
			return err
		}
		if b.wexp[l], err = e.alloc(out, 4); err != nil {
			return err
		}
		maxW, maxIn = max(maxW, out*in), max(maxIn, in)
		nMax += out
		nExp += out
		if l == 0 {
			nExp += in // XExp, after the rest
		}
		if l > 0 {
			nMax += in
			nExp += in
		}
	}
	for _, s := range []struct {
		p    *Ptr
		n, w int
	}{{&b.gemm, maxW, 8}, {&b.wqc, maxW, 8}, {&b.cs, maxIn, 8}, {&b.maxima, nMax, 8}, {&b.exps, nExp, 4}} {
		if *s.p, err = e.alloc(s.n, s.w); err != nil {
			return err
		}
	}
	e.nMax, e.exps = nMax, make([]int32, nExp)
	return nil
}

// reserve makes the per-row buffers hold m rows.
func (e *Engine) reserve(m int) error {
	b := e.bufs
	if m <= b.rowsCap {
		return nil
	}
	e.dev.free(b.perRow...)
	b.ptrs = without(b.ptrs, b.perRow)
	b.perRow = nil
	m = max(m, 64)
	L := e.layers()
	w := 4
	if e.exact {
		w = 8
	}
	take := func(n, size int) (Ptr, error) {
		p, err := e.alloc(n, size)
		if err == nil {
			b.perRow = append(b.perRow, p)
		}
		return p, err
	}
	var err error
	if b.rows, err = take(m, 4); err != nil {
		return err
	}
	if b.x, err = take(m*e.dims[0], w); err != nil {
		return err
	}
	b.a, b.z, b.dz = make([]Ptr, L), make([]Ptr, L), make([]Ptr, L)
	maxDim := 0
	for l := 0; l < L; l++ {
		in, out := e.dims[l], e.dims[l+1]
		maxDim = max(maxDim, in, out)
		if l > 0 {
			if b.a[l], err = take(m*in, w); err != nil {
				return err
			}
		}
		if b.z[l], err = take(m*out, w); err != nil {
			return err
		}
		if b.dz[l], err = take(m*out, w); err != nil {
			return err
		}
	}
	if !e.exact {
		if b.part, err = take((m+255)/256*maxDim, 4); err != nil {
			return err
		}
	}
	if e.exact {
		if b.qa, err = take(m*maxDim, 8); err != nil {
			return err
		}
		if b.qd, err = take(m*maxDim, 8); err != nil {
			return err
		}
		if b.rexp, err = take(m, 4); err != nil {
			return err
		}
	}
	b.rowsCap = m
	return nil
}

func without(all, drop []Ptr) []Ptr {
	gone := map[Ptr]bool{}
	for _, p := range drop {
		gone[p] = true
	}
	out := all[:0]
	for _, p := range all {
		if !gone[p] {
			out = append(out, p)
		}
	}
	return out
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Touch says the host's parameters (and, once Step has run, Adam's
// moments) changed: they are uploaded (and quantized) again before the
// next pass.
func (e *Engine) Touch() { e.paramsValid, e.hostStale = false, false }

// Err is the first device failure.
func (e *Engine) Err() error { return e.err }

// Grad turns the reduced integer gradient into float32 on the host, with
// the CPU engine's code.
func (e *Engine) Grad(sum []int64, maxima []float64, scale float64, grad []float32) error {
	return e.ref.Grad(sum, maxima, scale, grad)
}

// fail records the first error.
func (e *Engine) fail(err error) {
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("gpu %s: %w", e.b.Name(), err)
	}
}

// wPtr and bPtr address layer l's weights and bias in the parameters.
func (e *Engine) wPtr(l int) Ptr { return e.bufs.params + Ptr(4*e.wo[l]) }
func (e *Engine) bPtr(l int) Ptr { return e.bufs.params + Ptr(4*e.bo[l]) }

// launch geometry: a grid-stride loop over n elements, or one block per row.
func flat(n int) ([3]uint32, [3]uint32) {
	g := min((n+blockSize-1)/blockSize, 65535)
	return [3]uint32{uint32(max(g, 1)), 1, 1}, [3]uint32{blockSize, 1, 1}
}

func perRow(rows int) ([3]uint32, [3]uint32) {
	return [3]uint32{uint32(max(min(rows, 65535), 1)), 1, 1}, [3]uint32{blockSize, 1, 1}
}

func perCol(cols int) ([3]uint32, [3]uint32) {
	return [3]uint32{uint32(max((cols+31)/32, 1)), 1, 1}, [3]uint32{32, 8, 1}
}

// perColRows is col_maxabs's and col_sum_i64's: 32 columns by 256 rows a block.
func perColRows(rows, cols int) ([3]uint32, [3]uint32) {
	return [3]uint32{uint32(max((cols+31)/32, 1)), uint32(max((rows+255)/256, 1)), 1}, [3]uint32{32, 8, 1}
}

// launcher issues kernels and stops at the first error.
type launcher struct {
	b   Backend
	err error
}

func (k *launcher) run(name string, geo func(int) ([3]uint32, [3]uint32), n int, args ...any) {
	if k.err != nil {
		return
	}
	g, bl := geo(n)
	k.err = k.b.Launch(name, g, bl, args...)
}

func (k *launcher) grid(name string, grid, block [3]uint32, args ...any) {
	if k.err == nil {
		k.err = k.b.Launch(name, grid, block, args...)
	}
}

func (k *launcher) do(f func() error) {
	if k.err == nil {
		k.err = f()
	}
}

package nn

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
)

// ErrNonFinite reports a NaN or Inf in activations or gradients.
var ErrNonFinite = errors.New("nn: non-finite value")

// Engine runs the forward and backward passes of one model over batches of
// rows. In exact mode every cross-row sum is an integer (see fixed.go), so
// the partial gradient of a set of rows is an int64 vector that sums, over
// any partition of the rows, to the same bits; each row's forward output is
// independent of the rows that share its GEMM. In fast mode everything is
// plain float32 BLAS.
//
// A step is: Forward, then Maxima (row-wise backward; the result must be
// max-reduced over everyone holding rows of the batch), then Partial (or
// PartialFast), a sum-reduce, and Grad to turn the reduced sum into a
// gradient.
type Engine struct {
	M     *MLP
	Exact bool
	// XExp is the per-input-column grid exponent of the (quantized) data.
	XExp []int
	// Batch bounds the rows any reduced sum covers (the global batch size).
	Batch int

	m       int
	x       []float64   // m x d: exact: integer grid values of x; unused in fast mode
	a       [][]float64 // exact: input of layer l (l >= 1), m x in
	z       [][]float64 // exact: pre-activation of layer l, m x out
	dz      [][]float64 // exact: d loss / d z of layer l
	qa, qd  []float64   // scratch
	rexp    []int
	wq      [][]float64 // exact: row-quantized weights, cached until Touch
	wexp    [][]int
	wqValid bool
	gemm    []float64 // scratch for the weight-gradient GEMM
	xscale  []float64 // 2^XExp[j]
	xinv    []float64 // 2^-XExp[j]
	f       []float64

	x32  []float32
	a32  [][]float32
	z32  [][]float32
	dz32 [][]float32
}

// NewEngine prepares an engine; exps may be nil in fast mode.
func NewEngine(m *MLP, exact bool, xexp []int, batch int) (*Engine, error) {
	if exact && len(xexp) != m.Cfg.Dims[0] {
		return nil, fmt.Errorf("nn: exact mode needs %d column exponents, got %d", m.Cfg.Dims[0], len(xexp))
	}
	if batch < 1 || log2ceil(batch) > 20 {
		return nil, fmt.Errorf("nn: batch %d outside [1, 2^20]", batch)
	}
	L := m.Cfg.Layers()
	e := &Engine{M: m, Exact: exact, XExp: xexp, Batch: batch,
		a: make([][]float64, L), z: make([][]float64, L), dz: make([][]float64, L),
		wq: make([][]float64, L), wexp: make([][]int, L),
		a32: make([][]float32, L), z32: make([][]float32, L), dz32: make([][]float32, L)}
	if exact {
		e.xscale = make([]float64, len(xexp))
		e.xinv = make([]float64, len(xexp))
		for j, x := range xexp {
			e.xscale[j], e.xinv[j] = pow2(x), pow2(-x)
		}
	}
	return e, nil
}

// Touch tells the engine the parameters changed (after an optimizer step).
func (e *Engine) Touch() { e.wqValid = false }

func grow(s []float64, n int) []float64 {
	if cap(s) < n {
		return make([]float64, n)
	}
	return s[:n]
}

func grow32(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// fwdBits is the split of the 52-bit budget for layer l's forward sum over
// its inputs: (bits of the input, bits of the weights).
func (e *Engine) fwdBits(l int) (int, int) {
	in := e.M.Cfg.Dims[l]
	budget := sumBits - log2ceil(in)
	if l == 0 {
		return XBits, budget - XBits
	}
	return budget - budget/2, budget / 2
}

// bwdBits is the split for the cross-row sums of layer l's weight gradient:
// (bits of dz, bits of the layer input).
func (e *Engine) bwdBits(l int) (int, int) {
	budget := sumBits - log2ceil(e.Batch)
	if l == 0 {
		return budget - XBits, XBits
	}
	return budget - budget/2, budget / 2
}

// backBits is the split for the row-wise product dz_l * W_l (sum over the
// layer's outputs).
func (e *Engine) backBits(l int) (int, int) {
	budget := sumBits - log2ceil(e.M.Cfg.Dims[l+1])
	return budget - budget/2, budget / 2
}

// quantWeights caches each layer's weights on per-output-row grids; layer
// 0 first multiplies column j by 2^XExp[j] so that the integer grid values
// of x can be used directly.
func (e *Engine) quantWeights() {
	if e.wqValid {
		return
	}
	cfg := e.M.Cfg
	for l := 0; l < cfg.Layers(); l++ {
		in, out := cfg.Dims[l], cfg.Dims[l+1]
		w := e.M.Wd(l)
		e.wq[l] = grow(e.wq[l], out*in)
		if len(e.wexp[l]) != out {
			e.wexp[l] = make([]int, out)
		}
		_, wb := e.fwdBits(l)
		q, exps := e.wq[l], e.wexp[l]
		var cs []float64 // layer 0: column j of W times 2^XExp[j]
		if l == 0 {
			cs = e.xscale
		}
		parallelFor(out, func(lo, hi int) {
			for k := lo; k < hi; k++ {
				wr, qr := w[k*in:(k+1)*in], q[k*in:(k+1)*in]
				mx := 0.0
				if cs != nil {
					mx = maxAbsScaledK(wr, cs)
				} else {
					for _, v := range wr {
						if a := math.Abs(float64(v)); a > mx || a != a {
							mx = a
						}
					}
				}
				ex := GridExp(mx, wb)
				exps[k] = ex
				inv := pow2(-ex)
				if cs != nil {
					quantScaledK(qr, wr, cs, inv)
				} else {
					for j, v := range wr {
						qr[j] = rint(float64(v) * inv)
					}
				}
			}
		})
	}
	e.wqValid = true
}

// Forward computes the logits of the given rows of x (row-major, d
// columns) and keeps what the backward pass needs.
func (e *Engine) Forward(x []float32, rows []int32) []float64 {
	if e.Exact {
		return e.forwardExact(x, rows)
	}
	return e.forwardFast(x, rows)
}

func (e *Engine) forwardExact(x []float32, rows []int32) []float64 {
	cfg := e.M.Cfg
	d := cfg.Dims[0]
	m := len(rows)
	e.m = m
	e.quantWeights()
	inv := e.xinv
	e.x = grow(e.x, m*d)
	parallelFor(m, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			widenScaledK(e.x[i*d:(i+1)*d], x[int(rows[i])*d:int(rows[i]+1)*d], inv)
		}
	})
	e.f = grow(e.f, m)
	if m == 0 {
		return e.f
	}
	for l := 0; l < cfg.Layers(); l++ {
		in, out := cfg.Dims[l], cfg.Dims[l+1]
		var qa []float64
		if l == 0 {
			qa = e.x
			e.rexp = e.rexp[:0]
		} else {
			ab, _ := e.fwdBits(l)
			e.qa = grow(e.qa, m*in)
			if cap(e.rexp) < m {
				e.rexp = make([]int, m)
			}
			e.rexp = e.rexp[:m]
			quantizeRows(e.a[l], m, in, ab, e.qa, e.rexp)
			qa = e.qa
		}
		e.z[l] = grow(e.z[l], m*out)
		z := e.z[l]
		ab, wb := e.fwdBits(l)
		if !exactProduct(blas.NoTrans, blas.Trans, m, out, in, qa, in, ab, e.wq[l], in, wb, nil, z, out) {
			BLAS().Dgemm(blas.NoTrans, blas.Trans, m, out, in, 1, qa, in, e.wq[l], in, 0, z, out)
		}
		bias := e.M.Bd(l)
		ws := make([]float64, out)
		for k := range ws {
			ws[k] = pow2(e.wexp[l][k])
		}
		last := l == cfg.Layers()-1
		if !last {
			e.a[l+1] = grow(e.a[l+1], m*out)
		}
		for i := 0; i < m; i++ {
			rs := 1.0
			if l > 0 {
				rs = pow2(e.rexp[i])
			}
			zr := z[i*out : (i+1)*out]
			for k := range zr {
				zr[k] = zr[k]*rs*ws[k] + float64(bias[k])
			}
			if !last {
				ar := e.a[l+1][i*out : (i+1)*out]
				for k, v := range zr {
					ar[k] = cfg.leaky(v)
				}
			}
		}
	}
	copy(e.f, e.z[cfg.Layers()-1])
	return e.f
}

// Maxima runs the row-wise part of the backward pass from d loss / d f per
// row (already including any per-row weights, not the normaliser) and
// returns the column maxima that fix the fixed-point grids: for each layer
// l, max |dz_l| per output, then for l >= 1 max |input| per input. The
// caller max-reduces it across every holder of the batch's rows.
func (e *Engine) Maxima(dldf []float64) []float64 {
	cfg := e.M.Cfg
	m, L := e.m, cfg.Layers()
	e.dz[L-1] = grow(e.dz[L-1], m)
	copy(e.dz[L-1], dldf)
	for l := L - 1; l >= 1; l-- {
		in, out := cfg.Dims[l], cfg.Dims[l+1]
		e.dz[l-1] = grow(e.dz[l-1], m*in)
		if m == 0 {
			continue
		}
		// dA = dz_l W_l, row-wise exact: dz on row grids, W on column grids.
		db, wb := e.backBits(l)
		e.qd = grow(e.qd, m*out)
		if cap(e.rexp) < m {
			e.rexp = make([]int, m)
		}
		e.rexp = e.rexp[:m]
		quantizeRows(e.dz[l], m, out, db, e.qd, e.rexp)
		w := e.M.Wd(l)
		cmax := make([]float64, in)
		for k := 0; k < out; k++ {
			for j := 0; j < in; j++ {
				if a := math.Abs(float64(w[k*in+j])); a > cmax[j] {
					cmax[j] = a
				}
			}
		}
		cexp := make([]int, in)
		cs := make([]float64, in)
		for j := range cexp {
			cexp[j] = GridExp(cmax[j], wb)
			cs[j] = pow2(cexp[j])
		}
		wqc := make([]float64, out*in)
		for k := 0; k < out; k++ {
			for j := 0; j < in; j++ {
				wqc[k*in+j] = rint(float64(w[k*in+j]) / cs[j])
			}
		}
		da := e.dz[l-1]
		BLAS().Dgemm(blas.NoTrans, blas.NoTrans, m, in, out, 1, e.qd, out, wqc, in, 0, da, in)
		zp := e.z[l-1]
		for i := 0; i < m; i++ {
			rs := pow2(e.rexp[i])
			for j := 0; j < in; j++ {
				da[i*in+j] *= rs * cs[j] * cfg.leakyGrad(zp[i*in+j])
			}
		}
	}
	var out []float64
	for l := 0; l < L; l++ {
		mx := make([]float64, cfg.Dims[l+1])
		colMaxAbs(e.dz[l], m, cfg.Dims[l+1], mx)
		out = append(out, mx...)
	}
	for l := 1; l < L; l++ {
		mx := make([]float64, cfg.Dims[l])
		colMaxAbs(e.a[l], m, cfg.Dims[l], mx)
		out = append(out, mx...)
	}
	return out
}

// grids turns reduced maxima into the per-layer grid exponents of dz and
// of the layer inputs.
func (e *Engine) grids(maxima []float64) (dzExp, aExp [][]int, err error) {
	cfg := e.M.Cfg
	L := cfg.Layers()
	for _, v := range maxima {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, nil, fmt.Errorf("%w in the gradient", ErrNonFinite)
		}
	}
	off := 0
	dzExp = make([][]int, L)
	aExp = make([][]int, L)
	for l := 0; l < L; l++ {
		zb, _ := e.bwdBits(l)
		dzExp[l] = make([]int, cfg.Dims[l+1])
		for k := range dzExp[l] {
			dzExp[l][k] = GridExp(maxima[off+k], zb)
		}
		off += cfg.Dims[l+1]
	}
	aExp[0] = e.XExp
	for l := 1; l < L; l++ {
		_, ab := e.bwdBits(l)
		aExp[l] = make([]int, cfg.Dims[l])
		for j := range aExp[l] {
			aExp[l][j] = GridExp(maxima[off+j], ab)
		}
		off += cfg.Dims[l]
	}
	if off != len(maxima) {
		return nil, nil, fmt.Errorf("nn: %d maxima, want %d", len(maxima), off)
	}
	return dzExp, aExp, nil
}

// Partial writes the exact integer partial gradient of this engine's rows
// (layout of Config.Offsets) into dst, given the reduced maxima.
func (e *Engine) Partial(maxima []float64, dst []int64) error {
	cfg := e.M.Cfg
	dzExp, aExp, err := e.grids(maxima)
	if err != nil {
		return err
	}
	wo, bo := cfg.Offsets()
	m := e.m
	for l := 0; l < cfg.Layers(); l++ {
		in, out := cfg.Dims[l], cfg.Dims[l+1]
		dw := dst[wo[l] : wo[l]+out*in]
		db := dst[bo[l] : bo[l]+out]
		if m == 0 {
			clear(dw)
			clear(db)
			continue
		}
		e.qd = grow(e.qd, m*out)
		quantizeCols(e.dz[l], m, out, dzExp[l], e.qd)
		qa := e.x
		if l > 0 {
			e.qa = grow(e.qa, m*in)
			quantizeCols(e.a[l], m, in, aExp[l], e.qa)
			qa = e.qa
		}
		zb, ab := e.bwdBits(l)
		if !exactProduct(blas.Trans, blas.NoTrans, out, in, m, e.qd, out, zb, qa, in, ab, dw, nil, in) {
			e.gemm = grow(e.gemm, out*in)
			c := e.gemm
			BLAS().Dgemm(blas.Trans, blas.NoTrans, out, in, m, 1, e.qd, out, qa, in, 0, c, in)
			parallelFor(out, func(lo, hi int) {
				toInt64K(dw[lo*in:hi*in], c[lo*in:hi*in])
			})
		}
		clear(db)
		for i := 0; i < m; i++ {
			for k, v := range e.qd[i*out : (i+1)*out] {
				db[k] += int64(v)
			}
		}
	}
	return nil
}

// Grad turns a reduced integer gradient into float32, multiplied by scale
// (1/normaliser), using the grids of the same reduced maxima.
func (e *Engine) Grad(sum []int64, maxima []float64, scale float64, grad []float32) error {
	cfg := e.M.Cfg
	dzExp, aExp, err := e.grids(maxima)
	if err != nil {
		return err
	}
	wo, bo := cfg.Offsets()
	for l := 0; l < cfg.Layers(); l++ {
		in, out := cfg.Dims[l], cfg.Dims[l+1]
		as := make([]float64, in)
		for j := range as {
			as[j] = pow2(aExp[l][j])
		}
		for k := 0; k < out; k++ {
			zs := pow2(dzExp[l][k])
			row := sum[wo[l]+k*in : wo[l]+(k+1)*in]
			g := grad[wo[l]+k*in : wo[l]+(k+1)*in]
			narrowScaledK(g, row, zs, as, scale)
			grad[bo[l]+k] = float32(float64(sum[bo[l]+k]) * zs * scale)
		}
	}
	return nil
}

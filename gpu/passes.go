package gpu

import (
	"math"
	"slices"
)

// The passes of nn.Engine on the device: each issues its kernels and
// GEMMs in order on the one stream and waits only for what it returns.

// syncParams uploads the parameters after a Touch and, in exact mode,
// quantizes every layer's weights onto their row grids (nn's
// quantWeights; layer 0 scaled by 2^XExp first).
func (e *Engine) syncParams(k *launcher) {
	b := e.bufs
	if !e.paramsValid {
		k.do(func() error { return upload(e.b, b.params, e.mlp.Params) })
		if e.opt != nil {
			k.do(func() error { return firstErr(upload(e.b, b.ms, e.opt.M), upload(e.b, b.vs, e.opt.V)) })
		}
		if k.err == nil {
			e.paramsValid, e.wqValid = true, false
		}
	}
	if e.exact && !e.wqValid {
		for l := 0; l < e.layers(); l++ {
			in, out := e.dims[l], e.dims[l+1]
			_, wb := e.ref.FwdBits(l)
			cs := Ptr(0)
			if l == 0 {
				cs = b.xs
			}
			k.run("quant_wrows", perRow, out, b.wq[l], b.wexp[l], e.wPtr(l), cs, int32(out), int32(in), int32(wb))
		}
		if k.err == nil {
			e.wqValid = true
		}
	}
}

// Forward computes the logits of rows of x; x is uploaded on first use.
func (e *Engine) Forward(x []float32, rows []int32) []float64 {
	m := len(rows)
	e.m = m
	e.f = grow(e.f, m)
	if e.err != nil || m == 0 {
		return e.f
	}
	e.fail(e.dev.do(func() error {
		if err := e.reserve(m); err != nil {
			return err
		}
		xd, err := e.dev.embeddings(x)
		if err != nil {
			return err
		}
		k := &launcher{b: e.b}
		e.syncParams(k)
		k.do(func() error { return upload(e.b, e.bufs.rows, rows) })
		if e.exact {
			e.forwardExact(k, xd, m)
		} else {
			e.forwardFast(k, xd, m)
		}
		return k.err
	}))
	if e.err != nil {
		for i := range e.f {
			e.f[i] = math.NaN()
		}
	}
	return e.f
}

func (e *Engine) forwardExact(k *launcher, xd Ptr, m int) {
	b, L, d := e.bufs, e.layers(), e.dims[0]
	k.run("widen_rows", flat, m*d, b.x, xd, b.rows, b.xinv, int32(m), int32(d))
	for l := 0; l < L; l++ {
		in, out := e.dims[l], e.dims[l+1]
		qa, rexp := b.x, Ptr(0)
		if l > 0 {
			ab, _ := e.ref.FwdBits(l)
			k.run("quant_rows", perRow, m, b.qa, b.rexp, b.a[l], int32(m), int32(in), int32(ab))
			qa, rexp = b.qa, b.rexp
		}
		k.do(func() error { return e.b.Dgemm(false, true, m, out, in, qa, in, b.wq[l], in, b.z[l], out) })
		next := Ptr(0)
		if l < L-1 {
			next = b.a[l+1]
		}
		k.run("fwd_exact", flat, m*out, b.z[l], next, rexp, b.wexp[l], e.bPtr(l), e.slope, int32(m), int32(out))
	}
	k.do(func() error { return download(e.b, e.f, b.z[L-1]) })
}

func (e *Engine) forwardFast(k *launcher, xd Ptr, m int) {
	b, L, d := e.bufs, e.layers(), e.dims[0]
	k.run("gather_rows", flat, m*d, b.x, xd, b.rows, int32(m), int32(d))
	slope := float32(e.slope)
	for l := 0; l < L; l++ {
		in, out := e.dims[l], e.dims[l+1]
		a := b.x
		if l > 0 {
			a = b.a[l]
		}
		k.do(func() error { return e.b.Sgemm(false, true, m, out, in, a, in, e.wPtr(l), in, b.z[l], out) })
		next := Ptr(0)
		if l < L-1 {
			next = b.a[l+1]
		}
		k.run("fwd_fast", flat, m*out, b.z[l], next, e.bPtr(l), slope, int32(m), int32(out))
	}
	e.f32 = grow(e.f32, m)
	k.do(func() error { return download(e.b, e.f32, b.z[L-1]) })
	for i, v := range e.f32 {
		e.f[i] = float64(v)
	}
}

// Maxima runs the row-wise backward pass from d loss / d f per row and
// returns the column maxima that fix the gradient's grids (nn's layout).
func (e *Engine) Maxima(dldf []float64) []float64 {
	out := make([]float64, e.nMax)
	if e.err != nil || e.m == 0 {
		if e.err != nil {
			for i := range out {
				out[i] = math.NaN()
			}
		}
		return out
	}
	m, L, b := e.m, e.layers(), e.bufs
	e.fail(e.dev.do(func() error {
		k := &launcher{b: e.b}
		k.do(func() error { return upload(e.b, b.dz[L-1], dldf[:m]) })
		for l := L - 1; l >= 1; l-- {
			in, out := e.dims[l], e.dims[l+1]
			db, wb := e.ref.BackBits(l)
			k.run("quant_rows", perRow, m, b.qd, b.rexp, b.dz[l], int32(m), int32(out), int32(db))
			k.run("col_grid", flat, in, b.cs, e.wPtr(l), int32(out), int32(in), int32(wb))
			k.run("quant_wcols", flat, out*in, b.wqc, e.wPtr(l), b.cs, int32(out), int32(in))
			k.do(func() error { return e.b.Dgemm(false, false, m, in, out, b.qd, out, b.wqc, in, b.dz[l-1], in) })
			k.run("bwd_exact", flat, m*in, b.dz[l-1], b.rexp, b.cs, b.z[l-1], e.slope, int32(m), int32(in))
		}
		k.run("zero64", flat, len(out), b.maxima, int32(len(out)))
		off := 0
		colMax := func(v Ptr, cols int) {
			g, bl := perColRows(m, cols)
			k.grid("col_maxabs", g, bl, b.maxima+Ptr(8*off), v, int32(m), int32(cols))
			off += cols
		}
		for l := 0; l < L; l++ {
			colMax(b.dz[l], e.dims[l+1])
		}
		for l := 1; l < L; l++ {
			colMax(b.a[l], e.dims[l])
		}
		k.do(func() error { return download(e.b, out, b.maxima) })
		return k.err
	}))
	if e.err != nil {
		for i := range out {
			out[i] = math.NaN()
		}
	}
	return out
}

// Partial writes the exact integer partial gradient of the rows of the
// last Forward into dst, given the reduced maxima.
func (e *Engine) Partial(maxima []float64, dst []int64) error {
	if e.err != nil {
		return e.err
	}
	fresh, err := e.gridExps(maxima)
	if err != nil {
		return err
	}
	if e.m == 0 {
		if !e.keep {
			clear(dst)
			return nil
		}
		return e.zeroGradient()
	}
	m, L, b := e.m, e.layers(), e.bufs
	e.fail(e.dev.do(func() error {
		k := &launcher{b: e.b}
		e.uploadExps(k, fresh, maxima)
		k.run("zero64", flat, len(e.mlp.Params), b.grad, int32(len(e.mlp.Params))) // the bias sums add into it
		dzOff, aOff := 0, 0
		for l := 0; l < L; l++ {
			aOff += e.dims[l+1]
		}
		for l := 0; l < L; l++ {
			in, out := e.dims[l], e.dims[l+1]
			k.run("quant_cols", flat, m*out, b.qd, b.dz[l], b.exps+Ptr(4*dzOff), int32(m), int32(out))
			dzOff += out
			qa := b.x
			if l > 0 {
				k.run("quant_cols", flat, m*in, b.qa, b.a[l], b.exps+Ptr(4*aOff), int32(m), int32(in))
				aOff += in
				qa = b.qa
			}
			k.do(func() error { return e.b.Dgemm(true, false, out, in, m, b.qd, out, qa, in, b.gemm, in) })
			k.run("to_int64", flat, out*in, b.grad+Ptr(8*e.wo[l]), b.gemm, int32(out*in))
			g, bl := perColRows(m, out)
			k.grid("col_sum_i64", g, bl, b.grad+Ptr(8*e.bo[l]), b.qd, int32(m), int32(out))
		}
		if !e.keep {
			k.do(func() error { return download(e.b, dst[:len(e.mlp.Params)], b.grad) })
		}
		return k.err
	}))
	return e.err
}

// gridExps fills e.exps from reduced maxima, in b.exps's layout: dz's
// exponents per layer, the inputs' of layers >= 1, then XExp. It reports
// false, and does nothing, when the device already holds the exponents of
// these maxima (Step after Partial).
func (e *Engine) gridExps(maxima []float64) (fresh bool, err error) {
	if e.expsOf != nil && slices.Equal(e.expsOf, maxima) {
		return false, nil
	}
	dzExp, aExp, err := e.ref.Grids(maxima)
	if err != nil {
		return false, err
	}
	L := e.layers()
	e.exps = e.exps[:0]
	for l := 0; l < L; l++ {
		for _, x := range dzExp[l] {
			e.exps = append(e.exps, int32(x))
		}
	}
	for l := 0; l < L; l++ {
		for _, x := range aExp[(l+1)%L] { // layers 1..L-1, then 0 (XExp)
			e.exps = append(e.exps, int32(x))
		}
	}
	return true, nil
}

// uploadExps puts fresh exponents (gridExps) on the device and remembers
// whose they are.
func (e *Engine) uploadExps(k *launcher, fresh bool, maxima []float64) {
	if !fresh {
		return
	}
	e.expsOf = nil
	k.do(func() error { return upload(e.b, e.bufs.exps, e.exps) })
	if k.err == nil {
		e.expsOf = append([]float64{}, maxima...)
	}
}

// PartialFast writes the float32 partial gradient sum of the rows of the
// last Forward into dst.
func (e *Engine) PartialFast(dldf []float64, dst []float32) {
	if e.err != nil {
		return
	}
	if e.m == 0 {
		if !e.keep {
			clear(dst)
			return
		}
		e.fail(e.zeroGradient())
		return
	}
	m, L, b := e.m, e.layers(), e.bufs
	e.dl32 = grow(e.dl32, m)
	for i, v := range dldf[:m] {
		e.dl32[i] = float32(v)
	}
	slope := float32(e.slope)
	e.fail(e.dev.do(func() error {
		k := &launcher{b: e.b}
		k.do(func() error { return upload(e.b, b.dz[L-1], e.dl32) })
		for l := L - 1; l >= 0; l-- {
			in, out := e.dims[l], e.dims[l+1]
			a := b.x
			if l > 0 {
				a = b.a[l]
			}
			k.do(func() error {
				return e.b.Sgemm(true, false, out, in, m, b.dz[l], out, a, in, b.grad+Ptr(4*e.wo[l]), in)
			})
			g, bl := perColRows(m, out)
			k.grid("col_sum_f32", g, bl, b.part, b.dz[l], int32(m), int32(out))
			k.run("col_sum_f32_fin", flat, out, b.grad+Ptr(4*e.bo[l]), b.part, int32(g[1]), int32(out))
			if l == 0 {
				break
			}
			k.do(func() error { return e.b.Sgemm(false, false, m, in, out, b.dz[l], out, e.wPtr(l), in, b.dz[l-1], in) })
			k.run("bwd_fast", flat, m*in, b.dz[l-1], b.z[l-1], slope, int32(m*in))
		}
		if !e.keep {
			k.do(func() error { return download(e.b, dst[:len(e.mlp.Params)], b.grad) })
		}
		return k.err
	}))
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

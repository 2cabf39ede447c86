package nn

import (
	"gonum.org/v1/gonum/blas"
)

// The fast mode: plain float32 BLAS, PyTorch's arithmetic. Results depend
// on how rows are grouped, so it is for speed comparisons and for runs
// that do not need bit-identical replays.

func (e *Engine) forwardFast(x []float32, rows []int32) []float64 {
	cfg := e.M.Cfg
	d := cfg.Dims[0]
	m := len(rows)
	e.m = m
	e.x32 = grow32(e.x32, m*d)
	parallelFor(m, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			copy(e.x32[i*d:(i+1)*d], x[int(rows[i])*d:int(rows[i]+1)*d])
		}
	})
	e.f = grow(e.f, m)
	if m == 0 {
		return e.f
	}
	e.a32[0] = e.x32
	for l := 0; l < cfg.Layers(); l++ {
		in, out := cfg.Dims[l], cfg.Dims[l+1]
		e.z32[l] = grow32(e.z32[l], m*out)
		z := e.z32[l]
		blas32().Sgemm(blas.NoTrans, blas.Trans, m, out, in, 1, e.a32[l], in, e.M.Wd(l), in, 0, z, out)
		bias := e.M.Bd(l)
		last := l == cfg.Layers()-1
		if !last {
			e.a32[l+1] = grow32(e.a32[l+1], m*out)
		}
		slope := float32(cfg.Slope)
		for i := 0; i < m; i++ {
			zr := z[i*out : (i+1)*out]
			for k := range zr {
				zr[k] += bias[k]
			}
			if !last {
				ar := e.a32[l+1][i*out : (i+1)*out]
				for k, v := range zr {
					if v > 0 {
						ar[k] = v
					} else {
						ar[k] = slope * v
					}
				}
			}
		}
	}
	for i, v := range e.z32[cfg.Layers()-1] {
		e.f[i] = float64(v)
	}
	return e.f
}

// PartialFast writes the float32 partial gradient sum of this engine's rows
// (before the normaliser) into dst, from d loss / d f per row.
func (e *Engine) PartialFast(dldf []float64, dst []float32) {
	cfg := e.M.Cfg
	m, L := e.m, cfg.Layers()
	wo, bo := cfg.Offsets()
	e.dz32[L-1] = grow32(e.dz32[L-1], m)
	for i, v := range dldf[:m] {
		e.dz32[L-1][i] = float32(v)
	}
	slope := float32(cfg.Slope)
	for l := L - 1; l >= 0; l-- {
		in, out := cfg.Dims[l], cfg.Dims[l+1]
		dw := dst[wo[l] : wo[l]+out*in]
		db := dst[bo[l] : bo[l]+out]
		clear(db)
		if m == 0 {
			clear(dw)
			continue
		}
		dz := e.dz32[l]
		blas32().Sgemm(blas.Trans, blas.NoTrans, out, in, m, 1, dz, out, e.a32[l], in, 0, dw, in)
		for i := 0; i < m; i++ {
			for k, v := range dz[i*out : (i+1)*out] {
				db[k] += v
			}
		}
		if l == 0 {
			break
		}
		e.dz32[l-1] = grow32(e.dz32[l-1], m*in)
		da := e.dz32[l-1]
		blas32().Sgemm(blas.NoTrans, blas.NoTrans, m, in, out, 1, dz, out, e.M.Wd(l), in, 0, da, in)
		zp := e.z32[l-1]
		for i, v := range zp[:m*in] {
			if v <= 0 {
				da[i] *= slope
			}
		}
	}
}

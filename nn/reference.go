package nn

// RefForward64 is a plain float64 forward pass of one row with loops in a
// fixed order: the independent truth the tests hold the fast and exact
// passes against, and the function finite differences differentiate.
func RefForward64(cfg Config, params []float64, x []float64) float64 {
	wo, bo := cfg.Offsets()
	a := x
	for l := 0; l < cfg.Layers(); l++ {
		z := refAffine(cfg, params, wo, bo, l, a)
		if l == cfg.Layers()-1 {
			return z[0]
		}
		for k := range z {
			z[k] = cfg.leaky(z[k])
		}
		a = z
	}
	panic("unreachable")
}

// refAffine is layer l's pre-activation W a + b, summed in index order.
func refAffine(cfg Config, params []float64, wo, bo []int, l int, a []float64) []float64 {
	in, out := cfg.Dims[l], cfg.Dims[l+1]
	z := make([]float64, out)
	for k := 0; k < out; k++ {
		s := params[bo[l]+k]
		for j := 0; j < in; j++ {
			s += params[wo[l]+k*in+j] * a[j]
		}
		z[k] = s
	}
	return z
}

// RefGrad64 is the analytic gradient of sum_i w_i * f(x_i) in plain
// float64 loops (backpropagation written out), for tests.
func RefGrad64(cfg Config, params []float64, xs [][]float64, w []float64) []float64 {
	wo, bo := cfg.Offsets()
	L := cfg.Layers()
	grad := make([]float64, len(params))
	for r, x := range xs {
		acts := [][]float64{x}
		zs := [][]float64{}
		a := x
		for l := 0; l < L; l++ {
			z := refAffine(cfg, params, wo, bo, l, a)
			out := len(z)
			zs = append(zs, z)
			if l < L-1 {
				h := make([]float64, out)
				for k := range z {
					h[k] = cfg.leaky(z[k])
				}
				acts = append(acts, h)
				a = h
			}
		}
		dz := []float64{w[r]}
		for l := L - 1; l >= 0; l-- {
			in, out := cfg.Dims[l], cfg.Dims[l+1]
			for k := 0; k < out; k++ {
				grad[bo[l]+k] += dz[k]
				for j := 0; j < in; j++ {
					grad[wo[l]+k*in+j] += dz[k] * acts[l][j]
				}
			}
			if l == 0 {
				break
			}
			da := make([]float64, in)
			for j := 0; j < in; j++ {
				s := 0.0
				for k := 0; k < out; k++ {
					s += dz[k] * params[wo[l]+k*in+j]
				}
				da[j] = s * cfg.leakyGrad(zs[l-1][j])
			}
			dz = da
		}
	}
	return grad
}

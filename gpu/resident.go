package gpu

import (
	"fmt"
	"math"

	"github.com/causalrm/causalrm/nn"
)

// The Resident half of the engine (nn.Resident): in one process the
// gradient never leaves the device; Step turns it into the float32
// gradient and runs Adam there, and the host sees the parameters again
// at Sync.

var _ nn.Resident = (*Engine)(nil)

// Keep makes Partial and PartialFast leave the gradient on the device.
func (e *Engine) Keep() {
	if e.keep || e.err != nil {
		return
	}
	P := len(e.mlp.Params)
	e.fail(e.dev.do(func() error {
		var err error
		b := e.bufs
		if e.exact {
			if b.grad32, err = e.alloc(P, 4); err != nil {
				return err
			}
		}
		if b.ms, err = e.alloc(P, 4); err != nil {
			return err
		}
		if b.vs, err = e.alloc(P, 4); err != nil {
			return err
		}
		b.bad, err = e.alloc(1, 4)
		return err
	}))
	e.keep = e.err == nil
}

// zeroGradient clears the kept gradient (a batch without rows here).
func (e *Engine) zeroGradient() error {
	n := len(e.mlp.Params)
	return e.dev.do(func() error {
		if e.exact {
			return upload(e.b, e.bufs.grad, make([]int64, n))
		}
		return upload(e.b, e.bufs.grad, make([]float32, n))
	})
}

// Step applies the kept gradient with Adam on the device.
func (e *Engine) Step(opt *nn.Adam, maxima []float64, scale float64) error {
	if e.err != nil {
		return e.err
	}
	if !e.keep {
		return fmt.Errorf("gpu: Step without Keep")
	}
	var fresh bool
	if e.exact {
		var err error
		if fresh, err = e.gridExps(maxima); err != nil {
			return err
		}
	}
	P, b, L := len(e.mlp.Params), e.bufs, e.layers()
	var bad int32
	e.fail(e.dev.do(func() error {
		k := &launcher{b: e.b}
		if e.opt != opt {
			e.opt = opt
			k.do(func() error { return firstErr(upload(e.b, b.ms, opt.M), upload(e.b, b.vs, opt.V)) })
		}
		e.syncParams(k)
		g := b.grad
		if e.exact {
			g = b.grad32
			e.uploadExps(k, fresh, maxima)
			dzOff, aOff, xOff := 0, 0, len(e.exps)-e.dims[0]
			for l := 0; l < L; l++ {
				aOff += e.dims[l+1]
			}
			for l := 0; l < L; l++ {
				in, out := e.dims[l], e.dims[l+1]
				ax := xOff
				if l > 0 {
					ax = aOff
					aOff += in
				}
				k.run("grad_exact", flat, out*in, g+Ptr(4*e.wo[l]), b.grad+Ptr(8*e.wo[l]), b.exps+Ptr(4*dzOff), b.exps+Ptr(4*ax), scale, int32(out), int32(in))
				k.run("grad_bias", flat, out, g+Ptr(4*e.bo[l]), b.grad+Ptr(8*e.bo[l]), b.exps+Ptr(4*dzOff), scale, int32(out))
				dzOff += out
			}
		} else {
			bad = math.MaxInt32
			k.do(func() error { return upload(e.b, b.bad, []int32{bad}) })
			k.run("scale_f32", flat, P, g, g, float32(scale), b.bad, int32(P))
			got := []int32{0}
			k.do(func() error { return download(e.b, got, b.bad) })
			if bad = got[0]; bad != math.MaxInt32 {
				return nil
			}
		}
		c := opt.Advance()
		k.run("adam", flat, P, b.params, g, b.ms, b.vs, c[0], c[1], c[2], c[3], c[4], c[5], int32(P))
		e.wqValid, e.hostStale = false, true
		return k.err
	}))
	if e.err != nil {
		return e.err
	}
	if bad != math.MaxInt32 && !e.exact {
		v := []float32{0}
		e.fail(e.dev.do(func() error { return download(e.b, v, b.grad+Ptr(4*int(bad))) }))
		return fmt.Errorf("%w in the gradient (element %d is %v)", nn.ErrNonFinite, bad, v[0])
	}
	return nil
}

// Sync copies the device's parameters and Adam's moments to the host.
func (e *Engine) Sync(opt *nn.Adam) error {
	if e.err != nil || !e.hostStale {
		return e.err
	}
	b := e.bufs
	e.fail(e.dev.do(func() error {
		err := download(e.b, e.mlp.Params, b.params)
		if err == nil && opt == e.opt {
			err = firstErr(download(e.b, opt.M, b.ms), download(e.b, opt.V, b.vs))
		}
		return err
	}))
	if e.err == nil {
		e.hostStale = false
	}
	return e.err
}

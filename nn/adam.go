package nn

import "math"

// Adam is torch.optim.Adam: L2 weight decay is added to the gradient before
// the moments (not AdamW), bias corrections as PyTorch computes them.
type Adam struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64
	Step                               int
	M, V                               []float32
}

// NewAdam returns Adam with the paper's defaults (lr 5e-4, wd 1e-6) for n
// parameters.
func NewAdam(n int, lr, wd float64) *Adam {
	return &Adam{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: wd,
		M: make([]float32, n), V: make([]float32, n)}
}

// adamStep holds one update's float32 constants.
type adamStep struct {
	stepSize, invSqrtBC2, b1, b2, wd, eps float32
}

// Update applies one step to params in place. Element-wise, so it gives the
// same bits on every replica.
func (a *Adam) Update(params, grad []float32) {
	c := a.advance()
	parallelFor(len(params), func(lo, hi int) {
		adamKernel(&c, params[lo:hi], grad[lo:hi], a.M[lo:hi], a.V[lo:hi])
	})
}

// advance counts a step and returns its constants.
func (a *Adam) advance() adamStep {
	a.Step++
	bc1 := 1 - math.Pow(a.Beta1, float64(a.Step))
	bc2 := 1 - math.Pow(a.Beta2, float64(a.Step))
	return adamStep{
		stepSize:   float32(a.LR / bc1),
		invSqrtBC2: float32(1 / math.Sqrt(bc2)),
		b1:         float32(a.Beta1), b2: float32(a.Beta2),
		wd: float32(a.WeightDecay), eps: float32(a.Eps),
	}
}

// Advance counts a step, as Update does, and returns the float32
// constants of its element loop (adamScalar's, in order: step size,
// 1/sqrt(bias correction 2), beta1, beta2, weight decay, eps), for a
// device that runs that loop itself.
func (a *Adam) Advance() [6]float32 {
	c := a.advance()
	return [6]float32{c.stepSize, c.invSqrtBC2, c.b1, c.b2, c.wd, c.eps}
}

// adamScalar is the reference element loop. Every operation is a separately
// rounded IEEE float32 operation (the explicit conversions forbid fusing
// into FMAs), so a vector kernel doing the same operations in the same order
// gives the same bits.
func adamScalar(c *adamStep, p, gr, ms, vs []float32) {
	gr, ms, vs = gr[:len(p)], ms[:len(p)], vs[:len(p)]
	for i := range p {
		g := gr[i] + float32(c.wd*p[i])
		m := ms[i] + float32((1-c.b1)*(g-ms[i]))
		v := float32(c.b2*vs[i]) + float32(float32((1-c.b2)*g)*g)
		ms[i], vs[i] = m, v
		denom := float32(float32(math.Sqrt(float64(v)))*c.invSqrtBC2) + c.eps
		p[i] -= float32(c.stepSize*m) / denom
	}
}

// Clone copies the optimizer state.
func (a *Adam) Clone() *Adam {
	c := *a
	c.M = append([]float32(nil), a.M...)
	c.V = append([]float32(nil), a.V...)
	return &c
}

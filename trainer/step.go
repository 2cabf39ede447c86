package trainer

import (
	"context"
	"fmt"
	"math"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/internal/seeds"
	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/shard"
)

// One optimizer step of a stage: the stepper that holds the model, engine
// and optimizer, and the batch gradient, whose every reduction's input is
// recomputed from the rows owned when it is made.

// stepper holds one stage's model, engine, optimizer and step buffers.
type stepper struct {
	model *nn.MLP
	eng   nn.Runner
	res   nn.Resident // set when the device keeps the gradient and runs Adam
	mx    []float64   // the last step's reduced maxima, and its 1/normaliser
	scale float64
	opt   *nn.Adam
	exact bool
	vec   []int64 // partial gradient, loss sum, active rows
	grad  []float32
	p32   []float32
	act   []int32
	xrows []int32 // act as indices into the loaded embeddings
	dldf  []float64
}

// stageStepper initialises the stage's model from (seed, stage name) and
// its stepper.
func (t *Trainer) stageStepper(st *stage) (*stepper, error) {
	model, err := nn.New(t.modelConfig(), seeds.Stage(t.cfg.Seed, st.name))
	if err != nil {
		return nil, err
	}
	return t.newStepper(model)
}

func (t *Trainer) newStepper(model *nn.MLP) (*stepper, error) {
	exact := t.cfg.Reduce == "exact"
	eng, err := t.newRunner(model)
	if err != nil {
		return nil, err
	}
	P := len(model.Params)
	sp := &stepper{model: model, eng: eng, exact: exact,
		opt:  nn.NewAdam(P, t.cfg.LR, t.cfg.WeightDecay),
		vec:  make([]int64, P+2),
		grad: make([]float32, P)}
	if !exact {
		sp.p32 = make([]float32, P)
	}
	// One process and no step hook: nothing outside needs the gradient,
	// so a device that can keep it runs the optimizer too.
	if r, ok := eng.(nn.Resident); ok && t.stepHook == nil {
		if _, local := t.red.(Local); local {
			r.Keep()
			if err := r.Err(); err != nil {
				return nil, err
			}
			sp.res = r
		}
	}
	return sp, nil
}

// newRunner makes a model's runner on the configured device (the CPU
// engine by default).
func (t *Trainer) newRunner(model *nn.MLP) (nn.Runner, error) {
	mk := t.cfg.Runners
	if mk == nil {
		mk = nn.CPURunner
	}
	return mk(model, t.cfg.Reduce == "exact", t.XExp, t.cfg.Batch)
}

// trainStep is one optimizer step over a batch (indices into st.rows). It
// returns the batch's mean loss and whether an update happened.
func (t *Trainer) trainStep(ctx context.Context, st *stage, sp *stepper, batch []int32) (float64, bool, error) {
	loss, ok, err := t.batchGradient(ctx, st, sp, batch)
	if err != nil || !ok {
		return loss, ok, err
	}
	if sp.res != nil {
		return loss, true, sp.res.Step(sp.opt, sp.mx, sp.scale)
	}
	sp.opt.Update(sp.model.Params, sp.grad)
	sp.eng.Touch()
	return loss, true, nil
}

// batchGradient computes the batch's gradient into sp.grad: the forward
// pass over the rows that carry loss, the per-row loss derivative, the
// exact (or fast) partial gradient and its reduction, divided by the
// normaliser. ok is false when no row of the batch carries loss.
//
// Each reduction's input is computed from the rows owned when it is made:
// after an ownership change (Own, during a call or before it) the forward
// pass and the loss derivative are recomputed for the rows owned now, while
// results already agreed (the non-negative parts' signs, the gradient
// maxima, the fast partial gradient) are batch-wide and kept.
func (t *Trainer) batchGradient(ctx context.Context, st *stage, sp *stepper, batch []int32) (float64, bool, error) {
	P := len(sp.grad)
	g := &gradPass{t: t, st: st, sp: sp, tr: t.ds.Train, batch: batch, keep1: true, keep0: true}
	if st.parts != nil {
		if err := g.nonNegativeSigns(ctx); err != nil {
			return 0, false, err
		}
	}
	var mx []float64
	if sp.exact {
		var err error
		if mx, err = g.maxima(ctx); err != nil {
			return 0, false, err
		}
	} else if err := g.partialFast(ctx); err != nil {
		return 0, false, err
	}
	if err := g.sumGradient(ctx, mx); err != nil {
		return 0, false, err
	}
	norm := st.normaliser(int64(len(batch)), sp.vec[P+1])
	if norm == 0 {
		return 0, false, nil // no row carries loss in this batch: no update
	}
	if sp.res != nil {
		sp.mx, sp.scale = mx, 1/norm // Step takes it from here, on the device
	} else if sp.exact {
		if err := sp.eng.Grad(sp.vec[:P], mx, 1/norm, sp.grad); err != nil {
			return 0, false, err
		}
	} else {
		if err := scaleFinite(sp.grad, sp.p32, float32(1/norm)); err != nil {
			return 0, false, err
		}
	}
	return fromFixed(sp.vec[P]) / norm, true, nil
}

// gradPass is one batchGradient call's work on the rows owned now: the
// forward pass, the loss derivative and the row-wise backward pass, each
// computed when first needed and again only after an ownership change
// (gen is the ownership generation they were computed under).
type gradPass struct {
	t     *Trainer
	st    *stage
	sp    *stepper
	tr    *shard.Split
	batch []int32

	f                  []float64
	gen                uint64
	fwdOK, derOK, dzOK bool
	keep1, keep0       bool // the non-negative parts kept (batch-wide)
	lossSum            int64
	localMx            []float64
}

// fwd runs the forward pass over the active rows owned now.
func (g *gradPass) fwd() {
	t, st, sp := g.t, g.st, g.sp
	if g.fwdOK && g.gen == t.ownGen {
		return
	}
	sp.act = sp.act[:0]
	for _, i := range g.batch {
		r := st.rows[i]
		if (st.active == nil || st.active(r)) && t.owns(g.tr, r) {
			sp.act = append(sp.act, r)
		}
	}
	sp.xrows = g.tr.XRows(sp.act, sp.xrows)
	g.f = sp.eng.Forward(g.tr.X, sp.xrows)
	g.gen, g.fwdOK, g.derOK, g.dzOK = t.ownGen, true, false, false
}

// der fills sp.dldf and lossSum for those rows.
func (g *gradPass) der() {
	g.fwd()
	if g.derOK {
		return
	}
	st, sp, f := g.st, g.sp, g.f
	sp.dldf = sp.dldf[:0]
	g.lossSum = 0
	if st.parts != nil {
		for i, r := range sp.act {
			l, d := nonNegativeRow(st, r, f[i], g.keep1, g.keep0)
			g.lossSum += fixedLoss(l)
			sp.dldf = append(sp.dldf, d)
		}
	} else {
		for i, r := range sp.act {
			l, d := st.loss(r, f[i])
			g.lossSum += fixedLoss(l)
			sp.dldf = append(sp.dldf, d)
		}
	}
	g.derOK = true
}

// dz runs the row-wise backward pass (exact mode) and keeps its maxima.
func (g *gradPass) dz() {
	g.der()
	if !g.dzOK {
		g.localMx = g.sp.eng.Maxima(g.sp.dldf)
		g.dzOK = true
	}
}

// nonNegativeSigns is the non-negative correction: sum the two class
// parts of the batch's risk exactly across holders, then keep the gradient
// of each part only where its sum is not negative.
func (g *gradPass) nonNegativeSigns(ctx context.Context) error {
	st, sp := g.st, g.sp
	sums := make([]int64, 3)
	input := func() error {
		g.fwd()
		if err := sp.eng.Err(); err != nil {
			return err
		}
		sums[0], sums[1], sums[2] = 0, 0, int64(len(sp.act))
		for i, r := range sp.act {
			wa, wb := st.parts(r, g.f[i])
			sums[0] += fixedLoss(wa * causal.BCE(g.f[i], 1))
			sums[1] += fixedLoss(wb * causal.BCE(g.f[i], 0))
		}
		return nil
	}
	if err := reduce(ctx, input, func() error { return g.t.red.SumInt64(ctx, sums) }); err != nil {
		return err
	}
	g.keep1, g.keep0 = sums[0] >= 0, sums[1] >= 0
	return nil
}

// maxima reduces the gradient maxima of the row-wise backward pass (exact
// mode) across holders, returning them.
func (g *gradPass) maxima(ctx context.Context) ([]float64, error) {
	var mx []float64
	input := func() error {
		g.dz()
		mx = append(mx[:0], g.localMx...)
		return g.sp.eng.Err()
	}
	if err := reduce(ctx, input, func() error { return g.t.red.MaxFloat64(ctx, mx) }); err != nil {
		return nil, err
	}
	return mx, nil
}

// partialFast computes the fast (float32) partial gradient into sp.p32 and
// sums it across holders.
func (g *gradPass) partialFast(ctx context.Context) error {
	sp := g.sp
	input := func() error {
		g.der()
		sp.eng.PartialFast(sp.dldf, sp.p32)
		return sp.eng.Err()
	}
	return reduce(ctx, input, func() error { return g.t.red.SumFloat32(ctx, sp.p32) })
}

// sumGradient sums across holders, in sp.vec, the exact partial gradient
// under the agreed maxima mx (exact mode: the fast one went through
// SumFloat32), then the loss sum and the active row count.
func (g *gradPass) sumGradient(ctx context.Context, mx []float64) error {
	sp := g.sp
	P := len(sp.grad)
	sums := sp.vec
	if !sp.exact {
		sums = sp.vec[P:] // the gradient went through SumFloat32
	}
	input := func() error {
		if sp.exact {
			g.dz()
			if err := sp.eng.Partial(mx, sp.vec[:P]); err != nil {
				return err
			}
		} else {
			g.der()
		}
		sp.vec[P], sp.vec[P+1] = g.lossSum, int64(len(sp.act))
		return nil
	}
	return reduce(ctx, input, func() error { return g.t.red.SumInt64(ctx, sums) })
}

// scaleFinite sets dst[i] = src[i]*s, or fails naming the first NaN or
// ±Inf of src. The test is one mask on the bits (all exponent bits set)
// instead of two float64 conversions and comparisons per element.
func scaleFinite(dst, src []float32, s float32) error {
	dst = dst[:len(src)]
	for i, v := range src {
		if math.Float32bits(v)&0x7f800000 == 0x7f800000 {
			return fmt.Errorf("%w in the gradient (element %d is %v)", nn.ErrNonFinite, i, v)
		}
		dst[i] = v * s
	}
	return nil
}

// nonNegativeRow is one row's loss and d loss / d f under the
// non-negative correction, given which of the batch's two class parts are
// kept (their batch-wide sums are not negative).
func nonNegativeRow(st *stage, r int32, f float64, keep1, keep0 bool) (loss, dldf float64) {
	wa, wb := st.parts(r, f)
	s := causal.Sigmoid(f)
	g, l := 0.0, 0.0
	if keep1 {
		g += wa * -causal.Sigmoid(-f) // d l(f,1)/df = s - 1
		l += wa * causal.BCE(f, 1)
	}
	if keep0 {
		g += wb * s
		l += wb * causal.BCE(f, 0)
	}
	return l, g
}

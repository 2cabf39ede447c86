package trainer

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/shard"
)

// stage is one training run: which rows it iterates over, which of them
// carry loss, the per-row loss and its derivative, and the normaliser.
type stage struct {
	name         string
	rows         []int32 // train-split rows the epoch plan permutes
	active       func(r int32) bool
	loss         func(r int32, f float64) (loss, dldf float64)
	norm         func(batch, active int64) float64 // nil: the batch size
	valRows      []int32
	valActive    func(r int32) bool
	valLoss      func(r int32, f float64) float64
	monitorTrain bool
	// parts and valParts, when set, give a row's loss as wa*l(f,1) +
	// wb*l(f,0) (the returned weights): the non-negative correction
	// (Config.NonNegative) clamps the two sums at zero.
	parts, valParts func(r int32, f float64) (wa, wb float64)
}

func (s *stage) normaliser(batch, active int64) float64 {
	if s.norm != nil {
		return s.norm(batch, active)
	}
	return float64(batch)
}

// runStage trains one stage to early stopping and keeps the best epoch's
// parameters. Every step's batch is fixed by (seed, stage, epoch) alone.
// Before every step it calls the step hook; a restored snapshot of this
// stage resumes it at the snapshot's (epoch, step).
func (t *Trainer) runStage(ctx context.Context, st *stage) (*StageResult, error) {
	cfg := t.cfg
	sp, err := t.stageStepper(st)
	if err != nil {
		return nil, err
	}
	model := sp.model
	res := &StageResult{Name: st.name, Rows: len(st.rows)}
	stopper := &causal.EarlyStopper{Patience: cfg.Patience}
	var best *nn.MLP
	n := len(st.rows)
	steps := shard.Batches(n, cfg.Batch)
	epoch0, step0, sum0 := 1, 0, 0.0
	if r := t.resume; r != nil {
		if r.name != st.name {
			return nil, fmt.Errorf("%w: the restored snapshot is in stage %s, but the pipeline ran stage %s first", ErrSnapshot, r.name, st.name)
		}
		if r.steps != steps || len(r.params) != len(model.Params) {
			return nil, fmt.Errorf("%w: stage %s has %d steps per epoch and %d parameters, the snapshot %d and %d", ErrSnapshot, st.name, steps, len(model.Params), r.steps, len(r.params))
		}
		t.resume = nil
		copy(model.Params, r.params)
		sp.eng.Touch()
		sp.opt.Step = r.adamStep
		copy(sp.opt.M, r.adamM)
		copy(sp.opt.V, r.adamV)
		*stopper = r.stopper
		if r.best != nil {
			best = model.Clone()
			copy(best.Params, r.best)
		}
		res.Train = append([]float64(nil), r.train...)
		res.Val = append([]float64(nil), r.val...)
		res.Epochs = len(res.Train)
		epoch0, step0, sum0 = r.epoch, r.step, r.trainSum
	}
	start := time.Now()
	for epoch := epoch0; epoch <= cfg.MaxEpochs; epoch++ {
		epochStart := time.Now()
		perm := shard.EpochPerm(cfg.Seed, st.name, epoch, n)
		trainSum, first := 0.0, 0
		if epoch == epoch0 {
			trainSum, first = sum0, step0
		}
		for step := first; step < steps; step++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if t.stepHook != nil {
				t.live = &liveStage{st: st, sp: sp, stopper: stopper, best: best, res: res,
					epoch: epoch, step: step, steps: steps, trainSum: trainSum}
				err := t.stepHook(ctx, Boundary{Stage: st.name, Epoch: epoch, Step: step, Steps: steps, GlobalStep: t.globalStep})
				t.live = nil
				if err != nil {
					return nil, fmt.Errorf("stage %s epoch %d step %d: step hook: %w", st.name, epoch, step, err)
				}
			}
			batch := shard.BatchRows(perm, step, cfg.Batch)
			loss, ok, err := t.trainStep(ctx, st, sp, batch)
			if err != nil {
				return nil, fmt.Errorf("stage %s epoch %d step %d: %w", st.name, epoch, step, err)
			}
			if ok {
				trainSum += loss
			}
			t.globalStep++
		}
		trainLoss := trainSum / float64(steps)
		if sp.res != nil {
			if err := sp.res.Sync(sp.opt); err != nil { // the host reads the parameters below
				return nil, err
			}
		}
		valLoss, err := t.evalLoss(ctx, sp.eng, st)
		if err != nil {
			return nil, err
		}
		if math.IsNaN(trainLoss) || math.IsNaN(valLoss) {
			return nil, fmt.Errorf("stage %s epoch %d: %w loss (train %v, val %v); lower the learning rate", st.name, epoch, nn.ErrNonFinite, trainLoss, valLoss)
		}
		res.Train = append(res.Train, trainLoss)
		res.Val = append(res.Val, valLoss)
		res.Epochs = epoch
		monitored := valLoss
		if st.monitorTrain {
			monitored = trainLoss
		}
		improved, stop := stopper.Observe(epoch, monitored)
		if improved {
			best = model.Clone()
		}
		t.progress(st, epoch, trainLoss, valLoss, stopper, time.Since(epochStart), n)
		if stop {
			break
		}
	}
	res.BestEpoch, res.BestVal = stopper.Best()
	if best == nil {
		best = model
	}
	res.Model = best
	res.Seconds = time.Since(start).Seconds()
	t.Stages[st.name] = res
	return res, nil
}

// evalLoss is the stage's validation loss with the current parameters,
// summed exactly across holders.
func (t *Trainer) evalLoss(ctx context.Context, eng nn.Runner, st *stage) (float64, error) {
	va := t.ds.Val
	v := make([]int64, 4) // loss sum, active rows, class-1 part, class-0 part
	chunk := t.scoreChunk()
	var act, xr []int32
	input := func() error {
		var sum, active, sum1, sum0 int64
		for lo := 0; lo < len(st.valRows); lo += chunk {
			hi := min(lo+chunk, len(st.valRows))
			act = act[:0]
			for _, r := range st.valRows[lo:hi] {
				if (st.valActive == nil || st.valActive(r)) && t.owns(va, r) {
					act = append(act, r)
				}
			}
			xr = va.XRows(act, xr)
			f := eng.Forward(va.X, xr)
			if err := eng.Err(); err != nil {
				return err
			}
			for i, r := range act {
				if st.valParts != nil {
					wa, wb := st.valParts(r, f[i])
					sum1 += fixedLoss(wa * causal.BCE(f[i], 1))
					sum0 += fixedLoss(wb * causal.BCE(f[i], 0))
					continue
				}
				sum += fixedLoss(st.valLoss(r, f[i]))
			}
			active += int64(len(act))
		}
		v[0], v[1], v[2], v[3] = sum, active, sum1, sum0
		return nil
	}
	if err := reduce(ctx, input, func() error { return t.red.SumInt64(ctx, v) }); err != nil {
		return 0, err
	}
	if st.valParts != nil {
		v[0] = max(v[2], 0) + max(v[3], 0) // the non-negative risk
	}
	norm := st.normaliser(int64(len(st.valRows)), v[1])
	if norm == 0 {
		return 0, nil
	}
	return fromFixed(v[0]) / norm, nil
}

func (t *Trainer) scoreChunk() int {
	if t.cfg.ScoreChunk > 0 {
		return t.cfg.ScoreChunk
	}
	return 4096
}

// score runs a model over every row of a split and maps each logit: each
// holder computes the rows it owns and the gather completes the vector on
// every holder (bit for bit: each row has exactly one owner), so later
// stages may read any row whatever the ownership is then.
func (t *Trainer) score(ctx context.Context, model *nn.MLP, s *shard.Split, fn func(float64) float64) ([]float64, error) {
	eng, err := t.newRunner(model)
	if err != nil {
		return nil, err
	}
	var out []float64
	bits := make([]int64, s.N)
	input := func() error {
		owned := t.owned[s]
		var err error
		if out, err = scoreRows(ctx, eng, s, t.scoreChunk(), fn, owned); err != nil {
			return err
		}
		for i, v := range out {
			bits[i] = 0
			if owned == nil || owned[i] {
				bits[i] = int64(math.Float64bits(v))
			}
		}
		return nil
	}
	// Summing the float64 bit patterns (zero on rows owned elsewhere) as
	// integers reproduces every value exactly.
	if err := reduce(ctx, input, func() error { return t.red.SumInt64(ctx, bits) }); err != nil {
		return nil, err
	}
	for i, b := range bits {
		out[i] = math.Float64frombits(uint64(b))
	}
	return out, nil
}

// ScoreWith runs an engine over every row of a split in chunks.
func ScoreWith(ctx context.Context, eng nn.Runner, s *shard.Split, chunk int, fn func(float64) float64) ([]float64, error) {
	return scoreRows(ctx, eng, s, chunk, fn, nil)
}

func scoreRows(ctx context.Context, eng nn.Runner, s *shard.Split, chunk int, fn func(float64) float64, owned []bool) ([]float64, error) {
	out := make([]float64, s.N)
	rows := make([]int32, 0, chunk)
	var xr []int32
	for lo := 0; lo < s.N; lo += chunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hi := min(lo+chunk, s.N)
		rows = rows[:0]
		for r := lo; r < hi; r++ {
			if owned == nil || owned[r] {
				rows = append(rows, int32(r))
			} else {
				out[r] = math.NaN()
			}
		}
		xr = s.XRows(rows, xr)
		f := eng.Forward(s.X, xr)
		if err := eng.Err(); err != nil {
			return nil, fmt.Errorf("scoring %s: %w", s.Name, err)
		}
		for i, v := range f {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("scoring %s row %d: %w logit", s.Name, rows[i], nn.ErrNonFinite)
			}
			out[rows[i]] = fn(v)
		}
	}
	return out, nil
}

// calibration bins the validation rows by p_hat in ten equal-width bins
// and compares the mean prediction with the observed rate.
func (t *Trainer) calibration(ctx context.Context) ([]CalibBin, error) {
	va := t.ds.Val
	const bins = 10
	sums := make([]int64, 3*bins) // count, sum p_hat, sum o
	input := func() error {
		clear(sums)
		for i, p := range t.PHatVal {
			if !t.owns(va, int32(i)) {
				continue
			}
			b := min(int(p*bins), bins-1)
			sums[b]++
			sums[bins+b] += fixedLoss(p)
			sums[2*bins+b] += int64(va.O[i])
		}
		return nil
	}
	if err := reduce(ctx, input, func() error { return t.red.SumInt64(ctx, sums) }); err != nil {
		return nil, err
	}
	var out []CalibBin
	for b := 0; b < bins; b++ {
		if c := sums[b]; c > 0 {
			out = append(out, CalibBin{MeanPred: fromFixed(sums[bins+b]) / float64(c),
				ObsRate: float64(sums[2*bins+b]) / float64(c), N: int(c)})
		}
	}
	return out, nil
}

// progress prints one line per epoch (or every ProgressEach epochs).
func (t *Trainer) progress(st *stage, epoch int, train, val float64, es *causal.EarlyStopper, took time.Duration, rows int) {
	w := t.cfg.Progress
	each := max(t.cfg.ProgressEach, 1)
	if w == nil || (epoch%each != 0 && epoch != 1) {
		return
	}
	bestEpoch, bestVal := es.Best()
	left := min(t.cfg.MaxEpochs-epoch, t.cfg.Patience-(epoch-bestEpoch))
	rate := float64(rows) / took.Seconds()
	eta := time.Duration(float64(left) * float64(took)).Round(time.Second)
	fmt.Fprintf(w, "stage %-22s epoch %4d/%d  train %.5f  val %.5f  best %.5f@%d  %8.0f rows/s  eta <=%s\n",
		st.name, epoch, t.cfg.MaxEpochs, train, val, bestVal, bestEpoch, rate, eta)
}

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
	model, err := nn.New(t.modelConfig(), stageSeed(t.cfg.Seed, st.name))
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
	tr := t.ds.Train
	P := len(sp.grad)
	var (
		f                  []float64
		gen                uint64
		fwdOK, derOK, dzOK bool
		keep1, keep0       = true, true
		lossSum            int64
		localMx            []float64
	)
	// fwd runs the forward pass over the active rows owned now.
	fwd := func() {
		if fwdOK && gen == t.ownGen {
			return
		}
		sp.act = sp.act[:0]
		for _, i := range batch {
			r := st.rows[i]
			if (st.active == nil || st.active(r)) && t.owns(tr, r) {
				sp.act = append(sp.act, r)
			}
		}
		sp.xrows = tr.XRows(sp.act, sp.xrows)
		f = sp.eng.Forward(tr.X, sp.xrows)
		gen, fwdOK, derOK, dzOK = t.ownGen, true, false, false
	}
	// der fills sp.dldf and lossSum for those rows.
	der := func() {
		fwd()
		if derOK {
			return
		}
		sp.dldf = sp.dldf[:0]
		lossSum = 0
		if st.parts != nil {
			for i, r := range sp.act {
				l, g := nonNegativeRow(st, r, f[i], keep1, keep0)
				lossSum += fixedLoss(l)
				sp.dldf = append(sp.dldf, g)
			}
		} else {
			for i, r := range sp.act {
				l, g := st.loss(r, f[i])
				lossSum += fixedLoss(l)
				sp.dldf = append(sp.dldf, g)
			}
		}
		derOK = true
	}
	// dz runs the row-wise backward pass (exact mode) and keeps its maxima.
	dz := func() {
		der()
		if !dzOK {
			localMx = sp.eng.Maxima(sp.dldf)
			dzOK = true
		}
	}
	if st.parts != nil {
		// The non-negative correction: sum the two class parts of the
		// batch's risk exactly across holders, then keep the gradient of
		// each part only where its sum is not negative.
		sums := make([]int64, 3)
		input := func() error {
			fwd()
			if err := sp.eng.Err(); err != nil {
				return err
			}
			sums[0], sums[1], sums[2] = 0, 0, int64(len(sp.act))
			for i, r := range sp.act {
				wa, wb := st.parts(r, f[i])
				sums[0] += fixedLoss(wa * causal.BCE(f[i], 1))
				sums[1] += fixedLoss(wb * causal.BCE(f[i], 0))
			}
			return nil
		}
		if err := reduce(ctx, input, func() error { return t.red.SumInt64(ctx, sums) }); err != nil {
			return 0, false, err
		}
		keep1, keep0 = sums[0] >= 0, sums[1] >= 0
	}
	var mx []float64
	if sp.exact {
		input := func() error {
			dz()
			mx = append(mx[:0], localMx...)
			return sp.eng.Err()
		}
		if err := reduce(ctx, input, func() error { return t.red.MaxFloat64(ctx, mx) }); err != nil {
			return 0, false, err
		}
	} else {
		input := func() error {
			der()
			sp.eng.PartialFast(sp.dldf, sp.p32)
			return sp.eng.Err()
		}
		if err := reduce(ctx, input, func() error { return t.red.SumFloat32(ctx, sp.p32) }); err != nil {
			return 0, false, err
		}
	}
	sums := sp.vec
	if !sp.exact {
		sums = sp.vec[P:] // the gradient went through SumFloat32
	}
	input := func() error {
		if sp.exact {
			dz()
			if err := sp.eng.Partial(mx, sp.vec[:P]); err != nil {
				return err
			}
		} else {
			der()
		}
		sp.vec[P], sp.vec[P+1] = lossSum, int64(len(sp.act))
		return nil
	}
	if err := reduce(ctx, input, func() error { return t.red.SumInt64(ctx, sums) }); err != nil {
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

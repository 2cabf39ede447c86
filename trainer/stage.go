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
	start := time.Now()
	for epoch := 1; epoch <= cfg.MaxEpochs; epoch++ {
		epochStart := time.Now()
		perm := shard.EpochPerm(cfg.Seed, st.name, epoch, n)
		trainSum := 0.0
		for step := 0; step < steps; step++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			batch := shard.BatchRows(perm, step, cfg.Batch)
			loss, ok, err := t.trainStep(ctx, st, sp, batch)
			if err != nil {
				return nil, fmt.Errorf("stage %s epoch %d step %d: %w", st.name, epoch, step, err)
			}
			if ok {
				trainSum += loss
			}
		}
		trainLoss := trainSum / float64(steps)
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
func (t *Trainer) evalLoss(ctx context.Context, eng *nn.Engine, st *stage) (float64, error) {
	va := t.ds.Val
	var sum, active, sum1, sum0 int64
	chunk := t.scoreChunk()
	var act, xr []int32
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
	v := []int64{sum, active, sum1, sum0}
	if err := t.red.SumInt64(ctx, v); err != nil {
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

// score runs a model over the rows of a split this holder owns and maps
// each logit; the other rows are left NaN.
func (t *Trainer) score(ctx context.Context, model *nn.MLP, s *shard.Split, fn func(float64) float64) ([]float64, error) {
	eng, err := nn.NewEngine(model, t.cfg.Reduce == "exact", t.XExp, t.cfg.Batch)
	if err != nil {
		return nil, err
	}
	return scoreRows(ctx, eng, s, t.scoreChunk(), fn, t.owned[s])
}

// ScoreWith runs an engine over every row of a split in chunks.
func ScoreWith(ctx context.Context, eng *nn.Engine, s *shard.Split, chunk int, fn func(float64) float64) ([]float64, error) {
	return scoreRows(ctx, eng, s, chunk, fn, nil)
}

func scoreRows(ctx context.Context, eng *nn.Engine, s *shard.Split, chunk int, fn func(float64) float64, owned []bool) ([]float64, error) {
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
	for i, p := range t.PHatVal {
		if !t.owns(va, int32(i)) {
			continue
		}
		b := min(int(p*bins), bins-1)
		sums[b]++
		sums[bins+b] += fixedLoss(p)
		sums[2*bins+b] += int64(va.O[i])
	}
	if err := t.red.SumInt64(ctx, sums); err != nil {
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
	eng   *nn.Engine
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
	eng, err := nn.NewEngine(model, exact, t.XExp, t.cfg.Batch)
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
	return sp, nil
}

// trainStep is one optimizer step over a batch (indices into st.rows). It
// returns the batch's mean loss and whether an update happened.
func (t *Trainer) trainStep(ctx context.Context, st *stage, sp *stepper, batch []int32) (float64, bool, error) {
	loss, ok, err := t.batchGradient(ctx, st, sp, batch)
	if err != nil || !ok {
		return loss, ok, err
	}
	sp.opt.Update(sp.model.Params, sp.grad)
	sp.eng.Touch()
	return loss, true, nil
}

// batchGradient computes the batch's gradient into sp.grad: the forward
// pass over the rows that carry loss, the per-row loss derivative, the
// exact (or fast) partial gradient and its reduction, divided by the
// normaliser. ok is false when no row of the batch carries loss.
func (t *Trainer) batchGradient(ctx context.Context, st *stage, sp *stepper, batch []int32) (float64, bool, error) {
	tr := t.ds.Train
	P := len(sp.grad)
	sp.act = sp.act[:0]
	for _, i := range batch {
		r := st.rows[i]
		if (st.active == nil || st.active(r)) && t.owns(tr, r) {
			sp.act = append(sp.act, r)
		}
	}
	sp.xrows = tr.XRows(sp.act, sp.xrows)
	f := sp.eng.Forward(tr.X, sp.xrows)
	sp.dldf = sp.dldf[:0]
	var lossSum int64
	if st.parts != nil {
		var err error
		if lossSum, err = t.nonNegative(ctx, st, sp, f, int64(len(batch))); err != nil {
			return 0, false, err
		}
	} else {
		for i, r := range sp.act {
			l, g := st.loss(r, f[i])
			lossSum += fixedLoss(l)
			sp.dldf = append(sp.dldf, g)
		}
	}
	var mx []float64
	if sp.exact {
		mx = sp.eng.Maxima(sp.dldf)
		if err := t.red.MaxFloat64(ctx, mx); err != nil {
			return 0, false, err
		}
		if err := sp.eng.Partial(mx, sp.vec[:P]); err != nil {
			return 0, false, err
		}
	} else {
		sp.eng.PartialFast(sp.dldf, sp.p32)
		if err := t.red.SumFloat32(ctx, sp.p32); err != nil {
			return 0, false, err
		}
	}
	sp.vec[P], sp.vec[P+1] = lossSum, int64(len(sp.act))
	sums := sp.vec
	if !sp.exact {
		sums = sp.vec[P:] // the gradient went through SumFloat32
	}
	if err := t.red.SumInt64(ctx, sums); err != nil {
		return 0, false, err
	}
	norm := st.normaliser(int64(len(batch)), sp.vec[P+1])
	if norm == 0 {
		return 0, false, nil // no row carries loss in this batch: no update
	}
	if sp.exact {
		if err := sp.eng.Grad(sp.vec[:P], mx, 1/norm, sp.grad); err != nil {
			return 0, false, err
		}
	} else {
		s := float32(1 / norm)
		for i, v := range sp.p32 {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return 0, false, fmt.Errorf("%w in the gradient", nn.ErrNonFinite)
			}
			sp.grad[i] = v * s
		}
	}
	return fromFixed(sp.vec[P]) / norm, true, nil
}

// nonNegative fills sp.dldf for the non-negative correction: it sums the
// two class parts of the batch's risk exactly across holders, then keeps the
// gradient of each part only where its sum is not negative. It returns this
// holder's fixed-point loss sum of the kept parts.
func (t *Trainer) nonNegative(ctx context.Context, st *stage, sp *stepper, f []float64, batch int64) (int64, error) {
	sums := []int64{0, 0, int64(len(sp.act))}
	for i, r := range sp.act {
		wa, wb := st.parts(r, f[i])
		sums[0] += fixedLoss(wa * causal.BCE(f[i], 1))
		sums[1] += fixedLoss(wb * causal.BCE(f[i], 0))
	}
	if err := t.red.SumInt64(ctx, sums); err != nil {
		return 0, err
	}
	keep1, keep0 := sums[0] >= 0, sums[1] >= 0
	var lossSum int64
	for i, r := range sp.act {
		wa, wb := st.parts(r, f[i])
		s := causal.Sigmoid(f[i])
		g, l := 0.0, 0.0
		if keep1 {
			g += wa * -causal.Sigmoid(-f[i]) // d l(f,1)/df = s - 1
			l += wa * causal.BCE(f[i], 1)
		}
		if keep0 {
			g += wb * s
			l += wb * causal.BCE(f[i], 0)
		}
		lossSum += fixedLoss(l)
		sp.dldf = append(sp.dldf, g)
	}
	return lossSum, nil
}

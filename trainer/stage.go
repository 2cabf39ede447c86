package trainer

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
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
	// window > 1 monitors the mean of the last window epochs' values (fewer
	// at the start) instead of the epoch's own: Config.MonitorWindow.
	window int
	// ema in (0, 1) evaluates, selects and keeps an exponential moving
	// average of the parameters at epoch ends, with this decay per epoch,
	// instead of the parameters themselves: Config.EMA.
	ema float64
	// parts and valParts, when set, give a row's loss as wa*l(f,1) +
	// wb*l(f,0) (the returned weights): the non-negative correction
	// (Config.Risk nonnegative) clamps the two sums at zero.
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
	n := len(st.rows)
	r := &stageRun{st: st, sp: sp, res: &StageResult{Name: st.name, Rows: n},
		stopper: &causal.EarlyStopper{Patience: cfg.Patience}, n: n, steps: shard.Batches(n, cfg.Batch)}
	epoch0, step0, sum0, err := t.resumeStage(r)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	for epoch := epoch0; epoch <= cfg.MaxEpochs; epoch++ {
		epochStart := time.Now()
		trainSum, first := 0.0, 0
		if epoch == epoch0 {
			trainSum, first = sum0, step0
		}
		if trainSum, err = t.runSteps(ctx, r, epoch, first, trainSum); err != nil {
			return nil, err
		}
		stop, err := t.endEpoch(ctx, r, epoch, trainSum, epochStart)
		if err != nil {
			return nil, err
		}
		if stop {
			r.early = true
			break
		}
	}
	res := r.res
	res.BestEpoch, res.BestVal = r.stopper.Best()
	if res.BestEpoch >= 1 && res.BestEpoch <= len(res.Val) {
		// The kept epoch's own value, not the stopper's: that is +Inf when
		// no epoch qualified (every monitored value was negative; the
		// first is kept), and a mean under a selection window.
		res.BestVal = res.Val[res.BestEpoch-1]
		if st.monitorTrain {
			res.BestVal = res.Train[res.BestEpoch-1]
		}
	}
	best := r.best
	if best == nil {
		best = cmp.Or(r.avg, sp.model)
	}
	res.Model = best
	res.Seconds = time.Since(start).Seconds()
	t.Stages[st.name] = res
	t.stageEnded(res, r.early)
	return res, nil
}

// stageRun is the state runStage carries across a stage's epochs: the
// stepper, the early stopper, the best parameters so far (nil: none yet),
// the result being filled, and the stage's rows and steps per epoch.
type stageRun struct {
	st       *stage
	sp       *stepper
	stopper  *causal.EarlyStopper
	best     *nn.MLP
	res      *StageResult
	n, steps int
	early    bool // stopped by the patience, not by max_epochs
	// avg is the moving average of the epoch-end parameters when the
	// stage has one (stage.ema), nil before the first epoch ends; avgEng
	// runs it.
	avg    *nn.MLP
	avgEng nn.Runner
}

// resumeStage takes a restored snapshot of the stage, if any, into r (the
// parameters, optimizer, stopper, best parameters and losses so far) and
// returns where to resume: its epoch, step and the epoch's loss sum so
// far. Without one, the stage starts at epoch 1, step 0. A snapshot of
// another stage, or of another shape, is refused.
func (t *Trainer) resumeStage(r *stageRun) (epoch0, step0 int, sum0 float64, err error) {
	rs := t.resume
	if rs == nil {
		return 1, 0, 0.0, nil
	}
	st, sp, model, res := r.st, r.sp, r.sp.model, r.res
	if rs.name != st.name {
		return 0, 0, 0, fmt.Errorf("%w: the restored snapshot is in stage %s, but the pipeline ran stage %s first", ErrSnapshot, rs.name, st.name)
	}
	if rs.steps != r.steps || len(rs.params) != len(model.Params) {
		return 0, 0, 0, fmt.Errorf("%w: stage %s has %d steps per epoch and %d parameters, the snapshot %d and %d", ErrSnapshot, st.name, r.steps, len(model.Params), rs.steps, len(rs.params))
	}
	t.resume = nil
	copy(model.Params, rs.params)
	sp.eng.Touch()
	sp.opt.Step = rs.adamStep
	copy(sp.opt.M, rs.adamM)
	copy(sp.opt.V, rs.adamV)
	*r.stopper = rs.stopper
	if rs.best != nil {
		r.best = model.Clone()
		copy(r.best.Params, rs.best)
	}
	if rs.avg != nil {
		if len(rs.avg) != len(model.Params) {
			return 0, 0, 0, fmt.Errorf("%w: stage %s: a parameter average of %d values, want %d", ErrSnapshot, st.name, len(rs.avg), len(model.Params))
		}
		if err := t.setAverage(r, rs.avg); err != nil {
			return 0, 0, 0, err
		}
	}
	res.Train = append([]float64(nil), rs.train...)
	res.Val = append([]float64(nil), rs.val...)
	res.Epochs = len(res.Train)
	return rs.epoch, rs.step, rs.trainSum, nil
}

// runSteps runs steps first.. of epoch over the epoch's permutation of the
// stage's rows, calling the step hook before each, and returns trainSum
// plus the losses of the steps that updated.
func (t *Trainer) runSteps(ctx context.Context, r *stageRun, epoch, first int, trainSum float64) (float64, error) {
	st, steps := r.st, r.steps
	perm := shard.EpochPerm(t.cfg.Seed, st.name, epoch, r.n)
	for step := first; step < steps; step++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if t.stepHook != nil {
			t.live = &liveStage{st: st, sp: r.sp, stopper: r.stopper, best: r.best, avg: r.avg, res: r.res,
				epoch: epoch, step: step, steps: steps, trainSum: trainSum}
			err := t.stepHook(ctx, Boundary{Stage: st.name, Epoch: epoch, Step: step, Steps: steps, GlobalStep: t.globalStep})
			t.live = nil
			if err != nil {
				return 0, fmt.Errorf("stage %s epoch %d step %d: step hook: %w", st.name, epoch, step, err)
			}
		}
		batch := shard.BatchRows(perm, step, t.cfg.Batch)
		loss, ok, err := t.trainStep(ctx, st, r.sp, batch)
		if err != nil {
			return 0, fmt.Errorf("stage %s epoch %d step %d: %w", st.name, epoch, step, err)
		}
		if ok {
			trainSum += loss
		}
		t.globalStep++
	}
	return trainSum, nil
}

// endEpoch closes an epoch: the mean train loss, the validation loss, the
// early stopper's verdict (keeping the parameters when they improved) and
// the progress line. stop reports that the stage is done.
func (t *Trainer) endEpoch(ctx context.Context, r *stageRun, epoch int, trainSum float64, epochStart time.Time) (stop bool, err error) {
	st, sp, res := r.st, r.sp, r.res
	trainLoss := trainSum / float64(r.steps)
	if sp.res != nil {
		if err := sp.res.Sync(sp.opt); err != nil { // the host reads the parameters below
			return false, err
		}
	}
	eng, kept := sp.eng, sp.model
	if st.ema > 0 {
		if err := t.average(r); err != nil {
			return false, err
		}
		eng, kept = r.avgEng, r.avg
	}
	valLoss, err := t.evalLoss(ctx, eng, st)
	if err != nil {
		return false, err
	}
	if math.IsNaN(trainLoss) || math.IsNaN(valLoss) {
		return false, fmt.Errorf("stage %s epoch %d: %w loss (train %v, val %v); lower the learning rate", st.name, epoch, nn.ErrNonFinite, trainLoss, valLoss)
	}
	res.Train = append(res.Train, trainLoss)
	res.Val = append(res.Val, valLoss)
	res.Epochs = epoch
	hist := res.Val
	if st.monitorTrain {
		hist = res.Train
	}
	monitored := hist[len(hist)-1]
	if st.window > 1 && monitored >= 0 {
		monitored = trailingMean(hist, st.window)
	}
	if monitored < 0 {
		// A real model's risk is not negative: an estimate below zero is
		// the plain surrogate being overfit, never a better model. Such an
		// epoch cannot become the best (it counts against patience); when
		// no epoch qualifies, the first one is kept.
		monitored = math.Inf(1)
	}
	improved, stop := r.stopper.Observe(epoch, monitored)
	if improved {
		r.best = kept.Clone()
	}
	t.progress(st, epoch, trainLoss, valLoss, r.stopper, time.Since(epochStart), r.n)
	return stop, nil
}

// average folds the epoch-end parameters into the stage's moving average:
// avg = ema*avg + (1-ema)*params, each product rounded to float32 before
// the sum (so no machine fuses them and every holder gets the same bits);
// the first epoch's parameters start it.
func (t *Trainer) average(r *stageRun) error {
	p := r.sp.model.Params
	if r.avg == nil {
		return t.setAverage(r, p)
	}
	a, b := float32(r.st.ema), float32(1-r.st.ema)
	for i, v := range p {
		r.avg.Params[i] = float32(a*r.avg.Params[i]) + float32(b*v)
	}
	r.avgEng.Touch()
	return nil
}

// setAverage makes the stage's average model, with parameters p, and its
// runner.
func (t *Trainer) setAverage(r *stageRun, p []float32) error {
	avg := r.sp.model.Clone()
	copy(avg.Params, p)
	eng, err := t.newRunner(avg)
	if err != nil {
		return err
	}
	r.avg, r.avgEng = avg, eng
	return nil
}

// trailingMean is the mean of the last w values of v (all of them when
// there are fewer), summed oldest first.
func trailingMean(v []float64, w int) float64 {
	lo := max(0, len(v)-w)
	sum := 0.0
	for _, x := range v[lo:] {
		sum += x
	}
	return sum / float64(len(v)-lo)
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

// calibration bins the validation rows into ten equal-count deciles of
// p_hat and compares each bin's mean prediction with its observed rate of
// o = 1. The rows are ranked by p_hat (ties by row index) and rank k of n
// goes to bin k*10/n, so the bins' sizes differ by at most one (with fewer
// than ten rows, one row per bin). Every holder ranks the whole vector:
// score gathers p_hat onto every holder bit for bit, so the bins (and each
// bin's predicted range, Lo and Hi) are the same everywhere; the counts
// and sums are taken over the rows each holder owns and summed exactly
// across holders, as every other reduction.
func (t *Trainer) calibration(ctx context.Context) ([]CalibBin, error) {
	va := t.ds.Val
	p := t.PHatVal
	n := len(p)
	bins := min(10, n)
	if bins == 0 {
		return nil, nil
	}
	order := allRows(n)
	slices.SortFunc(order, func(a, b int32) int {
		if c := cmp.Compare(p[a], p[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	bin := make([]int, n) // row -> its decile
	lo, hi := make([]float64, bins), make([]float64, bins)
	for k, r := range order {
		b := k * bins / n
		bin[r] = b
		if k == 0 || bin[order[k-1]] != b {
			lo[b] = p[r]
		}
		hi[b] = p[r]
	}
	sums := make([]int64, 3*bins) // count, sum p_hat, sum o
	input := func() error {
		clear(sums)
		for i, v := range p {
			if !t.owns(va, int32(i)) {
				continue
			}
			b := bin[i]
			sums[b]++
			sums[bins+b] += fixedLoss(v)
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
			out = append(out, CalibBin{Lo: lo[b], Hi: hi[b], MeanPred: fromFixed(sums[bins+b]) / float64(c),
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

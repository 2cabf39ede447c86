package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/shard"
)

// Stage names, in pipeline order.
const (
	StagePropensity = "propensity"
	StageNoise      = "noise"
	StageImputation = "imputation"
	StageReward     = "reward"
)

// StageResult is one trained stage.
type StageResult struct {
	Name      string    `json:"name"`
	Model     *nn.MLP   `json:"-"`
	Epochs    int       `json:"epochs"`
	BestEpoch int       `json:"best_epoch"`
	BestVal   float64   `json:"best_val"`
	Train     []float64 `json:"-"` // mean training loss per epoch
	Val       []float64 `json:"-"` // validation loss per epoch
	Rows      int       `json:"rows"`
	Seconds   float64   `json:"seconds"`
	// Scores are what a later step of the same stage family needs of this
	// stage's model: a cross-fitting fold's out-of-fold logits (its own
	// training rows, then the observed validation rows). Kept in snapshots,
	// so that a restored trainer (a joiner) never scores a completed fold
	// again: that would be collective calls the ring has made already.
	Scores []float64 `json:"-"`
}

// CalibBin is one decile of the propensity model's calibration on the
// validation rows: the bins hold equal counts of rows ranked by p_hat
// (sizes differ by at most one). Lo and Hi are the smallest and largest
// p_hat in the bin, MeanPred their mean, ObsRate the share of its rows
// with o = 1 and N its rows.
type CalibBin struct {
	Lo       float64 `json:"lo"`
	Hi       float64 `json:"hi"`
	MeanPred float64 `json:"mean_pred"`
	ObsRate  float64 `json:"obs_rate"`
	N        int     `json:"n"`
}

// Trainer holds one job's data, its quantization grid and the auxiliary
// stages' results, so several reward methods can share them (compare).
type Trainer struct {
	cfg  Config
	ds   *shard.Dataset
	red  Reducer
	XExp []int

	Stages         map[string]*StageResult
	PHatTrain      []float64 // p_hat per train row (nil until known)
	PHatVal        []float64
	GHatTrain      []float64 // g_hat per train row (DR methods)
	GHatVal        []float64
	Rates          causal.Rates
	RatesKnown     bool
	RatesEstimated bool
	// Flip is the flip-rate estimate with its intervals when the noise
	// stage estimated the rates by cross-fitting (nil otherwise: given
	// rates, or the anchor estimator, which has no interval).
	Flip             *causal.FlipEstimate
	PropensityValMSE float64
	Calib            []CalibBin
	// DataWarnings are the data's degenerate conditions found by New
	// (DataWarnings), before the embeddings were put on the grid.
	DataWarnings []Warning

	// owned marks, per split, the rows this holder computes (nil: all);
	// ownGen counts the calls to Own.
	owned  map[*shard.Split][]bool
	ownGen uint64

	stepHook   func(ctx context.Context, b Boundary) error
	stageHook  func(ctx context.Context, stage string, globalStep uint64) error
	globalStep uint64      // training steps run so far over the whole pipeline
	live       *liveStage  // the stage at the boundary, only while the step hook runs
	resume     *stageState // a restored in-progress stage, until runStage takes it
	run        runPlan     // the stages of the current Reward call, for progress
}

// New prepares a trainer. It quantizes the embeddings of every split in
// place onto per-column power-of-two grids (exact mode; docs/exactness.md) taken
// from all loaded rows; pass xexp to reuse a saved model's grid instead.
func New(cfg Config, ds *shard.Dataset, red Reducer, xexp []int) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if ds == nil || ds.Train == nil || ds.Val == nil || ds.Train.N == 0 || ds.Val.N == 0 {
		return nil, fmt.Errorf("%w: need non-empty train and val splits", ErrConfig)
	}
	if ds.Train.NoFeedback || ds.Val.NoFeedback {
		return nil, fmt.Errorf("%w: %s has ratings but no feedback columns (o, y): apply the protocol first (causalrm simulate --from)", ErrConfig, ds.Train.Source)
	}
	if red == nil {
		red = Local{}
	}
	d := ds.Train.D
	var maxAbs []float64
	if xexp == nil {
		xs := [][]float32{ds.Train.X, ds.Val.X}
		if ds.Test != nil {
			xs = append(xs, ds.Test.X)
		}
		maxAbs = nn.ColumnMaxAbs(d, xs...)
		xexp = nn.ExpsFromMax(maxAbs)
	}
	warnings := DataWarnings(ds, maxAbs) // before QuantizeX changes the values
	for _, s := range []*shard.Split{ds.Train, ds.Val, ds.Test} {
		if s != nil {
			nn.QuantizeX(s.X, d, xexp)
		}
	}
	nn.SetThreads(cfg.Threads)
	t := &Trainer{cfg: cfg, ds: ds, red: red, XExp: xexp, Stages: map[string]*StageResult{},
		PropensityValMSE: math.NaN(), DataWarnings: warnings}
	if cfg.FlipRates != nil {
		t.Rates, t.RatesKnown = *cfg.FlipRates, true
	}
	return t, nil
}

// Own restricts this trainer to the rows of the given virtual shards: each
// split is cut into cfg.Shards contiguous shards (shard.Shards) and a worker
// computes only the rows of its own. Every other decision (batches, grids,
// early stopping) is the same on every holder, because every sum it rests
// on goes through the reducer.
//
// Own may be called at any time: between steps (from the step hook) or
// from inside a Reducer call (see ErrRedo); every reduction computes its
// input from the rows owned when it is made. It costs one pass over the
// rows' ownership marks.
func (t *Trainer) Own(shardIDs []int) error {
	for _, id := range shardIDs {
		if id < 0 || id >= t.cfg.Shards {
			return fmt.Errorf("%w: shard %d outside 0..%d", ErrConfig, id, t.cfg.Shards-1)
		}
	}
	if t.owned == nil {
		t.owned = map[*shard.Split][]bool{}
	}
	for _, s := range []*shard.Split{t.ds.Train, t.ds.Val, t.ds.Test} {
		if s == nil {
			continue
		}
		bits := t.owned[s]
		if len(bits) != s.N {
			bits = make([]bool, s.N)
			t.owned[s] = bits
		} else {
			clear(bits)
		}
		ranges := shard.Shards(s.N, t.cfg.Shards)
		for _, id := range shardIDs {
			for i := ranges[id].Lo; i < ranges[id].Hi; i++ {
				bits[i] = true
			}
		}
	}
	t.ownGen++
	return nil
}

// owns reports whether this holder computes row r of split s.
func (t *Trainer) owns(s *shard.Split, r int32) bool {
	if t.owned == nil {
		return true
	}
	return t.owned[s][r]
}

// Config returns the trainer's configuration.
func (t *Trainer) Config() Config { return t.cfg }

func (t *Trainer) modelConfig() nn.Config {
	dims := append([]int{t.ds.Train.D}, t.cfg.Hidden...)
	return nn.Config{Dims: append(dims, 1), Slope: t.cfg.LeakySlope}
}

func allRows(n int) []int32 {
	r := make([]int32, n)
	for i := range r {
		r[i] = int32(i)
	}
	return r
}

// Prepare runs the auxiliary stages the given methods need, once.
func (t *Trainer) Prepare(ctx context.Context, methods ...causal.Method) error {
	t.planRun(methods...)
	needP, needN, needG := auxNeeds(methods)
	if needP && t.PHatTrain == nil {
		if err := t.propensity(ctx); err != nil {
			return err
		}
	}
	if needN && !t.RatesKnown {
		if err := t.noise(ctx); err != nil {
			return err
		}
	}
	if needG && t.GHatTrain == nil {
		if err := t.imputation(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (t *Trainer) propensity(ctx context.Context) error {
	tr, va := t.ds.Train, t.ds.Val
	if t.cfg.Propensity == "given" {
		if tr.P == nil || va.P == nil {
			return fmt.Errorf("%w: propensity: given, but the data has no p column in train and val", ErrConfig)
		}
		t.PHatTrain = clipAll(tr.P, t.cfg.Clip)
		t.PHatVal = clipAll(va.P, t.cfg.Clip)
		return nil
	}
	st := &stage{
		name: StagePropensity, rows: allRows(tr.N), valRows: allRows(va.N),
		loss: func(r int32, f float64) (float64, float64) { return causal.PropensityRow(f, tr.O[r]) },
		valLoss: func(r int32, f float64) float64 {
			l, _ := causal.PropensityRow(f, va.O[r])
			return l
		},
	}
	res, err := t.runStage(ctx, st)
	if err != nil {
		return err
	}
	t.PropensityValMSE = res.BestVal
	c := t.cfg.Clip
	score := func(f float64) float64 { return math.Max(c, math.Min(1, causal.Sigmoid(f))) }
	if t.PHatTrain, err = t.score(ctx, res.Model, tr, score); err != nil {
		return err
	}
	if t.PHatVal, err = t.score(ctx, res.Model, va, score); err != nil {
		return err
	}
	if t.Calib, err = t.calibration(ctx); err != nil {
		return err
	}
	return t.stageDone(ctx, StagePropensity)
}

func clipAll(p []float32, c float64) []float64 {
	out := make([]float64, len(p))
	for i, v := range p {
		out[i] = math.Max(c, math.Min(1, float64(v)))
	}
	return out
}

// trainObservedBCE trains a stage on the observed rows with BCE against the
// noisy label: the noise and the imputation models (docs/method.md, "The pipeline").
func (t *Trainer) trainObservedBCE(ctx context.Context, name string) (*StageResult, error) {
	st := t.observedBCEStage(name, shard.ObservedRows(t.ds.Train))
	if len(st.rows) == 0 || len(st.valRows) == 0 {
		return nil, fmt.Errorf("%w: %s stage: no observed rows in train or val", ErrConfig, name)
	}
	return t.runStage(ctx, st)
}

// noise trains the noise model on the observed rows and estimates the flip
// rates (docs/method.md, "The pipeline", stage 2, and "Flip-rate
// estimation"): by default from cross-fitted models (crossFitRates), with
// FlipEstimator "anchor" from the quantiles of the noise model's logits
// over all training rows.
func (t *Trainer) noise(ctx context.Context) error {
	res := t.Stages[StageNoise] // done already in a restored snapshot
	if res == nil {
		var err error
		if res, err = t.trainObservedBCE(ctx, StageNoise); err != nil {
			return err
		}
	}
	if t.cfg.flipEstimator() == causal.FlipAnchor {
		z, err := t.score(ctx, res.Model, t.ds.Train, func(f float64) float64 { return f })
		if err != nil {
			return err
		}
		t.Rates, t.Flip = causal.EstimateFlipRates(z, t.cfg.Quantile), nil
	} else {
		est, err := t.crossFitRates(ctx)
		if err != nil {
			return err
		}
		t.Rates, t.Flip = est.Rates, &est
	}
	t.RatesKnown, t.RatesEstimated = true, true
	return t.stageDone(ctx, StageNoise)
}

func (t *Trainer) imputation(ctx context.Context) error {
	res, err := t.trainObservedBCE(ctx, StageImputation)
	if err != nil {
		return err
	}
	if t.GHatTrain, err = t.score(ctx, res.Model, t.ds.Train, causal.Sigmoid); err != nil {
		return err
	}
	if t.GHatVal, err = t.score(ctx, res.Model, t.ds.Val, causal.Sigmoid); err != nil {
		return err
	}
	return t.stageDone(ctx, StageImputation)
}

// cleanImputation maps each row's g_hat to the clean-label probability
// it implies under the flip rates r (causal.CleanImputation).
func cleanImputation(g []float64, r causal.Rates) []float64 {
	out := make([]float64, len(g))
	for i, v := range g {
		out[i] = causal.CleanImputation(v, r)
	}
	return out
}

// rowInput gathers the per-row inputs of the reward estimators.
func rowInput(s *shard.Split, p, g []float64, r int32) causal.RowInput {
	in := causal.RowInput{O: s.O[r], Y: s.Y[r], P: 1, G: 0.5}
	if p != nil {
		in.P = p[r]
	}
	if g != nil {
		in.G = g[r]
	}
	return in
}

// Reward trains the reward model with the given estimator, after Prepare.
// With Config.RewardModels K > 1 it trains K reward stages (RewardStage
// names them; each its own initialisation and batch order) and returns
// their average (nn.Average: one model whose logit is the mean of
// theirs) in a copy of the first stage's result. A reward stage already
// completed (in this trainer or in the snapshot it was restored from) is
// not trained again.
func (t *Trainer) Reward(ctx context.Context, m causal.Method) (*StageResult, error) {
	t.planRun(m)
	if err := t.Prepare(ctx, m); err != nil {
		return nil, err
	}
	var members []*StageResult
	for j := range t.cfg.RewardModelCount() {
		name := RewardStage(m, j)
		res := t.Stages[name]
		if res == nil { // only a stage still to train needs its closures and inputs
			var err error
			if res, err = t.runStage(ctx, t.rewardStage(m, j)); err != nil {
				return nil, err
			}
			if err := t.stageDone(ctx, name); err != nil {
				return nil, err
			}
		}
		members = append(members, res)
	}
	if len(members) == 1 {
		return members[0], nil
	}
	models := make([]*nn.MLP, len(members))
	for j, r := range members {
		models[j] = r.Model
	}
	avg, err := nn.Average(models...)
	if err != nil {
		return nil, err
	}
	res := *members[0]
	res.Model = avg
	return &res, nil
}

// RewardStage is the name of reward model j (0-based) of method m:
// "reward/<m>" for the first, "reward/<m>/2" and so on after.
func RewardStage(m causal.Method, j int) string {
	if j == 0 {
		return StageReward + "/" + string(m)
	}
	return fmt.Sprintf("%s/%s/%d", StageReward, m, j+1)
}

// rewardStage is the training run of estimator m's reward model j.
func (t *Trainer) rewardStage(m causal.Method, j int) *stage {
	tr, va := t.ds.Train, t.ds.Val
	rates := t.Rates
	var pTr, pVa, gTr, gVa []float64
	if m.UsesPropensity() {
		pTr, pVa = t.PHatTrain, t.PHatVal
	}
	if m.UsesImputation() {
		gTr, gVa = t.GHatTrain, t.GHatVal
		if m.UsesFlipRates() && t.cfg.imputation() == ImputationClean {
			gTr, gVa = cleanImputation(gTr, rates), cleanImputation(gVa, rates)
		}
	}
	st := &stage{
		name: RewardStage(m, j), rows: allRows(tr.N), valRows: allRows(va.N),
		loss: func(r int32, f float64) (float64, float64) {
			return m.Row(f, rowInput(tr, pTr, gTr, r), rates)
		},
		valLoss: func(r int32, f float64) float64 {
			l, _ := m.Row(f, rowInput(va, pVa, gVa, r), rates)
			return l
		},
		monitorTrain: t.cfg.Monitor == "train",
		window:       t.cfg.monitorWindow(),
		ema:          t.cfg.EMA,
	}
	if t.cfg.Risk == RiskNonNegative && ClampsRisk(m) {
		st.parts = func(r int32, f float64) (float64, float64) {
			return m.Weights(rowInput(tr, pTr, gTr, r), rates)
		}
		st.valParts = func(r int32, f float64) (float64, float64) {
			return m.Weights(rowInput(va, pVa, gVa, r), rates)
		}
	}
	if !m.TouchesUnobserved() {
		st.active = func(r int32) bool { return tr.O[r] == 1 }
		st.valActive = func(r int32) bool { return va.O[r] == 1 }
	}
	if m.NormalizeByObserved() {
		st.norm = func(_, active int64) float64 { return float64(active) }
	}
	return st
}

// ClampsRisk reports whether the non-negative risk changes method m:
// only estimators whose per-row weights can be negative (the noise
// correction's, or doubly robust's with p_hat < 1) have class parts that
// can go below zero.
func ClampsRisk(m causal.Method) bool { return m.UsesFlipRates() || m.UsesImputation() }

// BenchReward times steps reward-stage steps of method m after warmup
// steps and returns the rows of the batches per second. With
// skipUnobserved false every row goes through the forward and backward
// passes (the same arithmetic as a masked PyTorch loss); with true, rows
// that carry no loss are skipped as training does.
func (t *Trainer) BenchReward(ctx context.Context, m causal.Method, warmup, steps int, skipUnobserved bool) (float64, error) {
	if err := t.Prepare(ctx, m); err != nil {
		return 0, err
	}
	st := t.rewardStage(m, 0)
	if !skipUnobserved {
		st.active = nil
	}
	sp, err := t.stageStepper(st)
	if err != nil {
		return 0, err
	}
	perm := shard.EpochPerm(t.cfg.Seed, st.name, 1, len(st.rows))
	nb := shard.Batches(len(st.rows), t.cfg.Batch)
	var start time.Time
	rows := 0
	for i := 0; i < warmup+steps; i++ {
		if i == warmup {
			start, rows = time.Now(), 0
		}
		batch := shard.BatchRows(perm, i%max(nb-1, 1), t.cfg.Batch)
		if _, _, err := t.trainStep(ctx, st, sp, batch); err != nil {
			return 0, err
		}
		rows += len(batch)
	}
	if sp.res != nil {
		// A device may still be running the last steps: wait for them.
		if err := sp.res.Sync(sp.opt); err != nil {
			return 0, err
		}
	}
	return float64(rows) / time.Since(start).Seconds(), nil
}

// Test scores the clean test split with a model and computes the metrics
// of docs/method.md ("Metrics").
func (t *Trainer) Test(ctx context.Context, model *nn.MLP) (causal.Metrics, []float64, error) {
	te := t.ds.Test
	if te == nil || te.R == nil {
		return causal.Metrics{}, nil, errors.New("trainer: no test split with clean labels")
	}
	s, err := t.score(ctx, model, te, causal.Sigmoid)
	if err != nil {
		return causal.Metrics{}, nil, err
	}
	return causal.Evaluate(s, te.R), s, nil
}

package trainer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/nn"
)

// ErrSnapshot reports a snapshot that is corrupt or that does not belong to
// the trainer it is restored into.
var ErrSnapshot = errors.New("trainer: bad snapshot")

// Snapshot is a trainer's state at a step boundary: enough to resume there
// bit-identically in a fresh trainer of the same config and data (Restore).
// Take one with Trainer.Snapshot inside the step hook.
type Snapshot struct {
	// At is the boundary the snapshot was taken at; a restored trainer's
	// first step hook call is at this boundary.
	At Boundary

	key      []keyField  // config and data fields that must match on restore
	cur      stageState  // the in-progress stage
	done     []doneStage // completed stages, by name
	pTr, pVa []float64
	gTr, gVa []float64
	rates    causal.Rates
	known    bool
	estim    bool
	flip     *causal.FlipEstimate
	propMSE  float64
	calib    []CalibBin
	xexp     []int
}

type keyField struct{ name, value string }

// stageState is an in-progress stage at a step boundary.
type stageState struct {
	name               string
	epoch, step, steps int
	params             []float32
	adamStep           int
	adamM, adamV       []float32
	stopper            causal.EarlyStopper
	best               []float32 // nil: no epoch improved yet
	avg                []float32 // the parameters' moving average (Config.EMA); nil: none yet
	train, val         []float64
	trainSum           float64 // running train-loss sum of the current epoch
}

// doneStage is a completed stage's result (its wall time is not kept: a
// snapshot is a pure function of the training state).
type doneStage struct {
	name                    string
	params                  []float32
	epochs, bestEpoch, rows int
	bestVal                 float64
	train, val              []float64
	scores                  []float64
}

// snapshotKey lists what fixes a run's bits besides the state: the config
// fields that matter and the shape and feedback of the data.
func (t *Trainer) snapshotKey() []keyField {
	c := t.cfg
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	flip := "learn"
	if c.FlipRates != nil {
		flip = f(c.FlipRates.Rho01) + "/" + f(c.FlipRates.Rho10)
	}
	h := sha256.New()
	for _, s := range [][]uint8{t.ds.Train.O, t.ds.Train.Y, t.ds.Val.O, t.ds.Val.Y} {
		binary.Write(h, binary.LittleEndian, uint64(len(s)))
		h.Write(s)
	}
	return []keyField{
		{"method", string(c.Method)}, {"seed", strconv.FormatUint(c.Seed, 10)},
		{"batch", strconv.Itoa(c.Batch)}, {"lr", f(c.LR)}, {"weight_decay", f(c.WeightDecay)},
		{"max_epochs", strconv.Itoa(c.MaxEpochs)}, {"patience", strconv.Itoa(c.Patience)},
		{"hidden", fmt.Sprint(c.Hidden)}, {"leaky_slope", f(c.LeakySlope)},
		{"shards", strconv.Itoa(c.Shards)}, {"reduce", c.Reduce}, {"propensity_clip", f(c.Clip)},
		{"quantile", f(c.Quantile)}, {"flip_estimator", c.flipEstimator()}, {"propensity", c.Propensity}, {"flip_rates", flip},
		{"monitor", c.Monitor}, {"monitor_window", strconv.Itoa(c.monitorWindow())}, {"ema", f(c.EMA)}, {"reward_models", strconv.Itoa(c.RewardModelCount())},
		{"risk", c.Risk}, {"imputation", c.imputation()},
		{"data", fmt.Sprintf("train %dx%d, val %d, feedback sha256 %x", t.ds.Train.N, t.ds.Train.D, t.ds.Val.N, h.Sum(nil)[:8])},
	}
}

// Snapshot captures the trainer at the current step boundary. Valid only
// inside the step hook. The snapshot shares nothing with the trainer.
func (t *Trainer) Snapshot() (*Snapshot, error) {
	l := t.live
	if l == nil {
		return nil, errors.New("trainer: Snapshot is only valid inside the step hook")
	}
	cp32 := func(v []float32) []float32 { return slices.Clone(v) }
	cp64 := func(v []float64) []float64 { return slices.Clone(v) }
	s := &Snapshot{
		At:  Boundary{Stage: l.st.name, Epoch: l.epoch, Step: l.step, Steps: l.steps, GlobalStep: t.globalStep},
		key: t.snapshotKey(),
		cur: stageState{name: l.st.name, epoch: l.epoch, step: l.step, steps: l.steps,
			params: cp32(l.sp.model.Params), adamStep: l.sp.opt.Step,
			adamM: cp32(l.sp.opt.M), adamV: cp32(l.sp.opt.V), stopper: *l.stopper,
			train: cp64(l.res.Train), val: cp64(l.res.Val), trainSum: l.trainSum},
		pTr: cp64(t.PHatTrain), pVa: cp64(t.PHatVal), gTr: cp64(t.GHatTrain), gVa: cp64(t.GHatVal),
		rates: t.Rates, known: t.RatesKnown, estim: t.RatesEstimated, propMSE: t.PropensityValMSE,
		calib: slices.Clone(t.Calib), xexp: slices.Clone(t.XExp),
	}
	if t.Flip != nil {
		f := *t.Flip
		s.flip = &f
	}
	if l.best != nil {
		s.cur.best = cp32(l.best.Params)
	}
	if l.avg != nil {
		s.cur.avg = cp32(l.avg.Params)
	}
	names := make([]string, 0, len(t.Stages))
	for n := range t.Stages {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := t.Stages[n]
		s.done = append(s.done, doneStage{name: n, params: cp32(r.Model.Params), epochs: r.Epochs,
			bestEpoch: r.BestEpoch, rows: r.Rows, bestVal: r.BestVal, train: cp64(r.Train), val: cp64(r.Val),
			scores: cp64(r.Scores)})
	}
	return s, nil
}

// Restore loads a snapshot into a fresh trainer (made by New with the same
// config and data, nothing trained yet; hooks and ownership may be set).
// Afterwards Prepare, Reward and Test skip the completed stages and resume
// the in-progress one at the snapshot's boundary, where the step hook is
// called first. A snapshot of another config or data is refused.
func (t *Trainer) Restore(s *Snapshot) error {
	if s == nil {
		return fmt.Errorf("%w: nil snapshot", ErrSnapshot)
	}
	if len(t.Stages) != 0 || t.globalStep != 0 || t.resume != nil || t.PHatTrain != nil || t.GHatTrain != nil || t.RatesEstimated {
		return fmt.Errorf("%w: Restore needs a fresh trainer (this one has trained already)", ErrSnapshot)
	}
	mine := t.snapshotKey()
	if len(mine) != len(s.key) {
		return fmt.Errorf("%w: the snapshot records %d config fields, this trainer %d", ErrSnapshot, len(s.key), len(mine))
	}
	for i, k := range mine {
		if s.key[i] != k {
			return fmt.Errorf("%w: the snapshot is of another run: %s is %q in the snapshot, %q here", ErrSnapshot, k.name, s.key[i].value, k.value)
		}
	}
	if !slices.Equal(s.xexp, t.XExp) {
		return fmt.Errorf("%w: the snapshot's input grid (x_exp) differs from this trainer's", ErrSnapshot)
	}
	mc := t.modelConfig()
	np := mc.NumParams()
	model := func(p []float32) (*nn.MLP, error) {
		if len(p) != np {
			return nil, fmt.Errorf("%w: a model of %d parameters, want %d", ErrSnapshot, len(p), np)
		}
		m, err := nn.New(mc, 0)
		if err != nil {
			return nil, err
		}
		copy(m.Params, p)
		return m, nil
	}
	c := s.cur
	if len(c.params) != np || len(c.adamM) != np || len(c.adamV) != np || (c.best != nil && len(c.best) != np) || (c.avg != nil && len(c.avg) != np) {
		return fmt.Errorf("%w: stage %s: parameter vectors of the wrong length (want %d)", ErrSnapshot, c.name, np)
	}
	if c.epoch < 1 || c.epoch > t.cfg.MaxEpochs || c.step < 0 || c.step >= c.steps || len(c.train) != c.epoch-1 || len(c.val) != c.epoch-1 {
		return fmt.Errorf("%w: stage %s: inconsistent position epoch %d step %d of %d", ErrSnapshot, c.name, c.epoch, c.step, c.steps)
	}
	for _, v := range []struct {
		name string
		vec  []float64
		n    int
	}{{"p_hat train", s.pTr, t.ds.Train.N}, {"p_hat val", s.pVa, t.ds.Val.N}, {"g_hat train", s.gTr, t.ds.Train.N}, {"g_hat val", s.gVa, t.ds.Val.N}} {
		if v.vec != nil && len(v.vec) != v.n {
			return fmt.Errorf("%w: %s has %d rows, the data %d", ErrSnapshot, v.name, len(v.vec), v.n)
		}
	}
	stages := map[string]*StageResult{}
	for _, d := range s.done {
		m, err := model(d.params)
		if err != nil {
			return fmt.Errorf("stage %s: %w", d.name, err)
		}
		stages[d.name] = &StageResult{Name: d.name, Model: m, Epochs: d.epochs, BestEpoch: d.bestEpoch,
			BestVal: d.bestVal, Train: slices.Clone(d.train), Val: slices.Clone(d.val), Rows: d.rows,
			Scores: slices.Clone(d.scores)}
	}
	cp := c
	cp.params, cp.adamM, cp.adamV, cp.best, cp.avg = slices.Clone(c.params), slices.Clone(c.adamM), slices.Clone(c.adamV), slices.Clone(c.best), slices.Clone(c.avg)
	cp.train, cp.val = slices.Clone(c.train), slices.Clone(c.val)
	t.Stages = stages
	t.PHatTrain, t.PHatVal = slices.Clone(s.pTr), slices.Clone(s.pVa)
	t.GHatTrain, t.GHatVal = slices.Clone(s.gTr), slices.Clone(s.gVa)
	t.Rates, t.RatesKnown, t.RatesEstimated = s.rates, s.known, s.estim
	t.Flip = nil
	if s.flip != nil {
		f := *s.flip
		t.Flip = &f
	}
	t.PropensityValMSE = s.propMSE
	t.Calib = slices.Clone(s.calib)
	t.globalStep = s.At.GlobalStep
	t.resume = &cp
	return nil
}

const (
	snapshotMagic   = "causalrm-trainer-snapshot\x00"
	snapshotVersion = 5 // 3: the flip-rate estimate (estimator key, intervals); 4: stage scores (cross-fitting folds); 5: the parameter average (ema)
)

// MarshalBinary encodes the snapshot: a magic string, the format version,
// the fields in a fixed order (little-endian, float bits exact) and a
// sha256 of everything before it. Equal snapshots give equal bytes.
func (s *Snapshot) MarshalBinary() ([]byte, error) {
	var e enc
	e.b = append(e.b, snapshotMagic...)
	e.u64(snapshotVersion)
	e.str(s.At.Stage)
	e.int(s.At.Epoch)
	e.int(s.At.Step)
	e.int(s.At.Steps)
	e.u64(s.At.GlobalStep)
	e.int(len(s.key))
	for _, k := range s.key {
		e.str(k.name)
		e.str(k.value)
	}
	c := s.cur
	e.str(c.name)
	e.int(c.epoch)
	e.int(c.step)
	e.int(c.steps)
	e.f32s(c.params)
	e.int(c.adamStep)
	e.f32s(c.adamM)
	e.f32s(c.adamV)
	e.int(c.stopper.Patience)
	e.int(c.stopper.BestEpoch)
	e.f64(c.stopper.BestVal)
	e.int(c.stopper.Wait)
	e.bool(c.stopper.Seen)
	e.f32s(c.best)
	e.f32s(c.avg)
	e.f64s(c.train)
	e.f64s(c.val)
	e.f64(c.trainSum)
	e.int(len(s.done))
	for _, d := range s.done {
		e.str(d.name)
		e.f32s(d.params)
		e.int(d.epochs)
		e.int(d.bestEpoch)
		e.int(d.rows)
		e.f64(d.bestVal)
		e.f64s(d.train)
		e.f64s(d.val)
		e.f64s(d.scores)
	}
	for _, v := range [][]float64{s.pTr, s.pVa, s.gTr, s.gVa} {
		e.f64s(v)
	}
	e.f64(s.rates.Rho01)
	e.f64(s.rates.Rho10)
	e.bool(s.known)
	e.bool(s.estim)
	e.bool(s.flip != nil)
	if f := s.flip; f != nil {
		e.str(f.Method)
		for _, v := range []float64{f.Rates.Rho01, f.Rates.Rho10, f.Lo.Rho01, f.Lo.Rho10, f.Hi.Rho01, f.Hi.Rho10} {
			e.f64(v)
		}
		for _, v := range []int{f.N01, f.N10, f.Flips01, f.Flips10} {
			e.int(v)
		}
	}
	e.f64(s.propMSE)
	e.int(len(s.calib))
	for _, b := range s.calib {
		e.f64(b.Lo)
		e.f64(b.Hi)
		e.f64(b.MeanPred)
		e.f64(b.ObsRate)
		e.int(b.N)
	}
	e.bool(s.xexp != nil)
	e.int(len(s.xexp))
	for _, x := range s.xexp {
		e.int(x)
	}
	sum := sha256.Sum256(e.b)
	return append(e.b, sum[:]...), nil
}

// UnmarshalSnapshot decodes MarshalBinary's bytes, refusing (ErrSnapshot)
// a wrong magic or version, a checksum mismatch, truncated or trailing
// bytes and out-of-range values.
func UnmarshalSnapshot(b []byte) (*Snapshot, error) {
	if len(b) < len(snapshotMagic)+8+sha256.Size || !bytes.Equal(b[:len(snapshotMagic)], []byte(snapshotMagic)) {
		return nil, fmt.Errorf("%w: not a trainer snapshot", ErrSnapshot)
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("%w: checksum mismatch (corrupt or truncated)", ErrSnapshot)
	}
	d := &dec{b: body[len(snapshotMagic):]}
	if v := d.u64(); d.err == nil && v != snapshotVersion {
		return nil, fmt.Errorf("%w: format version %d, this build reads %d", ErrSnapshot, v, snapshotVersion)
	}
	s := &Snapshot{}
	s.At.Stage = d.str()
	s.At.Epoch = d.int()
	s.At.Step = d.int()
	s.At.Steps = d.int()
	s.At.GlobalStep = d.u64()
	nk := d.count(2)
	for i := 0; i < nk && d.err == nil; i++ {
		s.key = append(s.key, keyField{d.str(), d.str()})
	}
	c := &s.cur
	c.name = d.str()
	c.epoch = d.int()
	c.step = d.int()
	c.steps = d.int()
	c.params = d.f32s()
	c.adamStep = d.int()
	c.adamM = d.f32s()
	c.adamV = d.f32s()
	c.stopper.Patience = d.int()
	c.stopper.BestEpoch = d.int()
	c.stopper.BestVal = d.f64()
	c.stopper.Wait = d.int()
	c.stopper.Seen = d.bool()
	c.best = d.f32s()
	c.avg = d.f32s()
	c.train = d.f64s()
	c.val = d.f64s()
	c.trainSum = d.f64()
	nd := d.count(9)
	for i := 0; i < nd && d.err == nil; i++ {
		var st doneStage
		st.name = d.str()
		st.params = d.f32s()
		st.epochs = d.int()
		st.bestEpoch = d.int()
		st.rows = d.int()
		st.bestVal = d.f64()
		st.train = d.f64s()
		st.val = d.f64s()
		st.scores = d.f64s()
		s.done = append(s.done, st)
	}
	s.pTr, s.pVa, s.gTr, s.gVa = d.f64s(), d.f64s(), d.f64s(), d.f64s()
	s.rates.Rho01 = d.f64()
	s.rates.Rho10 = d.f64()
	s.known = d.bool()
	s.estim = d.bool()
	if d.bool() {
		f := &causal.FlipEstimate{Method: d.str()}
		for _, v := range []*float64{&f.Rates.Rho01, &f.Rates.Rho10, &f.Lo.Rho01, &f.Lo.Rho10, &f.Hi.Rho01, &f.Hi.Rho10} {
			*v = d.f64()
		}
		for _, v := range []*int{&f.N01, &f.N10, &f.Flips01, &f.Flips10} {
			*v = d.int()
		}
		s.flip = f
	}
	s.propMSE = d.f64()
	nc := d.count(40)
	for i := 0; i < nc && d.err == nil; i++ {
		s.calib = append(s.calib, CalibBin{Lo: d.f64(), Hi: d.f64(), MeanPred: d.f64(), ObsRate: d.f64(), N: d.int()})
	}
	hasX := d.bool()
	nx := d.count(8)
	if !hasX && nx != 0 && d.err == nil {
		d.err = errors.New("no input grid (x_exp) with a length")
	}
	if hasX && d.err == nil {
		s.xexp = make([]int, 0, nx)
	}
	for i := 0; i < nx && d.err == nil; i++ {
		s.xexp = append(s.xexp, d.int())
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err == nil && (s.At.Stage != c.name || s.At.Epoch != c.epoch || s.At.Step != c.step || s.At.Steps != c.steps) {
		d.err = errors.New("the boundary and the in-progress stage disagree")
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, d.err)
	}
	return s, nil
}

// enc appends fixed-width little-endian fields; slices carry a presence
// byte (nil and empty differ) and a length.
type enc struct{ b []byte }

func (e *enc) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }
func (e *enc) int(v int)    { e.u64(uint64(int64(v))) }
func (e *enc) f64(v float64) {
	e.u64(math.Float64bits(v))
}
func (e *enc) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}
func (e *enc) str(s string) {
	e.int(len(s))
	e.b = append(e.b, s...)
}
func (e *enc) f32s(v []float32) {
	e.bool(v != nil)
	e.int(len(v))
	for _, x := range v {
		e.b = binary.LittleEndian.AppendUint32(e.b, math.Float32bits(x))
	}
}
func (e *enc) f64s(v []float64) {
	e.bool(v != nil)
	e.int(len(v))
	for _, x := range v {
		e.f64(x)
	}
}

// dec reads enc's fields; the first error sticks and later reads return
// zero values.
type dec struct {
	b   []byte
	err error
}

func (d *dec) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = errors.New("truncated")
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *dec) u64() uint64 {
	if b := d.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (d *dec) int() int {
	v := int64(d.u64())
	if v < -1<<53 || v > 1<<53 {
		if d.err == nil {
			d.err = fmt.Errorf("integer %d out of range", v)
		}
		return 0
	}
	return int(v)
}

// count reads a length whose elements take at least per bytes each.
func (d *dec) count(per int) int {
	n := d.int()
	if d.err == nil && (n < 0 || n > len(d.b)/per) {
		d.err = fmt.Errorf("length %d exceeds the data left", n)
		return 0
	}
	return n
}

func (d *dec) f64() float64 { return math.Float64frombits(d.u64()) }

func (d *dec) bool() bool {
	b := d.take(1)
	if b == nil {
		return false
	}
	if b[0] > 1 {
		d.err = fmt.Errorf("bad boolean %d", b[0])
	}
	return b[0] == 1
}

func (d *dec) str() string {
	n := d.count(1)
	return string(d.take(n))
}

func (d *dec) f32s() []float32 {
	return vec(d, 4, func() float32 { return math.Float32frombits(binary.LittleEndian.Uint32(d.take(4))) })
}

func (d *dec) f64s() []float64 { return vec(d, 8, d.f64) }

// vec reads a slice written as a presence byte, a length and elements of
// size bytes each, read by elem; nil and empty stay apart.
func vec[T any](d *dec, size int, elem func() T) []T {
	has := d.bool()
	n := d.count(size)
	if !has || d.err != nil {
		if n != 0 && d.err == nil {
			d.err = errors.New("nil vector with a length")
		}
		return nil
	}
	out := make([]T, n)
	for i := range out {
		out[i] = elem()
	}
	return out
}

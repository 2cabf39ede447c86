package trainer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/shard"
)

// The elastic tests train every stage of the pipeline (learned propensity
// and flip rates) on small data.
func elasticConfig() Config {
	c := smallConfig()
	c.Hidden = []int{8, 4}
	c.Batch = 64
	c.MaxEpochs = 6
	c.Patience = 2
	c.LR = 1e-2 // the validation loss turns up in some stages: early stopping state matters
	c.Shards = 8
	c.Propensity = "learn"
	c.FlipRates = nil
	return c
}

func elasticData(t *testing.T) *shard.Dataset { return smallData(t, 600, 12, 6) }

var errStop = errors.New("test: stop here")

// pipelineRun is one run of Reward(m) plus Test, with what the hooks saw.
type pipelineRun struct {
	tr     *Trainer
	reward []byte
	test   []float64
	bounds []Boundary
	hashes []string
	stages []string
	snaps  map[uint64][]byte // marshalled snapshots by global step
}

// runOpts vary runPipeline: the reducer; setup runs on the fresh trainer
// (hooks set) before training (Own, Restore, ...); every boundary for
// which snapAt is true is snapshotted and marshalled; onStep runs in the
// step hook.
type runOpts struct {
	red    Reducer
	setup  func(*Trainer) error
	snapAt func(Boundary) bool
	onStep func(*Trainer, Boundary) error
}

// runPipeline trains method m from freshly loaded data.
func runPipeline(t *testing.T, cfg Config, m causal.Method, o runOpts) (*pipelineRun, error) {
	red, setup, snapAt := o.red, o.setup, o.snapAt
	tr, err := New(cfg, elasticData(t), red, nil)
	if err != nil {
		return nil, err
	}
	out := &pipelineRun{tr: tr, snaps: map[uint64][]byte{}}
	tr.SetStepHook(func(_ context.Context, b Boundary) error {
		out.bounds = append(out.bounds, b)
		out.hashes = append(out.hashes, tr.ParamHash())
		if snapAt != nil && snapAt(b) {
			s, err := tr.Snapshot()
			if err != nil {
				return err
			}
			raw, err := s.MarshalBinary()
			if err != nil {
				return err
			}
			out.snaps[b.GlobalStep] = raw
		}
		if o.onStep != nil {
			return o.onStep(tr, b)
		}
		return nil
	})
	tr.SetStageHook(func(_ context.Context, stage string, gs uint64) error {
		out.stages = append(out.stages, fmt.Sprintf("%s@%d", stage, gs))
		return nil
	})
	if setup != nil {
		if err := setup(tr); err != nil {
			return nil, err
		}
	}
	res, err := tr.Reward(context.Background(), m)
	if err != nil {
		return nil, err
	}
	out.reward = paramBytes(res.Model.Params)
	if _, out.test, err = tr.Test(context.Background(), res.Model); err != nil {
		return nil, err
	}
	return out, nil
}

func sameFloats(a, b []float64) bool {
	if len(a) != len(b) || (a == nil) != (b == nil) {
		return false
	}
	for i := range a {
		if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
			return false
		}
	}
	return true
}

// sameAux compares everything the auxiliary stages leave for later ones.
func sameAux(a, b *Trainer) error {
	for _, v := range []struct {
		name string
		x, y []float64
	}{{"PHatTrain", a.PHatTrain, b.PHatTrain}, {"PHatVal", a.PHatVal, b.PHatVal},
		{"GHatTrain", a.GHatTrain, b.GHatTrain}, {"GHatVal", a.GHatVal, b.GHatVal}} {
		if !sameFloats(v.x, v.y) {
			return fmt.Errorf("%s differs", v.name)
		}
	}
	if a.Rates != b.Rates || a.RatesKnown != b.RatesKnown || a.RatesEstimated != b.RatesEstimated {
		return fmt.Errorf("flip rates differ: %+v vs %+v", a.Rates, b.Rates)
	}
	if math.Float64bits(a.PropensityValMSE) != math.Float64bits(b.PropensityValMSE) || !slices.Equal(a.Calib, b.Calib) {
		return errors.New("propensity MSE or calibration differs")
	}
	if len(a.Stages) != len(b.Stages) {
		return fmt.Errorf("%d stages vs %d", len(a.Stages), len(b.Stages))
	}
	for n, r := range a.Stages {
		q := b.Stages[n]
		if q == nil || !bytes.Equal(paramBytes(r.Model.Params), paramBytes(q.Model.Params)) ||
			r.Epochs != q.Epochs || r.BestEpoch != q.BestEpoch || !sameFloats(r.Train, q.Train) || !sameFloats(r.Val, q.Val) {
			return fmt.Errorf("stage %s differs", n)
		}
	}
	return nil
}

// resumeFrom restores raw into a fresh trainer (fresh data, hook set
// first) and finishes the run.
func resumeFrom(t *testing.T, cfg Config, m causal.Method, raw []byte) (*pipelineRun, error) {
	s, err := UnmarshalSnapshot(raw)
	if err != nil {
		return nil, err
	}
	return runPipeline(t, cfg, m, runOpts{setup: func(tr *Trainer) error { return tr.Restore(s) }})
}

// checkResumed compares a resumed run with the uninterrupted one from the
// snapshot's boundary on.
func checkResumed(t *testing.T, m causal.Method, full, got *pipelineRun, at uint64) {
	t.Helper()
	if !bytes.Equal(got.reward, full.reward) {
		t.Fatalf("%s: resumed at global step %d: the reward model differs from the uninterrupted run's", m, at)
	}
	if !sameFloats(got.test, full.test) {
		t.Fatalf("%s: resumed at global step %d: test scores differ", m, at)
	}
	if err := sameAux(full.tr, got.tr); err != nil {
		t.Fatalf("%s: resumed at global step %d: %v", m, at, err)
	}
	// The hook sees the rest of the run, from the restored boundary itself.
	i := int(at)
	if len(got.bounds) == 0 || got.bounds[0] != full.bounds[i] || !slices.Equal(got.bounds, full.bounds[i:]) {
		t.Fatalf("%s: resumed at global step %d: boundaries %v..., want %v...", m, at, got.bounds[:min(2, len(got.bounds))], full.bounds[i])
	}
	if !slices.Equal(got.hashes, full.hashes[i:]) {
		t.Fatalf("%s: resumed at global step %d: parameter hashes differ", m, at)
	}
	n := len(got.stages)
	if n == 0 || !slices.Equal(got.stages, full.stages[len(full.stages)-n:]) {
		t.Fatalf("%s: resumed at global step %d: stage reports %v, want a tail of %v", m, at, got.stages, full.stages)
	}
}

// Every method: a snapshot in the middle of the reward stage, marshalled
// and restored into a fresh trainer, finishes with the uninterrupted
// run's bits.
func TestSnapshotResumeEveryMethod(t *testing.T) {
	cfg := elasticConfig()
	for _, m := range causal.AllMethods() {
		// Snapshot the middle of every reward epoch; resume from the last
		// one (early stopping has state there: a best epoch, maybe a wait).
		full, err := runPipeline(t, cfg, m, runOpts{snapAt: func(b Boundary) bool {
			return strings.HasPrefix(b.Stage, StageReward) && b.Step == b.Steps/2
		}})
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		var pick uint64
		for gs := range full.snaps {
			pick = max(pick, gs)
		}
		if e := full.bounds[pick].Epoch; e < 3 {
			t.Fatalf("%s: the reward stage stopped at epoch %d", m, e)
		}
		for i, b := range full.bounds {
			if b.GlobalStep != uint64(i) {
				t.Fatalf("%s: boundary %d has global step %d", m, i, b.GlobalStep)
			}
		}
		got, err := resumeFrom(t, cfg, m, full.snaps[pick])
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		checkResumed(t, m, full, got, pick)
	}
}

// One method through every stage: at each stage's very first step, at an
// epoch's first step and in the middle of an epoch.
func TestSnapshotResumeEveryStage(t *testing.T) {
	cfg := elasticConfig()
	m := causal.CausalDR
	full, err := runPipeline(t, cfg, m, runOpts{snapAt: func(b Boundary) bool {
		return (b.Epoch == 1 && b.Step == 0) || (b.Epoch == 2 && b.Step == 0) || (b.Epoch == 2 && b.Step == b.Steps-1) ||
			(b.Epoch == 3 && b.Step == b.Steps/2) // patience 2: every stage reaches epoch 3
	}})
	if err != nil {
		t.Fatal(err)
	}
	stages := map[string]int{}
	for gs := range full.snaps {
		stages[full.bounds[gs].Stage]++
	}
	want := []string{StagePropensity, StageNoise, StageImputation, StageReward + "/" + string(m)}
	for k := range causal.DefaultFlipFolds {
		want = append(want, FoldStage(k)) // resumed inside a cross-fitting fold too
	}
	for _, st := range want {
		if stages[st] != 4 {
			t.Fatalf("stage %s: %d snapshots, want 4 (did it stop early?)", st, stages[st])
		}
	}
	for gs, raw := range full.snaps {
		got, err := resumeFrom(t, cfg, m, raw)
		if err != nil {
			t.Fatalf("global step %d: %v", gs, err)
		}
		checkResumed(t, m, full, got, gs)
	}
}

// The same state gives the same bytes; corrupt bytes, a snapshot of
// another config, a used trainer and a snapshot outside the hook are
// refused; the hook's error comes back unchanged for errors.Is.
func TestSnapshotEncodingAndRefusals(t *testing.T) {
	cfg := elasticConfig()
	m := causal.CausalIPS
	at := func(b Boundary) bool { return b.Stage == StageReward+"/"+string(m) && b.Epoch == 2 && b.Step == 1 }
	a, err := runPipeline(t, cfg, m, runOpts{snapAt: at})
	if err != nil {
		t.Fatal(err)
	}
	b, err := runPipeline(t, cfg, m, runOpts{snapAt: at})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.snaps) != 1 {
		t.Fatalf("%d snapshots, want 1", len(a.snaps))
	}
	var raw []byte
	for gs := range a.snaps {
		raw = a.snaps[gs]
		if !bytes.Equal(raw, b.snaps[gs]) {
			t.Fatal("two runs snapshotted the same state into different bytes")
		}
	}
	s, err := UnmarshalSnapshot(raw)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := s.MarshalBinary(); !bytes.Equal(again, raw) {
		t.Fatal("decode then encode changed the bytes")
	}
	// Corruption anywhere is caught.
	rng := rand.New(rand.NewPCG(3, 4))
	for k := 0; k < 200; k++ {
		bad := append([]byte(nil), raw...)
		bad[rng.IntN(len(bad))] ^= byte(1 << rng.IntN(8))
		if _, err := UnmarshalSnapshot(bad); !errors.Is(err, ErrSnapshot) {
			t.Fatalf("flipped bit accepted: %v", err)
		}
	}
	for _, bad := range [][]byte{nil, raw[:len(raw)/2], raw[:len(raw)-1], append(append([]byte(nil), raw...), 0)} {
		if _, err := UnmarshalSnapshot(bad); !errors.Is(err, ErrSnapshot) {
			t.Fatalf("truncated or extended snapshot (%d bytes) accepted: %v", len(bad), err)
		}
	}
	// A consistent checksum over a malformed body is still refused.
	body := append([]byte(nil), raw[:len(raw)-32]...)
	body[len(snapshotMagic)] = 9 // version
	if _, err := UnmarshalSnapshot(withSum(body)); !errors.Is(err, ErrSnapshot) || !strings.Contains(err.Error(), "version") {
		t.Fatalf("another format version: %v", err)
	}
	body = append([]byte(nil), raw[:len(raw)-32]...)
	if _, err := UnmarshalSnapshot(withSum(append(body, 1, 2, 3))); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("trailing bytes under a good checksum accepted: %v", err)
	}
	// Another config is refused, naming the field.
	other := cfg
	other.Seed++
	o, err := New(other, elasticData(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Restore(s); !errors.Is(err, ErrSnapshot) || !strings.Contains(err.Error(), "seed") {
		t.Fatalf("restore into another seed: %v", err)
	}
	other = cfg
	other.Batch = 32
	o, _ = New(other, elasticData(t), nil, nil)
	if err := o.Restore(s); !errors.Is(err, ErrSnapshot) || !strings.Contains(err.Error(), "batch") {
		t.Fatalf("restore into another batch: %v", err)
	}
	o, _ = New(cfg, smallData(t, 600, 12, 7), nil, nil)
	if err := o.Restore(s); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("restore onto other data: %v", err)
	}
	// A trainer that has trained is not fresh.
	if err := a.tr.Restore(s); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("restore into a used trainer: %v", err)
	}
	if _, err := a.tr.Snapshot(); err == nil || a.tr.ParamHash() != "" {
		t.Fatal("Snapshot or ParamHash worked outside the step hook")
	}
	// The hook's error ends the run and is seen by errors.Is.
	tr, _ := New(cfg, elasticData(t), nil, nil)
	tr.SetStepHook(func(_ context.Context, b Boundary) error {
		if b.GlobalStep == 5 {
			// ParamHash is the sha256 of the parameters' little-endian bits.
			snap, err := tr.Snapshot()
			if err != nil {
				return err
			}
			var le []byte
			for _, v := range snap.cur.params {
				le = binary.LittleEndian.AppendUint32(le, math.Float32bits(v))
			}
			if want := fmt.Sprintf("%x", sha256.Sum256(le)); tr.ParamHash() != want {
				return fmt.Errorf("ParamHash %s, want %s", tr.ParamHash(), want)
			}
			return fmt.Errorf("wrapped: %w", errStop)
		}
		return nil
	})
	if _, err := tr.Reward(context.Background(), m); !errors.Is(err, errStop) {
		t.Fatalf("hook error: %v", err)
	}
}

func withSum(body []byte) []byte {
	s := sha256Sum(body)
	return append(body, s[:]...)
}

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// randomParts deals the shards out to n holders at random (a holder may
// get none).
func randomParts(rng *rand.Rand, shards, n int) [][]int {
	parts := make([][]int, n)
	for s := 0; s < shards; s++ {
		k := rng.IntN(n)
		parts[k] = append(parts[k], s)
	}
	return parts
}

// elasticVariant is one way the in-memory group changes ownership.
type elasticVariant struct {
	name    string
	holders int
	plan    func(rng *rand.Rand, shards, n int) *groupAction // per call; nil: no change
	hook    float64                                          // chance of a re-partition at a step boundary
}

var elasticVariants = []elasticVariant{
	// Every call's first attempt is redone under a new ownership: every
	// reduction site recomputes at least once.
	{name: "redo-every-call", holders: 2, plan: func() func(rng *rand.Rand, shards, n int) *groupAction {
		last := false
		return func(rng *rand.Rand, shards, n int) *groupAction {
			if last = !last; last {
				return &groupAction{redo: true, parts: randomParts(rng, shards, n)}
			}
			return nil
		}
	}()},
	{name: "redo", holders: 3, hook: 0.1, plan: func(rng *rand.Rand, shards, n int) *groupAction {
		if rng.Float64() < 0.2 {
			return &groupAction{redo: true, parts: randomParts(rng, shards, n)}
		}
		return nil
	}},
	{name: "move-after-call", holders: 2, plan: func(rng *rand.Rand, shards, n int) *groupAction {
		if rng.Float64() < 0.1 {
			return &groupAction{parts: randomParts(rng, shards, n), told: []bool{true, true}}
		}
		return nil
	}},
	{name: "move-some-in-call-others-redo", holders: 3, plan: func(rng *rand.Rand, shards, n int) *groupAction {
		if rng.Float64() < 0.1 {
			told := make([]bool, n)
			told[rng.IntN(n)] = true
			return &groupAction{parts: randomParts(rng, shards, n), told: told}
		}
		return nil
	}},
}

// Holders whose shards are re-dealt at random reducer calls (every holder
// told inside the call, ErrRedo to all; or the call completed and then the
// ownership moved) and at random step boundaries train the bits of one
// process holding everything, for every method, and every holder ends
// with every per-row vector complete.
func TestElasticOwnershipChangesKeepTheBits(t *testing.T) {
	type job struct {
		m   causal.Method
		cfg Config
	}
	var jobs []job
	for _, m := range causal.AllMethods() {
		cfg := elasticConfig()
		cfg.MaxEpochs = 3
		jobs = append(jobs, job{m, cfg})
	}
	nonneg := jobs[len(jobs)-1]
	// The non-negative correction, with flip rates large enough that a
	// class part goes negative (the gradient then depends on the agreed
	// signs).
	nonneg.cfg.Risk = RiskNonNegative
	nonneg.cfg.FlipRates = &causal.Rates{Rho01: 0.3, Rho10: 0.4}
	nonneg.cfg.LR = 5e-2
	nonneg.cfg.MaxEpochs = 4
	jobs = append(jobs, nonneg)
	for _, j := range jobs {
		m, cfg := j.m, j.cfg
		want, err := runPipeline(t, cfg, m, runOpts{})
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		for vi, v := range elasticVariants {
			n := v.holders
			g := newMemGroup(n)
			planRNG := rand.New(rand.NewPCG(uint64(vi), uint64(len(m))))
			g.plan = func(int) *groupAction { return v.plan(planRNG, cfg.Shards, n) }
			initial := randomParts(rand.New(rand.NewPCG(7, uint64(vi))), cfg.Shards, n)
			members := make([]*memMember, n)
			runs := make([]*pipelineRun, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for rank := 0; rank < n; rank++ {
				members[rank] = g.member(rank)
				wg.Add(1)
				go func() {
					defer wg.Done()
					mem := members[rank]
					runs[rank], errs[rank] = runPipeline(t, cfg, m, runOpts{
						red: mem,
						setup: func(tr *Trainer) error {
							mem.tr = tr
							return tr.Own(initial[rank])
						},
						onStep: func(tr *Trainer, b Boundary) error {
							// every holder draws the same re-partition at the same boundary
							rng := rand.New(rand.NewPCG(b.GlobalStep, 99))
							if rng.Float64() < v.hook {
								mem.moves++
								return tr.Own(randomParts(rng, cfg.Shards, n)[rank])
							}
							return nil
						},
					})
				}()
			}
			wg.Wait()
			moves, redos := 0, 0
			for rank := 0; rank < n; rank++ {
				if errs[rank] != nil {
					t.Fatalf("%s %s rank %d: %v", m, v.name, rank, errs[rank])
				}
				got := runs[rank]
				if !bytes.Equal(got.reward, want.reward) {
					t.Fatalf("%s %s: rank %d trained other bits than one holder", m, v.name, rank)
				}
				if !sameFloats(got.test, want.test) {
					t.Fatalf("%s %s: rank %d: test scores differ", m, v.name, rank)
				}
				if err := sameAux(want.tr, got.tr); err != nil {
					t.Fatalf("%s %s: rank %d: %v", m, v.name, rank, err)
				}
				if !slices.Equal(got.bounds, want.bounds) || !slices.Equal(got.hashes, want.hashes) {
					t.Fatalf("%s %s: rank %d: boundaries or parameter hashes differ", m, v.name, rank)
				}
				moves += members[rank].moves
				redos += members[rank].redos
			}
			if moves == 0 || (v.name != "move-after-call" && redos == 0) {
				t.Fatalf("%s %s: %d ownership changes, %d redos: the test exercised nothing", m, v.name, moves, redos)
			}
		}
	}
}

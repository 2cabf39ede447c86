package trainer

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/nn"
)

// With EMA set, the reward stage saves the moving average of its
// epoch-end parameters at the kept epoch, recomputed here in float64 from
// the parameters the step hook sees at each epoch's first step (the end
// of the epoch before it), and selects the epoch by that average's
// validation estimate, not the raw parameters'.
func TestEMAKeepsTheAverage(t *testing.T) {
	const decay = 0.6
	cfg := elasticConfig()
	cfg.MaxEpochs, cfg.Patience, cfg.EMA = 40, 3, decay
	var ends [][]float32 // reward stage: parameters at the end of epoch e, at index e-1
	var tr *Trainer
	m := causal.CausalIPS
	run, err := runPipeline(t, cfg, m, runOpts{onStep: func(x *Trainer, b Boundary) error {
		tr = x
		if strings.HasPrefix(b.Stage, StageReward) && b.Step == 0 && b.Epoch > 1 {
			ends = append(ends, slices.Clone(x.live.sp.model.Params))
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	res := tr.Stages[StageReward+"/"+string(m)]
	if res.BestEpoch < 2 || res.BestEpoch > len(ends) {
		t.Fatalf("kept epoch %d of %d (epoch ends seen %d): pick a run whose best is neither the first nor the last", res.BestEpoch, res.Epochs, len(ends))
	}
	avg := make([]float64, len(ends[0]))
	for i, v := range ends[0] {
		avg[i] = float64(v)
	}
	for e := 2; e <= res.BestEpoch; e++ {
		for i, v := range ends[e-1] {
			avg[i] = decay*avg[i] + (1-decay)*float64(v)
		}
	}
	worst := 0.0
	for i, v := range res.Model.Params {
		worst = max(worst, math.Abs(float64(v)-avg[i])/math.Max(1e-3, math.Abs(avg[i])))
	}
	if worst > 1e-5 {
		t.Fatalf("the kept model is not the average of epochs 1..%d: worst relative difference %g", res.BestEpoch, worst)
	}
	if slices.Equal(res.Model.Params, ends[res.BestEpoch-1]) {
		t.Fatal("the kept model is the raw parameters")
	}
	// Off, the same seed keeps other parameters.
	cfg.EMA = 0
	plain, err := runPipeline(t, cfg, m, runOpts{})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(plain.reward, run.reward) {
		t.Fatal("ema 0 and 0.6 kept the same model")
	}
	for _, bad := range []float64{-0.1, 1, math.NaN()} {
		cfg.EMA = bad
		if _, err := New(cfg, elasticData(t), nil, nil); err == nil {
			t.Fatalf("ema %v accepted", bad)
		}
	}
}

// A snapshot taken with a parameter average carries it: resumed in the
// middle of the reward stage, the run ends with the uninterrupted run's
// bits.
func TestSnapshotResumeWithEMA(t *testing.T) {
	cfg := elasticConfig()
	cfg.EMA = 0.5
	m := causal.CausalDR
	full, pick := resumeMidStage(t, cfg, m, func(stage string) bool { return strings.HasPrefix(stage, StageReward) })
	if e := full.bounds[pick].Epoch; e < 3 {
		t.Fatalf("the reward stage stopped at epoch %d", e)
	}
	// A snapshot of an averaging run does not restore into a plain one.
	s, err := UnmarshalSnapshot(full.snaps[pick])
	if err != nil {
		t.Fatal(err)
	}
	cfg.EMA = 0
	plain, err := New(cfg, elasticData(t), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Restore(s); err == nil || !strings.Contains(err.Error(), "ema") {
		t.Fatalf("restoring an ema 0.5 snapshot with ema 0: %v", err)
	}
}

// With RewardModels 2 the reward stage trains two models under their own
// stage names (different initialisations) and returns one whose logit is
// the mean of theirs, recomputed here from float64 forward passes; a run
// resumed from a snapshot in the second model ends with the same bits.
func TestRewardModelsAverage(t *testing.T) {
	cfg := elasticConfig()
	cfg.RewardModels = 2
	m := causal.CausalIPS
	full, _ := resumeMidStage(t, cfg, m, func(stage string) bool { return stage == RewardStage(m, 1) })
	a, b := full.tr.Stages[RewardStage(m, 0)], full.tr.Stages[RewardStage(m, 1)]
	if a == nil || b == nil || slices.Equal(a.Model.Params, b.Model.Params) {
		t.Fatal("want two different reward models")
	}
	if RewardStage(m, 1) != "reward/causalrm-ips/2" {
		t.Fatalf("second reward stage named %q", RewardStage(m, 1))
	}
	res, err := full.tr.Reward(t.Context(), m) // done: the average again, nothing trained
	if err != nil {
		t.Fatal(err)
	}
	va := full.tr.ds.Val
	for i := range min(va.N, 50) {
		x := toF64(va.Row(i))
		want := (nn.RefForward64(a.Model.Cfg, toF64(a.Model.Params), x) + nn.RefForward64(b.Model.Cfg, toF64(b.Model.Params), x)) / 2
		got := nn.RefForward64(res.Model.Cfg, toF64(res.Model.Params), x)
		if math.Abs(got-want) > 1e-5*math.Max(1, math.Abs(want)) {
			t.Fatalf("row %d: logit %v, the mean of the two models' %v", i, got, want)
		}
	}
	if string(full.reward) != string(paramBytes(res.Model.Params)) {
		t.Fatal("the run's reward model is not the average")
	}
}

// resumeMidStage runs method m, snapshotting the middle of every epoch of
// the stages in, resumes from the latest snapshot and checks that the
// resumed run ends with the uninterrupted one's bits; it returns the
// uninterrupted run and the global step resumed at.
func resumeMidStage(t *testing.T, cfg Config, m causal.Method, in func(stage string) bool) (*pipelineRun, uint64) {
	t.Helper()
	full, err := runPipeline(t, cfg, m, runOpts{snapAt: func(b Boundary) bool { return in(b.Stage) && b.Step == b.Steps/2 }})
	if err != nil {
		t.Fatal(err)
	}
	if len(full.snaps) == 0 {
		t.Fatal("no snapshot in the stages asked for")
	}
	var pick uint64
	for gs := range full.snaps {
		pick = max(pick, gs)
	}
	got, err := resumeFrom(t, cfg, m, full.snaps[pick])
	if err != nil {
		t.Fatal(err)
	}
	checkResumed(t, m, full, got, pick)
	return full, pick
}

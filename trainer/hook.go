package trainer

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/nn"
)

// Boundary is a step boundary: the training step about to run.
type Boundary struct {
	Stage      string // stage name (StagePropensity, ..., "reward/<method>")
	Epoch      int    // 1-based epoch of the stage
	Step       int    // 0-based step of the epoch about to run
	Steps      int    // steps per epoch of this stage
	GlobalStep uint64 // training steps run before this one over the whole pipeline
}

// liveStage is the in-progress stage as the step hook sees it.
type liveStage struct {
	st                 *stage
	sp                 *stepper
	stopper            *causal.EarlyStopper
	best, avg          *nn.MLP
	res                *StageResult
	epoch, step, steps int
	trainSum           float64
}

// SetStepHook sets h to be called before every training step of every
// stage, on the trainer's goroutine. Inside h (and only there) Snapshot and
// ParamHash are valid, and h may call Own. An error from h ends the run:
// the trainer returns it wrapped (errors.Is sees it). nil removes the hook.
func (t *Trainer) SetStepHook(h func(ctx context.Context, b Boundary) error) { t.stepHook = h }

// SetStageHook sets h to be called after each trained stage completes
// (after its scoring), with the stage's name and the global step count
// then. An error from h ends the run.
func (t *Trainer) SetStageHook(h func(ctx context.Context, stage string, globalStep uint64) error) {
	t.stageHook = h
}

func (t *Trainer) stageDone(ctx context.Context, name string) error {
	if t.stageHook == nil {
		return nil
	}
	if err := t.stageHook(ctx, name, t.globalStep); err != nil {
		return fmt.Errorf("stage %s: stage hook: %w", name, err)
	}
	return nil
}

// GlobalStep is the number of training steps run so far over the whole
// pipeline (counting those of a restored snapshot).
func (t *Trainer) GlobalStep() uint64 { return t.globalStep }

// ParamHash is the sha256 (hex) of the in-progress stage's parameters,
// each float32's bits little-endian. Valid only inside the step hook; ""
// elsewhere.
func (t *Trainer) ParamHash() string {
	if t.live == nil {
		return ""
	}
	return paramHash(t.live.sp.model.Params)
}

func paramHash(p []float32) string {
	h := sha256.New()
	buf := make([]byte, 4*min(len(p), 4096))
	for lo := 0; lo < len(p); lo += 4096 {
		hi := min(lo+4096, len(p))
		for i, v := range p[lo:hi] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		h.Write(buf[:4*(hi-lo)])
	}
	return hex.EncodeToString(h.Sum(nil))
}

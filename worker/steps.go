package worker

import (
	"context"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/trainer"
)

// onStep is the trainer's step-boundary hook: it accounts the step that
// just ran, reports progress and checkpoints when due, and agrees with the
// ring on the newest generation, switching to it here if it is newer.
func (e *Elastic) onStep(ctx context.Context, b trainer.Boundary) error {
	e.progress.account()
	e.cfg.Metrics.step(b, e.tr)
	if e.cfg.StepDelay > 0 {
		time.Sleep(e.cfg.StepDelay)
	}
	if stage, train, val := e.tr.EpochLosses(); stage != "" {
		e.progress.epochs(stage, train, val)
	}
	g := b.GlobalStep
	if g > 0 && g%uint64(e.cfg.ProgressEvery) == 0 && e.progress.due(g) {
		if err := e.report(ctx, g, b.Stage, b.Epoch, b.Step, e.tr.ParamHash()); err != nil {
			return err
		}
		if e.ckpt.due(g) && e.ring != nil && e.ring.Rank() == 0 {
			if err := e.ckpt.take(b, e.progress.inflight, func() ([]byte, error) { return e.blob(b, false) }); err != nil {
				return err
			}
		}
	}
	e.progress.ran(b)
	if int64(g) == e.skipAgree {
		e.skipAgree = -1 // restored from a peer that had agreed here already
		return nil
	}
	return e.agree(ctx, b)
}

// onStage is the trainer's stage-end hook: the stage's last step is
// accounted and reported.
func (e *Elastic) onStage(ctx context.Context, stage string, global uint64) error {
	e.progress.account()
	e.queueStageLosses(stage)
	if e.progress.due(global) {
		return e.report(ctx, global, stage, 0, 0, "")
	}
	return nil
}

// Finish accounts and reports the last step of the job.
func (e *Elastic) Finish(ctx context.Context) error {
	e.progress.account()
	global := e.tr.GlobalStep()
	if err := e.progress.collect(true); err != nil {
		return err
	}
	if e.progress.due(global) || len(e.progress.pending) > 0 || len(e.progress.losses) > 0 {
		if err := e.report(ctx, global, "", 0, 0, ""); err != nil {
			return err
		}
	}
	return e.progress.collect(true)
}

// queueStageLosses queues the completed epochs of a stage that has ended
// (its last epoch ends after its last step hook).
func (e *Elastic) queueStageLosses(stage string) {
	if res := e.tr.Stages[stage]; res != nil {
		e.progress.epochs(stage, res.Train, res.Val)
	}
}

// report sends the progress up to global step global (progress.report).
func (e *Elastic) report(ctx context.Context, global uint64, stage string, epoch, step int, hash string) error {
	rows := 0
	if e.tr != nil {
		rows = e.tr.Config().Batch
	}
	return e.progress.report(ctx, state.Progress{Generation: e.gen.Number, GlobalStep: global, Stage: stage,
		Epoch: epoch, Step: step, ParamHash: hash}, rows)
}

package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/trainer"
)

// checkpointer decides when the worker of rank 0 checkpoints and uploads
// the checkpoints, one at a time, in the background.
type checkpointer struct {
	coord   Coordinator
	log     *slog.Logger
	metrics *Metrics
	bg      *sync.WaitGroup
	every   int     // steps (a multiple of the progress interval; 0: off)
	seconds float64 // also after this long (0: off)

	busy chan struct{} // holds a token while an upload runs
	last time.Time     // when this worker last took a checkpoint
}

// due: every `every` steps, or `seconds` after the last checkpoint (only
// at progress reports, where nothing is pending).
func (c *checkpointer) due(g uint64) bool {
	if c.every > 0 && g%uint64(c.every) == 0 {
		return true
	}
	if c.seconds <= 0 {
		return false
	}
	if c.last.IsZero() {
		c.last = time.Now() // the clock starts with the worker
		return false
	}
	return time.Since(c.last).Seconds() >= c.seconds
}

// take uploads the state at boundary b in the background; a checkpoint
// due while one is uploading is skipped. rep is the progress report of
// this boundary, sent just before (nil: none travels): the checkpoint is
// stored only once the coordinators took it, since a checkpoint past the
// committed progress would leave a hole in the step log when a restart
// rewinds to it.
func (c *checkpointer) take(b trainer.Boundary, rep *sending, blob func() ([]byte, error)) error {
	select {
	case c.busy <- struct{}{}:
	default:
		c.log.Warn("checkpoint skipped: the previous one is still uploading", "global_step", b.GlobalStep)
		return nil
	}
	data, err := blob()
	if err != nil {
		<-c.busy
		return err
	}
	c.last = time.Now()
	rec := state.CheckpointRecord{GlobalStep: b.GlobalStep, Stage: b.Stage, Epoch: b.Epoch, Step: b.Step}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		defer func() { <-c.busy }()
		if rep != nil {
			<-rep.done
			if rep.err != nil || rep.p.GlobalStep != rec.GlobalStep {
				c.log.Warn("checkpoint dropped: its progress report was not taken", "global_step", rec.GlobalStep)
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := time.Now()
		if err := c.coord.PutCheckpoint(ctx, rec, data); err != nil {
			c.log.Warn("checkpoint failed", "global_step", rec.GlobalStep, "err", err)
			return
		}
		c.metrics.checkpointStored()
		c.log.Info("checkpoint stored", "global_step", rec.GlobalStep, "bytes", len(data), "took", time.Since(start).Round(time.Millisecond))
	}()
	return nil
}

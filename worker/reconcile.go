package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/trainer"
)

// This file is the trainer's collective calls on the ring (Elastic is a
// trainer.Reducer) and the reconciliation after a call fails
// (docs/elastic.md).

// call runs one collective call of the trainer's sequence. On a failure it
// reconciles with the survivors (docs/elastic.md): either the call's result
// comes from a survivor that completed it (nil), or the caller must
// recompute its input under the new ownership (trainer.ErrRedo).
func call[T elem](e *Elastic, ctx context.Context, v []T, run func(*collective.Ring, context.Context, []T) error) error {
	if e.ring == nil {
		return fmt.Errorf("%w: no ring yet", ErrConfig)
	}
	cctx, cancel := context.WithCancel(ctx)
	e.gens.inFlight(cancel)
	err := run(e.ring, cctx, v)
	e.gens.inFlight(nil)
	cancel()
	if err == nil {
		e.done++
		e.last = toBits(v, e.last)
		e.settled()
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if e.disturbed.IsZero() {
		e.disturbed = time.Now()
	}
	e.log.Warn("collective call failed; reconciling", "call", e.done+1, "generation", e.gen.Number, "err", err)
	e.reportLink(e.gen.Number, err)
	res, rerr := e.reconcile(ctx, len(v), err)
	if rerr != nil {
		return rerr
	}
	e.cfg.Metrics.reconciledCall()
	if res != nil {
		fromBits(res, v)
		e.done++
		e.last = append(e.last[:0], res...)
		return nil
	}
	return fmt.Errorf("%w: generation %d", trainer.ErrRedo, e.gen.Number)
}

// settled logs how long the training stood still for a generation change:
// from the failure (or the boundary's decision) to the first call that
// completed on the new ring.
func (e *Elastic) settled() {
	if e.disturbed.IsZero() {
		return
	}
	e.log.Info("generation change pause", "generation", e.gen.Number, "cause", e.gen.Cause,
		"pause", time.Since(e.disturbed).Round(time.Millisecond))
	e.disturbed = time.Time{}
}

// MaxFloat64 implements trainer.Reducer.
func (e *Elastic) MaxFloat64(ctx context.Context, v []float64) error {
	return call(e, ctx, v, (*collective.Ring).MaxFloat64)
}

// SumInt64 implements trainer.Reducer.
func (e *Elastic) SumInt64(ctx context.Context, v []int64) error {
	return call(e, ctx, v, (*collective.Ring).SumInt64)
}

// SumFloat32 implements trainer.Reducer.
func (e *Elastic) SumFloat32(ctx context.Context, v []float32) error {
	return call(e, ctx, v, (*collective.Ring).SumFloat32)
}

// reconcile forms the ring of the newest crash (or start) generation with
// the other survivors and settles the call that failed: it returns the
// call's result if a survivor completed it, nil if every survivor must
// redo it.
func (e *Elastic) reconcile(ctx context.Context, n int, cause error) ([]int64, error) {
	asked := e.gen.Number // the newest generation a relink was asked for
	for {
		g, err := e.gens.wait(ctx, e.cfg.ReconfigureTimeout, func(g state.Generation) bool {
			return g.Number > e.gen.Number && (reconciles(g) || isStart(g) || g.Number > asked)
		})
		if err != nil {
			return nil, fmt.Errorf("%w (and then: %v)", cause, err)
		}
		if rg, ok := e.gens.newestWhere(func(g state.Generation) bool {
			return g.Number > e.gen.Number && (reconciles(g) || isStart(g))
		}); ok {
			g = rg // a crash (or relink) generation to reconcile on is known
		}
		if g.Index(e.cfg.ID) < 0 {
			return nil, fmt.Errorf("%w: generation %d", ErrRemoved, g.Number)
		}
		if !reconciles(g) && !isStart(g) {
			// A planned change (a leave, a join) committed while the call
			// was failing, e.g. a leaver stopped mid-call: nothing will
			// reconcile on it, so ask for a relink of its members; the
			// leader answers with a generation everybody reconciles on
			// (docs/elastic.md, "Link failures").
			asked = g.Number
			e.reportLink(g.Number, cause)
			continue
		}
		if err := e.openRing(g); err != nil {
			return nil, err
		}
		// A newer crash (another member lost during the reconciliation)
		// ends the settlement as it ends any call: it would wait for the
		// dead member until its timeout.
		sctx, cancel := context.WithCancel(ctx)
		e.gens.inFlight(cancel)
		res, err := e.settle(sctx, n)
		e.gens.inFlight(nil)
		cancel()
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		cause = err
		e.log.Warn("reconciliation failed; waiting for a newer generation", "generation", g.Number, "err", err)
		e.reportLink(g.Number, err)
	}
}

// reportLink tells the coordinators, in the background, that a call of
// generation gen's ring failed (err). Whatever broke it, the leader sorts it
// out: a dead member becomes a crash generation within the heartbeat
// timeout; with every member alive (a corrupted or stalled link) it relinks
// them with a new generation, on which they reconcile. A report of a
// generation that is no longer current is refused, harmlessly.
func (e *Elastic) reportLink(gen uint64, err error) {
	if e.gens.newest() > gen {
		return // a newer generation (the crash that broke the call) is known
	}
	why := err.Error()
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.cfg.Coord.LinkFailed(ctx, e.cfg.ID, gen, why)
	}()
}

// settle agrees on the survivors' progress: if some completed the pending
// call, the lowest-ranked of them sends its result to all.
func (e *Elastic) settle(ctx context.Context, n int) ([]int64, error) {
	r := e.ring
	d := float64(e.done)
	v := []float64{d, -d}
	if err := r.MaxFloat64(ctx, v); err != nil {
		return nil, err
	}
	hi, lo := uint64(v[0]), uint64(-v[1])
	if hi == lo {
		return nil, nil
	}
	if hi-lo > 1 {
		return nil, fmt.Errorf("worker: survivors %d calls apart (at most 1 is possible)", hi-lo)
	}
	src := []float64{-1e18} // finite: the ring refuses non-finite values
	if e.done == hi {
		src[0] = -float64(r.Rank())
	}
	if err := r.MaxFloat64(ctx, src); err != nil {
		return nil, err
	}
	if e.done == hi {
		n = len(e.last) // the laggards' pending call is the one this worker completed
	}
	out := make([]int64, n)
	if e.done == hi && -src[0] == float64(r.Rank()) {
		copy(out, e.last)
	}
	if err := r.SumInt64(ctx, out); err != nil {
		return nil, err
	}
	if e.done == lo {
		return out, nil // finish the call with it
	}
	return nil, nil // ahead: redo the pending call
}

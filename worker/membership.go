package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/trainer"
)

// This file is how a worker enters the job and how the ring changes
// generation at a step boundary (docs/elastic.md).

// CheckpointSource gives the latest checkpoint (coordinator.Client).
type CheckpointSource interface {
	LatestCheckpoint(ctx context.Context) (state.CheckpointRecord, []byte, error)
}

// Begin brings this worker into the job once the coordinators list it.
// The rule that decides where its state comes from:
//
//   - A worker listed in the newest start (or restart) generation, and in
//     every generation since, holds the job's state from the beginning:
//     the initial state, or the latest checkpoint (ckpt may be nil for
//     none). It begins on that generation's ring even when newer
//     generations exist already; the ring switches to them at its first
//     step boundary, where this worker serves the state like any member.
//   - Any other worker is new to the ring: it takes the state a member of
//     the ring publishes at the step boundary where the ring switches to a
//     generation that lists it (any such generation, not only the newest:
//     the ring switches to the newest its members have seen).
//
// Either way it waits at most wait; past it Begin fails, naming the
// generation and what it waited for.
func (e *Elastic) Begin(ctx context.Context, wait time.Duration, ckpt func(ctx context.Context) ([]byte, error)) error {
	deadline := time.Now().Add(wait)
	if _, err := e.gens.wait(ctx, wait, func(g state.Generation) bool { return g.Index(e.cfg.ID) >= 0 }); err != nil {
		return fmt.Errorf("waiting to be given a generation: %w", err)
	}
	var tried []string
	for {
		if s, ok := e.heldSinceStart(); ok {
			return e.beginAt(ctx, s, ckpt)
		}
		// The newest generation must still list this worker (a restart or
		// a crash generation may have dropped it).
		g, err := e.gens.wait(ctx, wait, func(state.Generation) bool { return true })
		if err != nil {
			return err
		}
		if g.Index(e.cfg.ID) < 0 {
			return fmt.Errorf("%w: generation %d (%s)", ErrRemoved, g.Number, g.Cause)
		}
		// The ring switches, at a boundary, to the newest generation its
		// members have seen, which need not be the newest there is (two
		// joins in quick succession): take the state published for any
		// generation that lists this worker, newest first, and open that
		// generation's ring; the ring moves on to newer ones at its next
		// boundary.
		// A newer generation (a restart that lists this worker, say) ends
		// the fetch at once: the members asked may be dead, and a fetch
		// waits up to 10 s for each.
		fctx, cancel := e.gens.untilNewer(ctx, g.Number)
		for _, c := range e.gens.listing(e.cfg.ID) {
			if ok, err := e.fetchState(fctx, c); err != nil {
				cancel()
				return err
			} else if ok {
				cancel()
				return e.openRing(c)
			}
		}
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		tried = append(tried[:0], memberIDs(g, e.cfg.ID)...)
		if time.Now().After(deadline) {
			return fmt.Errorf("joining generation %d: no member of the ring (%v) published the state within %v; the ring switches to a generation at a step boundary, so the ring is not training", g.Number, tried, wait)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// heldSinceStart is the newest start generation if this worker is listed
// in it and in every generation since (so it holds the job's state from
// the beginning).
func (e *Elastic) heldSinceStart() (state.Generation, bool) {
	s, ok := e.gens.newestStart()
	if !ok || s.Index(e.cfg.ID) < 0 {
		return state.Generation{}, false
	}
	for n := s.Number + 1; n <= e.gens.newest(); n++ {
		g, found := e.gens.get(n)
		if !found || g.Index(e.cfg.ID) < 0 {
			return state.Generation{}, false
		}
	}
	return s, true
}

// beginAt begins on start generation s: from the latest checkpoint if
// there is one, else from the initial state.
func (e *Elastic) beginAt(ctx context.Context, s state.Generation, ckpt func(ctx context.Context) ([]byte, error)) error {
	if ckpt != nil {
		data, err := ckpt(ctx)
		if err != nil {
			return err
		}
		if data != nil {
			if err := e.restore(data); err != nil {
				return fmt.Errorf("restoring the checkpoint: %w", err)
			}
		}
	}
	return e.openRing(s)
}

// fetchState asks the members of g for the state they publish when their
// ring switches to g, and restores it; false when none has it yet.
func (e *Elastic) fetchState(ctx context.Context, g state.Generation) (bool, error) {
	for _, m := range g.Members {
		if m.ID == e.cfg.ID {
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := e.cfg.Host.FetchState(fctx, m.Addr, collective.StateRequest{RingID: e.cfg.RingID, Step: g.Number, Codec: collective.CodecS2})
		cancel()
		if err != nil {
			continue
		}
		if err := e.restore(st.Data); err != nil {
			return false, fmt.Errorf("restoring the state from %s: %w", m.ID, err)
		}
		e.log.Info("took the state from a peer", "peer", m.ID, "generation", g.Number, "bytes", len(st.Data))
		return true, nil
	}
	return false, nil
}

func memberIDs(g state.Generation, except string) []string {
	var ids []string
	for _, m := range g.Members {
		if m.ID != except {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// agree is the boundary's one small all-reduce: the newest generation any
// member has seen. A newer one than the ring's is switched to here, by all.
func (e *Elastic) agree(ctx context.Context, b trainer.Boundary) error {
	for {
		before, ringGen := e.changes, e.gen.Number
		v := []float64{float64(e.gens.newest())}
		err := e.MaxFloat64(ctx, v)
		if errors.Is(err, trainer.ErrRedo) {
			continue // on the reconciled ring
		}
		if err != nil {
			return err
		}
		if e.changes != before {
			// Finished with a survivor's result after a failure: the
			// reconciliation already chose the ring.
			return nil
		}
		if target := uint64(v[0]); target > ringGen {
			e.disturbed = time.Now()
			return e.switchTo(ctx, b, target)
		}
		return nil
	}
}

// switchTo moves every member to generation target at this boundary: the
// donor publishes the state for the members new to the ring; members not
// in target leave.
func (e *Elastic) switchTo(ctx context.Context, b trainer.Boundary, target uint64) error {
	g, err := e.gens.wait(ctx, e.cfg.ReconfigureTimeout, func(g state.Generation) bool { return g.Number == target })
	if err != nil {
		return fmt.Errorf("switching to generation %d: %w", target, err)
	}
	old := e.gen
	joiners := false
	for _, m := range g.Members {
		joiners = joiners || old.Index(m.ID) < 0
	}
	if e.cfg.LossyCodec != "" {
		e.handOver(ctx, old, g)
	}
	if joiners && donor(old, g) == e.cfg.ID {
		blob, err := e.blob(b, true)
		if err != nil {
			return err
		}
		e.cfg.Host.PublishState(g.Number, blob)
	}
	if g.Index(e.cfg.ID) < 0 {
		e.ring.Close()
		e.ring = nil
		e.cfg.Metrics.stopped("left the job")
		e.log.Info("left the job at a step boundary", "generation", g.Number, "global_step", b.GlobalStep)
		return ErrLeft
	}
	return e.openRing(g)
}

// donor is the member of the old ring that serves the state at a switch:
// the lowest-ranked one that stays.
func donor(old, g state.Generation) string {
	for _, m := range old.Members {
		if g.Index(m.ID) >= 0 {
			return m.ID
		}
	}
	return ""
}

// handOver gives the error-feedback residual of every member leaving at
// this switch to the donor, over the old ring, so nothing the lossy codec
// dropped is lost: one exact int64 "broadcast" per leaver (only the leaver
// contributes the bits), added by the donor to its own. Every member of
// the old ring has the same residual length (they made the same float32
// sums). A failure here loses the residuals, not the job: the next call
// fails and reconciles.
func (e *Elastic) handOver(ctx context.Context, old, g state.Generation) {
	own := e.ring.Residual()
	d := donor(old, g)
	var before []float32
	if d == e.cfg.ID {
		before = append([]float32(nil), own...)
	}
	for _, m := range old.Members {
		if g.Index(m.ID) >= 0 || len(own) == 0 {
			continue
		}
		v := make([]int64, len(own))
		if m.ID == e.cfg.ID {
			for i, x := range own {
				v[i] = int64(math.Float32bits(x))
			}
			if e.testHandover != nil {
				e.testHandover("leaver", own, nil)
			}
		}
		if err := e.ring.SumInt64(ctx, v); err != nil {
			e.log.Warn("handing over a leaver's residual failed; it is lost", "leaver", m.ID, "err", err)
			return
		}
		if d == e.cfg.ID {
			for i, b := range v {
				own[i] += math.Float32frombits(uint32(b))
			}
		}
	}
	if d == e.cfg.ID {
		e.handed = own
		if e.testHandover != nil {
			e.testHandover("donor", before, own)
		}
	}
}

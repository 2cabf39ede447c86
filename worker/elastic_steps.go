package worker

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/trainer"
)

// onStep is the trainer's step-boundary hook: it accounts the step that
// just ran, reports progress and checkpoints when due, and agrees with the
// ring on the newest generation, switching to it here if it is newer.
func (e *Elastic) onStep(ctx context.Context, b trainer.Boundary) error {
	e.account()
	e.cfg.Metrics.step(b, e.tr)
	if e.cfg.StepDelay > 0 {
		time.Sleep(e.cfg.StepDelay)
	}
	g := b.GlobalStep
	if g > 0 && g%uint64(e.cfg.ProgressEvery) == 0 && g > e.sent {
		if err := e.report(ctx, g, b.Stage, b.Epoch, b.Step, e.tr.ParamHash()); err != nil {
			return err
		}
		if e.checkpointDue(g) && e.ring != nil && e.ring.Rank() == 0 {
			if err := e.checkpoint(b); err != nil {
				return err
			}
		}
	}
	bb := b
	e.prev = &bb
	if int64(g) == e.skipAgree {
		e.skipAgree = -1 // restored from a peer that had agreed here already
		return nil
	}
	return e.agree(ctx, b)
}

// onStage is the trainer's stage-end hook: the stage's last step is
// accounted and reported.
func (e *Elastic) onStage(ctx context.Context, stage string, global uint64) error {
	e.account()
	if global > e.sent {
		return e.report(ctx, global, stage, 0, 0, "")
	}
	return nil
}

// Finish accounts and reports the last step of the job.
func (e *Elastic) Finish(ctx context.Context) error {
	e.account()
	global := e.tr.GlobalStep()
	if err := e.collect(true); err != nil {
		return err
	}
	if global > e.sent || len(e.pending) > 0 {
		if err := e.report(ctx, global, "", 0, 0, ""); err != nil {
			return err
		}
	}
	return e.collect(true)
}

// account adds the step that ran last to the ranges not yet reported.
func (e *Elastic) account() {
	p := e.prev
	if p == nil {
		return
	}
	e.prev = nil
	if n := len(e.pending); n > 0 {
		r := &e.pending[n-1]
		if r.Stage == p.Stage && r.Epoch == p.Epoch && r.To == p.Step {
			r.To++
			return
		}
	}
	e.pending = append(e.pending, state.StepRange{Stage: p.Stage, Epoch: p.Epoch, From: p.Step, To: p.Step + 1})
}

// sending is a progress report on its way to the coordinators.
type sending struct {
	p    state.Progress
	done chan struct{}
	err  error // set before done closes
}

// report sends the progress since the last report in the background: the
// training does not wait for the coordinators (they are not on the step
// path, and may be failing over). At most one report travels; while it
// does, the steps go with a later one. A report that fails is merged into
// the next; a failed job stops the training at the next report point.
func (e *Elastic) report(ctx context.Context, global uint64, stage string, epoch, step int, hash string) error {
	if err := e.collect(false); err != nil {
		return err
	}
	if e.inflight != nil {
		return nil
	}
	now := time.Now()
	p := state.Progress{WorkerID: e.cfg.ID, Generation: e.gen.Number, GlobalStep: global, Stage: stage,
		Epoch: epoch, Step: step, Ranges: e.pending, ParamHash: hash, Time: now.UnixNano()}
	if !e.sentAt.IsZero() && global > e.sent && e.tr != nil {
		p.RowsPerSec = float64(global-e.sent) * float64(e.tr.Config().Batch) / now.Sub(e.sentAt).Seconds()
	}
	s := &sending{p: p, done: make(chan struct{})}
	e.inflight, e.pending, e.sent, e.sentAt = s, nil, global, now
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		defer close(s.done)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		s.err = e.cfg.Coord.ReportProgress(rctx, s.p)
	}()
	return nil
}

// collect takes the outcome of the report in flight, waiting for it if
// wait: taken, its steps are done with; failed, they go with the next.
func (e *Elastic) collect(wait bool) error {
	s := e.inflight
	if s == nil {
		return nil
	}
	if wait {
		<-s.done
	} else {
		select {
		case <-s.done:
		default:
			return nil
		}
	}
	e.inflight = nil
	switch {
	case s.err == nil:
		e.reported = s.p.GlobalStep
	case errors.Is(s.err, state.ErrJobFailed):
		return s.err
	default:
		e.log.Warn("progress report failed; will send it with the next", "global_step", s.p.GlobalStep, "err", s.err)
		e.pending = append(append([]state.StepRange(nil), s.p.Ranges...), e.pending...)
	}
	return nil
}

// unreported are the steps no report the coordinators took has covered
// yet (a snapshot carries them, so its restorer reports them again; the
// coordinators drop what they already have).
func (e *Elastic) unreported() []state.StepRange {
	var out []state.StepRange
	if e.inflight != nil {
		out = append(out, e.inflight.p.Ranges...)
	}
	return append(out, e.pending...)
}

// agree is the boundary's one small all-reduce: the newest generation any
// member has seen. A newer one than the ring's is switched to here, by all.
func (e *Elastic) agree(ctx context.Context, b trainer.Boundary) error {
	for {
		before, ringGen := e.changes, e.gen.Number
		v := []float64{float64(e.latestNumber())}
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
	g, err := e.waitGen(ctx, e.cfg.ReconfigureTimeout, func(g state.Generation) bool { return g.Number == target })
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

// checkpoint uploads the state at this boundary in the background (one at
// a time; a checkpoint due while one is uploading is skipped).
func (e *Elastic) checkpoint(b trainer.Boundary) error {
	select {
	case e.ckptBusy <- struct{}{}:
	default:
		e.log.Warn("checkpoint skipped: the previous one is still uploading", "global_step", b.GlobalStep)
		return nil
	}
	blob, err := e.blob(b, false)
	if err != nil {
		<-e.ckptBusy
		return err
	}
	e.lastCkpt = time.Now()
	rec := state.CheckpointRecord{GlobalStep: b.GlobalStep, Stage: b.Stage, Epoch: b.Epoch, Step: b.Step}
	rep := e.inflight // the report of this boundary, sent just before
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		defer func() { <-e.ckptBusy }()
		// A checkpoint past the committed progress would leave a hole in
		// the step log when a restart rewinds to it: store it only once
		// the coordinators took this boundary's report.
		if rep != nil {
			<-rep.done
			if rep.err != nil || rep.p.GlobalStep != rec.GlobalStep {
				e.log.Warn("checkpoint dropped: its progress report was not taken", "global_step", rec.GlobalStep)
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		start := time.Now()
		if err := e.cfg.Coord.PutCheckpoint(ctx, rec, blob); err != nil {
			e.log.Warn("checkpoint failed", "global_step", rec.GlobalStep, "err", err)
			return
		}
		e.cfg.Metrics.checkpointStored()
		e.log.Info("checkpoint stored", "global_step", rec.GlobalStep, "bytes", len(blob), "took", time.Since(start).Round(time.Millisecond))
	}()
	return nil
}

// blob encodes the runtime's counters and the trainer's snapshot at this
// boundary. agreed says whether the boundary's agreement call is done.
func (e *Elastic) blob(b trainer.Boundary, agreed bool) ([]byte, error) {
	snap, err := e.tr.Snapshot()
	if err != nil {
		return nil, err
	}
	data, err := snap.MarshalBinary()
	if err != nil {
		return nil, err
	}
	hdr, err := json.Marshal(joinBlob{Done: e.done, Pending: e.unreported(), Reported: e.reported, Agreed: agreed,
		GlobalKey: b.GlobalStep})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.WriteString(blobMagic)
	_ = binary.Write(&buf, binary.LittleEndian, uint32(len(hdr)))
	buf.Write(hdr)
	buf.Write(data)
	return buf.Bytes(), nil
}

const blobMagic = "CRMW1\n"

// restore takes a blob made by blob into a fresh trainer and this runtime.
func (e *Elastic) restore(data []byte) error {
	if len(data) < len(blobMagic)+4 || string(data[:len(blobMagic)]) != blobMagic {
		return errors.New("worker: state blob: bad header")
	}
	data = data[len(blobMagic):]
	n := binary.LittleEndian.Uint32(data)
	data = data[4:]
	if uint64(n) > uint64(len(data)) {
		return errors.New("worker: state blob: truncated")
	}
	var jb joinBlob
	if err := json.Unmarshal(data[:n], &jb); err != nil {
		return fmt.Errorf("worker: state blob: %w", err)
	}
	snap, err := trainer.UnmarshalSnapshot(data[n:])
	if err != nil {
		return err
	}
	if err := e.tr.Restore(snap); err != nil {
		return err
	}
	e.done, e.pending, e.reported, e.sent, e.prev = jb.Done, jb.Pending, jb.Reported, jb.Reported, nil
	e.skipAgree = -1
	if jb.Agreed {
		e.skipAgree = int64(jb.GlobalKey)
	}
	return nil
}

// CheckpointSource gives the latest checkpoint (coordinator.Client).
type CheckpointSource interface {
	LatestCheckpoint(ctx context.Context) (state.CheckpointRecord, []byte, error)
}

// Begin brings this worker into the job once the coordinator lists it: in
// a start generation every member begins together, from the latest
// checkpoint if there is one (ckpt may be nil for none); otherwise it takes
// the state of a live peer published at the step boundary where the ring
// switches to its generation.
func (e *Elastic) Begin(ctx context.Context, wait time.Duration, ckpt func(ctx context.Context) ([]byte, error)) error {
	if _, err := e.waitGen(ctx, wait, func(g state.Generation) bool { return g.Index(e.cfg.ID) >= 0 }); err != nil {
		return fmt.Errorf("waiting to be given a generation: %w", err)
	}
	for {
		// The newest generation decides: a join may be overtaken by a
		// restart (every holder of the state lost meanwhile).
		g, err := e.waitGen(ctx, wait, func(state.Generation) bool { return true })
		if err != nil {
			return err
		}
		if g.Index(e.cfg.ID) < 0 {
			return fmt.Errorf("%w: generation %d", ErrRemoved, g.Number)
		}
		if isStart(g) {
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
			return e.openRing(g)
		}
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
				return fmt.Errorf("restoring the state from %s: %w", m.ID, err)
			}
			e.log.Info("took the state from a peer", "peer", m.ID, "generation", g.Number, "bytes", len(st.Data))
			return e.openRing(g)
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// checkpointDue: every CheckpointEvery steps, or CheckpointSeconds after the
// last checkpoint (only at progress reports, where nothing is pending).
func (e *Elastic) checkpointDue(g uint64) bool {
	if e.cfg.CheckpointEvery > 0 && g%uint64(e.cfg.CheckpointEvery) == 0 {
		return true
	}
	if e.cfg.CheckpointSeconds <= 0 {
		return false
	}
	if e.lastCkpt.IsZero() {
		e.lastCkpt = time.Now() // the clock starts with the worker
		return false
	}
	return time.Since(e.lastCkpt).Seconds() >= e.cfg.CheckpointSeconds
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

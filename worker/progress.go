package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/trainer"
)

// progress accounts the steps this worker ran and reports them to the
// coordinators, whose log must hold every step of every epoch exactly
// once. Reports travel in the background: the training does not wait for
// the coordinators (they are not on the step path, and may be failing
// over).
type progress struct {
	coord Coordinator
	id    string
	log   *slog.Logger
	bg    *sync.WaitGroup // the owner waits for reports in flight on close

	prev     *trainer.Boundary // the step that ran last (not yet accounted)
	pending  []state.StepRange // steps not yet in a report that went out
	reported uint64            // the global step of the last report the coordinators took
	sent     uint64            // ... of the last report sent (maybe still travelling)
	sentAt   time.Time
	inflight *sending // the report travelling, not yet collected

	losses     []state.EpochLoss // completed epochs not yet in a report that went out
	lossEpochs map[string]int    // per stage, the epochs queued so far
}

// sending is a progress report on its way to the coordinators.
type sending struct {
	p    state.Progress
	done chan struct{}
	err  error // set before done closes
}

// ran notes the step of b as run; the next account adds it.
func (p *progress) ran(b trainer.Boundary) { p.prev = &b }

// account adds the step that ran last to the ranges not yet reported.
func (p *progress) account() {
	b := p.prev
	if b == nil {
		return
	}
	p.prev = nil
	if n := len(p.pending); n > 0 {
		r := &p.pending[n-1]
		if r.Stage == b.Stage && r.Epoch == b.Epoch && r.To == b.Step {
			r.To++
			return
		}
	}
	p.pending = append(p.pending, state.StepRange{Stage: b.Stage, Epoch: b.Epoch, From: b.Step, To: b.Step + 1})
}

// epochs queues the epochs of stage completed since the last call (train
// and val hold one loss per completed epoch). An epoch with a non-finite
// loss is skipped: JSON cannot carry it, and the curve shows a gap.
func (p *progress) epochs(stage string, train, val []float64) {
	if p.lossEpochs == nil {
		p.lossEpochs = map[string]int{}
	}
	n := min(len(train), len(val))
	for i := p.lossEpochs[stage]; i < n; i++ {
		if l := (state.EpochLoss{Stage: stage, Epoch: i + 1, Train: train[i], Val: val[i]}); l.Valid() {
			p.losses = append(p.losses, l)
		}
	}
	p.lossEpochs[stage] = max(p.lossEpochs[stage], n)
	p.trimLosses()
}

// trimLosses keeps the newest state.MaxReportLosses queued losses.
func (p *progress) trimLosses() {
	if n := len(p.losses) - state.MaxReportLosses; n > 0 {
		p.losses = append([]state.EpochLoss(nil), p.losses[n:]...)
	}
}

// due reports whether global is past what was last sent.
func (p *progress) due(global uint64) bool { return global > p.sent }

// report sends the progress since the last report in the background. At
// most one report travels; while it does, the steps go with a later one. A
// report that fails is merged into the next; a failed job stops the
// training at the next report point. rows is the rows a step trains
// (for the rate).
func (p *progress) report(ctx context.Context, r state.Progress, rows int) error {
	if err := p.collect(false); err != nil {
		return err
	}
	if p.inflight != nil {
		return nil
	}
	now := time.Now()
	r.WorkerID, r.Ranges, r.Losses, r.Time = p.id, p.pending, p.losses, now.UnixNano()
	if !p.sentAt.IsZero() && r.GlobalStep > p.sent && rows > 0 {
		r.RowsPerSec = float64(r.GlobalStep-p.sent) * float64(rows) / now.Sub(p.sentAt).Seconds()
	}
	s := &sending{p: r, done: make(chan struct{})}
	p.inflight, p.pending, p.losses, p.sent, p.sentAt = s, nil, nil, r.GlobalStep, now
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		defer close(s.done)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		s.err = p.coord.ReportProgress(rctx, s.p)
	}()
	return nil
}

// collect takes the outcome of the report in flight, waiting for it if
// wait: taken, its steps are done with; failed, they go with the next.
func (p *progress) collect(wait bool) error {
	s := p.inflight
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
	p.inflight = nil
	switch {
	case s.err == nil:
		p.reported = s.p.GlobalStep
	case errors.Is(s.err, state.ErrJobFailed):
		return s.err
	default:
		p.log.Warn("progress report failed; will send it with the next", "global_step", s.p.GlobalStep, "err", s.err)
		p.pending = append(append([]state.StepRange(nil), s.p.Ranges...), p.pending...)
		p.losses = append(append([]state.EpochLoss(nil), s.p.Losses...), p.losses...)
		p.trimLosses()
	}
	return nil
}

// unreported are the steps no report the coordinators took has covered
// yet (a snapshot carries them, so its restorer reports them again; the
// coordinators drop what they already have).
func (p *progress) unreported() []state.StepRange {
	var out []state.StepRange
	if p.inflight != nil {
		out = append(out, p.inflight.p.Ranges...)
	}
	return append(out, p.pending...)
}

// restored takes the counters of a state blob: its unreported steps and
// the last report the coordinators took.
func (p *progress) restored(pending []state.StepRange, reported uint64) {
	p.pending, p.reported, p.sent, p.prev = pending, reported, reported, nil
}

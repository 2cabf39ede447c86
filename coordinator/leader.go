package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
)

// liveness is the leader's view of which workers are alive: the time of
// their last beat and whether their heartbeat stream broke.
type liveness struct {
	mu     sync.Mutex
	last   map[string]time.Time
	broken map[string]bool
	keys   map[string]bool // registry mode: workers whose etcd key exists
	// registry mode, before this term has read the keys: nobody times out
	unsynced bool
	heard    bool // a beat arrived in this leadership term
}

func newLiveness() *liveness {
	return &liveness{last: map[string]time.Time{}, broken: map[string]bool{}, keys: map[string]bool{}}
}

// reset starts a leadership term: every worker gets a fresh grace period.
func (l *liveness) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = map[string]time.Time{}
	l.broken = map[string]bool{}
	l.keys = map[string]bool{}
	l.unsynced = false
	l.heard = false
}

func (l *liveness) heardAny() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heard
}

func (l *liveness) beat(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.beatLocked(id)
}

func (l *liveness) beatLocked(id string) {
	l.last[id] = time.Now()
	delete(l.broken, id)
	l.heard = true
}

// lastBeat is when id's last beat arrived (zero: none, or its stream broke).
func (l *liveness) lastBeat(id string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken[id] {
		return time.Time{}
	}
	return l.last[id]
}

func (l *liveness) breakStream(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.broken[id] = true
}

func (l *liveness) forget(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.last, id)
	delete(l.broken, id)
}

// dead reports whether id is dead at now; a worker seen for the first time
// starts its grace period.
func (l *liveness) dead(id string, now time.Time, timeout time.Duration) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken[id] {
		return true
	}
	if l.keys[id] || l.unsynced { // registry mode: a present key is a beat
		l.last[id] = now
		return false
	}
	t, ok := l.last[id]
	if !ok {
		l.last[id] = now
		return false
	}
	return now.Sub(t) > timeout
}

// leaderLoop runs while this node leads: it turns liveness and the
// registered workers into generations.
func (n *Node) leaderLoop(ctx context.Context) {
	// Make sure the FSM has every entry of earlier terms before deciding.
	for {
		if err := n.raft.Barrier(5 * time.Second).Error(); err == nil {
			break
		} else if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	n.live.reset()
	// Serve as the leader only now that the FSM is current.
	n.mu.Lock()
	if ctx.Err() == nil {
		n.leaderCtx = ctx
	}
	n.mu.Unlock()
	n.log.Info("leading", "grpc", n.grpcAddr)
	regDone := n.leadRegistry(ctx)
	defer func() { <-regDone }()
	tick := time.NewTicker(max(n.cfg.BatchWindow/2, 10*time.Millisecond))
	defer tick.Stop()
	var changeSince, isolatedSince time.Time
	transferred := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-n.kick:
		case <-n.fsm.watch():
		}
		var isolated bool
		changeSince, isolated = n.reconcile(ctx, changeSince)
		// A leader that heard the workers in this term and then hears none
		// of them is likely cut off from them while its raft peers are
		// not: hand leadership to a peer the workers may reach. (After a
		// real loss of every worker the next leader hears none, so this
		// happens at most once.)
		switch {
		case !isolated || !n.live.heardAny():
			isolatedSince = time.Time{}
		case isolatedSince.IsZero():
			isolatedSince = time.Now()
		case !transferred && time.Since(isolatedSince) > n.cfg.HeartbeatTimeout && len(n.cfg.Servers) > 1:
			transferred = true
			n.log.Warn("no worker reaches this leader: transferring leadership")
			if err := n.raft.LeadershipTransfer().Error(); err != nil {
				n.log.Warn("leadership transfer", "err", err)
			}
		}
	}
}

// reconcile applies one membership step; it returns the time the pending
// change was first seen (zero when none waits) and whether every member
// of the running job is silent.
func (n *Node) reconcile(ctx context.Context, changeSince time.Time) (time.Time, bool) {
	now := time.Now()
	var p plan
	n.fsm.read(func(s *state.State) {
		p = decide(now, s, n.observe(s, now, changeSince), decideConfig{BatchWindow: n.cfg.BatchWindow, RelinkWait: n.cfg.HeartbeatTimeout})
	})
	return n.applyPlan(ctx, p, now, changeSince), p.isolated
}

// observe gathers what decide needs beyond the state: which pending and
// active workers are dead at now. It asks liveness about exactly those
// workers, and only while the job's membership is managed, since asking
// starts a first-seen worker's grace period.
func (n *Node) observe(s *state.State, now, changeSince time.Time) observations {
	obs := observations{changeSince: changeSince}
	if !jobLive(s) {
		return obs
	}
	for _, w := range s.Workers {
		if w.Status != state.WorkerPending && w.Status != state.WorkerActive {
			continue
		}
		if n.live.dead(w.ID, now, n.cfg.HeartbeatTimeout) {
			if obs.dead == nil {
				obs.dead = map[string]bool{}
			}
			obs.dead[w.ID] = true
		}
		if s.Relink != nil {
			if obs.lastBeat == nil {
				obs.lastBeat = map[string]time.Time{}
			}
			obs.lastBeat[w.ID] = n.live.lastBeat(w.ID)
		}
	}
	return obs
}

func (n *Node) applyPlan(ctx context.Context, p plan, now, changeSince time.Time) time.Time {
	for _, id := range p.deregister {
		if _, err := n.apply(ctx, state.Command{Op: state.OpDeregister, WorkerID: id}); err != nil {
			n.log.Warn("deregister", "worker", id, "err", err)
		} else {
			n.live.forget(id)
			n.log.Info("deregistered a dead pending worker", "worker", id)
		}
	}
	if p.fail != "" {
		if _, err := n.apply(ctx, state.Command{Op: state.OpFail, Message: p.fail}); err != nil {
			n.log.Warn("fail the job", "err", err)
		} else {
			n.log.Error("job failed", "reason", p.fail)
		}
		return time.Time{}
	}
	if p.pending {
		if changeSince.IsZero() {
			return now
		}
		return changeSince
	}
	if p.gen == nil {
		return time.Time{}
	}
	p.gen.Time = now.UnixNano()
	if p.rewind != nil {
		p.rewind.Time = p.gen.Time
		if _, err := n.apply(ctx, *p.rewind); err != nil {
			n.log.Warn("rewind", "to", p.rewind.GlobalStep, "err", err)
			return changeSince
		}
		n.log.Info("every worker was lost: restarting from the last checkpoint", "global_step", p.rewind.GlobalStep, "checkpoint", p.rewind.CheckpointID)
	}
	if _, err := n.apply(ctx, state.Command{Op: state.OpSetGeneration, Generation: p.gen}); err != nil {
		n.log.Warn("set generation", "generation", p.gen.Number, "err", err)
		return changeSince
	}
	for _, c := range p.gen.Cause {
		if c.Kind == state.ChangeCrash || c.Kind == state.ChangeLeave {
			n.live.forget(c.Member)
		}
	}
	n.log.Info("generation", "number", p.gen.Number, "members", len(p.gen.Members), "cause", p.gen.Cause.String())
	return time.Time{}
}

package coordinator

import (
	"context"
	"strings"
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

type plan struct {
	isolated   bool // every member of the running job is silent
	gen        *state.Generation
	rewind     *state.Command // before a restart generation: the step log back to the checkpoint
	deregister []string
	pending    bool // a change waits for the batch window
}

// decide computes the next membership step from the state and liveness.
func (n *Node) decide(s *state.State, now time.Time, changeSince time.Time) plan {
	var p plan
	if s.Job == nil || (s.Status.Phase != state.JobPending && s.Status.Phase != state.JobRunning) {
		return p
	}
	var crashed, leaving, joiners []state.Worker
	for _, w := range s.Workers {
		switch w.Status {
		case state.WorkerPending:
			if n.live.dead(w.ID, now, n.cfg.HeartbeatTimeout) {
				p.deregister = append(p.deregister, w.ID)
			} else {
				joiners = append(joiners, w)
			}
		case state.WorkerActive:
			if n.live.dead(w.ID, now, n.cfg.HeartbeatTimeout) {
				crashed = append(crashed, w)
			}
		case state.WorkerLeaving:
			leaving = append(leaving, w)
		}
	}
	cur, ok := s.Current()
	if !ok {
		if len(joiners) >= s.Job.MinWorkers {
			var ms []state.Member
			for _, w := range joiners {
				ms = append(ms, state.Member{ID: w.ID, Addr: w.Addr})
			}
			p.gen = &state.Generation{Number: 1, Members: ms, Owner: state.Rebalance(state.Generation{}, ms, s.Job.Shards), Cause: "start"}
		}
		return p
	}
	if len(crashed)+len(leaving)+len(joiners) == 0 {
		return p
	}
	p.isolated = len(crashed) == len(cur.Members) && len(leaving) == 0 && len(joiners) < s.Job.MinWorkers
	if !changeSince.IsZero() && now.Sub(changeSince) < n.cfg.BatchWindow || changeSince.IsZero() && n.cfg.BatchWindow > 0 {
		p.pending = true
		return p
	}
	removed := map[string]bool{}
	var cause []string
	for _, w := range crashed {
		removed[w.ID] = true
		cause = append(cause, "crash:"+w.ID)
	}
	for _, w := range leaving {
		removed[w.ID] = true
		cause = append(cause, "leave:"+w.ID)
	}
	var ms, unready []state.Member
	for _, m := range cur.Members {
		if removed[m.ID] {
			continue
		}
		// After a crash the survivors reconcile mid-step, so the new
		// generation keeps only members holding the job's state: a joiner
		// whose switch has not happened yet goes (docs/elastic.md).
		if len(crashed) > 0 && !holdsState(s, m.ID) {
			cause = append(cause, "unready:"+m.ID)
			unready = append(unready, m)
			continue
		}
		ms = append(ms, m)
	}
	if len(ms) == 0 {
		// Nobody holds the state: every worker is gone, or this leader is
		// cut off from them. Restart from the last checkpoint once enough
		// new workers have registered.
		// The live workers without the state (members whose join never
		// took effect, and new registrations) begin together.
		ms = unready
		for _, w := range joiners {
			ms = append(ms, state.Member{ID: w.ID, Addr: w.Addr})
		}
		if len(ms) < s.Job.MinWorkers {
			return p
		}
		rw := state.Command{Op: state.OpRewind}
		if ck, ok := s.LatestCheckpoint(); ok && ck.GlobalStep <= s.Watermark.GlobalStep {
			rw.GlobalStep, rw.CheckpointID = ck.GlobalStep, ck.ID
		}
		p.rewind = &rw
		p.gen = &state.Generation{Number: cur.Number + 1, Members: ms, Owner: state.Rebalance(state.Generation{}, ms, s.Job.Shards),
			Cause: strings.Join(append([]string{"restart"}, cause...), ",")}
		return p
	}
	// A generation that removes a crashed member adds nobody: the survivors
	// reconcile first.
	if len(crashed) == 0 {
		for _, w := range joiners {
			ms = append(ms, state.Member{ID: w.ID, Addr: w.Addr})
			cause = append(cause, "join:"+w.ID)
		}
	}
	p.gen = &state.Generation{Number: cur.Number + 1, Members: ms, Owner: state.Rebalance(cur, ms, s.Job.Shards), Cause: strings.Join(cause, ",")}
	return p
}

// reconcile applies one membership step; it returns the time the pending
// change was first seen (zero when none waits) and whether every member
// of the running job is silent.
func (n *Node) reconcile(ctx context.Context, changeSince time.Time) (time.Time, bool) {
	now := time.Now()
	var p plan
	n.fsm.read(func(s *state.State) { p = n.decide(s, now, changeSince) })
	return n.applyPlan(ctx, p, now, changeSince), p.isolated
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
	for _, c := range strings.Split(p.gen.Cause, ",") {
		if id, ok := strings.CutPrefix(c, "crash:"); ok {
			n.live.forget(id)
		} else if id, ok := strings.CutPrefix(c, "leave:"); ok {
			n.live.forget(id)
		}
	}
	n.log.Info("generation", "number", p.gen.Number, "members", len(p.gen.Members), "cause", p.gen.Cause)
	return time.Time{}
}

// holdsState reports whether worker id holds the job's state: it has
// trained in a ring, or it began with the latest start (or restart)
// generation, whose members all begin together.
func holdsState(s *state.State, id string) bool {
	if w, ok := s.Worker(id); ok && w.Activated > 0 {
		return true
	}
	for i := len(s.Generations) - 1; i >= 0; i-- {
		g := s.Generations[i]
		if g.Cause == "start" || strings.HasPrefix(g.Cause, "restart") {
			return g.Index(id) >= 0
		}
	}
	return false
}

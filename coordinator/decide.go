package coordinator

import (
	"fmt"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
)

// plan is one membership step: what the leader loop applies.
type plan struct {
	isolated   bool // every member of the running job is silent
	gen        *state.Generation
	rewind     *state.Command // before a restart generation: the step log back to the checkpoint
	deregister []string
	pending    bool   // a change waits for the batch window
	fail       string // fail the job with this message instead
}

// observations is what the leader saw outside the replicated state,
// gathered before decide runs.
type observations struct {
	// dead holds the pending and active workers whose heartbeats timed
	// out (or whose stream broke, or whose registry key is gone).
	dead map[string]bool
	// changeSince is when the change waiting for the batch window was
	// first seen; zero when none waits.
	changeSince time.Time
	// lastBeat is when each pending and active worker last beat (zero:
	// never, or its stream broke); gathered only while a relink is asked.
	lastBeat map[string]time.Time
}

// decideConfig is the configuration decide reads.
type decideConfig struct {
	BatchWindow time.Duration // a change waits this long for more to batch with
	// RelinkWait is how long a reported link failure waits before the
	// leader relinks the same members: a link that broke because its peer
	// died turns into a crash generation within the heartbeat timeout,
	// which the relink must not precede.
	RelinkWait time.Duration
}

// census is the change the workers of the state call for.
type census struct {
	crashed, leaving, joiners []state.Worker
	// relink is the member that reported a failed link in the current
	// generation ("" for none).
	relink string
}

// jobLive reports whether the state has a job whose membership the leader
// manages (pending or running).
func jobLive(s *state.State) bool {
	return s.Job != nil && (s.Status.Phase == state.JobPending || s.Status.Phase == state.JobRunning)
}

// decide computes the next membership step from the state and what the
// leader observed. It is pure: no clock (now is given), no I/O.
func decide(now time.Time, s *state.State, obs observations, cfg decideConfig) plan {
	var p plan
	if !jobLive(s) {
		return p
	}
	var c census
	for _, w := range s.Workers {
		switch w.Status {
		case state.WorkerPending:
			if obs.dead[w.ID] {
				p.deregister = append(p.deregister, w.ID)
			} else {
				c.joiners = append(c.joiners, w)
			}
		case state.WorkerActive:
			if obs.dead[w.ID] {
				c.crashed = append(c.crashed, w)
			}
		case state.WorkerLeaving:
			c.leaving = append(c.leaving, w)
		}
	}
	cur, ok := s.Current()
	if !ok {
		if len(c.joiners) >= s.Job.MinWorkers {
			ms := asMembers(c.joiners)
			p.gen = &state.Generation{Number: 1, Members: ms, Owner: state.Rebalance(state.Generation{}, ms, s.Job.Shards),
				Cause: state.Cause{{Kind: state.ChangeStart}}}
		}
		return p
	}
	if r := s.Relink; r != nil && r.Generation == cur.Number && cur.Index(r.WorkerID) >= 0 {
		c.relink = r.WorkerID
		// The members are stuck in a call that failed, not at a step
		// boundary: nothing but a crash goes before their relink. It waits
		// until every member has beaten since the report (all alive: the
		// link itself failed), or RelinkWait (a dead member is a crash by
		// then).
		if len(c.crashed) == 0 && !beatSince(cur, obs.lastBeat, time.Unix(0, r.Time)) && now.Sub(time.Unix(0, r.Time)) < cfg.RelinkWait {
			p.pending = true
			return p
		}
	}
	if len(c.crashed)+len(c.leaving)+len(c.joiners) == 0 && c.relink == "" {
		return p
	}
	if k := s.RelinkStreak; c.relink != "" && len(c.crashed) == 0 && k != nil && k.Count >= state.MaxRelinks && k.GlobalStep == s.Watermark.GlobalStep {
		p.fail = fmt.Sprintf("the ring failed at global step %d after %d relinks in a row (the same call fails on fresh connections: not a link fault); last report by %s: %s",
			k.GlobalStep, k.Count, s.Relink.WorkerID, s.Relink.Message)
		return p
	}
	p.isolated = len(c.crashed) == len(cur.Members) && len(c.leaving) == 0 && len(c.joiners) < s.Job.MinWorkers
	since := obs.changeSince
	if !since.IsZero() && now.Sub(since) < cfg.BatchWindow || since.IsZero() && cfg.BatchWindow > 0 {
		p.pending = true
		return p
	}
	p.gen, p.rewind = nextGeneration(s, cur, c)
	return p
}

// beatSince reports whether every member of g beat after t.
func beatSince(g state.Generation, lastBeat map[string]time.Time, t time.Time) bool {
	for _, m := range g.Members {
		if !lastBeat[m.ID].After(t) {
			return false
		}
	}
	return true
}

// nextGeneration is the generation after cur that c calls for, with the
// rewind before it when it is a restart; nil while a restart waits for
// MinWorkers.
func nextGeneration(s *state.State, cur state.Generation, c census) (*state.Generation, *state.Command) {
	removed := map[string]bool{}
	var cause state.Cause
	for _, w := range c.crashed {
		removed[w.ID] = true
		cause = append(cause, state.Change{Kind: state.ChangeCrash, Member: w.ID})
	}
	for _, w := range c.leaving {
		removed[w.ID] = true
		cause = append(cause, state.Change{Kind: state.ChangeLeave, Member: w.ID})
	}
	var ms, unready []state.Member
	for _, m := range cur.Members {
		if removed[m.ID] {
			continue
		}
		// After a crash (or for a relink) the survivors reconcile
		// mid-step, so the new generation keeps only members holding the
		// job's state: a joiner
		// whose switch has not happened yet goes (docs/elastic.md).
		if (len(c.crashed) > 0 || c.relink != "") && !holdsState(s, m.ID) {
			cause = append(cause, state.Change{Kind: state.ChangeUnready, Member: m.ID})
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
		return restartGeneration(s, cur, append(unready, asMembers(c.joiners)...), cause)
	}
	// A relink keeps the members, on fresh connections; they reconcile the
	// call that failed. (A crash in the same generation reconciles them
	// anyway.)
	if c.relink != "" && len(c.crashed) == 0 {
		cause = append(cause, state.Change{Kind: state.ChangeRelink, Member: c.relink})
	}
	// A generation that removes a crashed member, or relinks, adds nobody:
	// the survivors reconcile first.
	if len(c.crashed) == 0 && c.relink == "" {
		for _, w := range c.joiners {
			ms = append(ms, state.Member{ID: w.ID, Addr: w.Addr})
			cause = append(cause, state.Change{Kind: state.ChangeJoin, Member: w.ID})
		}
	}
	return &state.Generation{Number: cur.Number + 1, Members: ms, Owner: state.Rebalance(cur, ms, s.Job.Shards), Cause: cause}, nil
}

// restartGeneration is the generation after cur in which ms begin
// together from the latest checkpoint (if it is at or below the watermark,
// else from the beginning), and the rewind before it; nil while ms are
// fewer than MinWorkers.
func restartGeneration(s *state.State, cur state.Generation, ms []state.Member, cause state.Cause) (*state.Generation, *state.Command) {
	if len(ms) < s.Job.MinWorkers {
		return nil, nil
	}
	rw := state.Command{Op: state.OpRewind}
	if ck, ok := s.LatestCheckpoint(); ok && ck.GlobalStep <= s.Watermark.GlobalStep {
		rw.GlobalStep, rw.CheckpointID = ck.GlobalStep, ck.ID
	}
	return &state.Generation{Number: cur.Number + 1, Members: ms, Owner: state.Rebalance(state.Generation{}, ms, s.Job.Shards),
		Cause: append(state.Cause{{Kind: state.ChangeRestart}}, cause...)}, &rw
}

// asMembers are ws as generation members, in order.
func asMembers(ws []state.Worker) []state.Member {
	var ms []state.Member
	for _, w := range ws {
		ms = append(ms, state.Member{ID: w.ID, Addr: w.Addr})
	}
	return ms
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
		if g.Cause.IsStart() {
			return g.Index(id) >= 0
		}
	}
	return false
}

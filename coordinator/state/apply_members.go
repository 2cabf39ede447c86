// The membership commands of Apply: register, leave, deregister,
// set-generation and activate.

package state

import (
	"fmt"
	"sort"
)

func (s *State) register(c Command) error {
	if c.Member == nil || c.Member.ID == "" {
		return argErr("register without a worker id")
	}
	if c.Member.Addr == "" {
		return argErr("worker %q: empty address", c.Member.ID)
	}
	if s.Job != nil {
		if err := s.JobError(); err != nil {
			return err
		}
	}
	i := s.workerIndex(c.Member.ID)
	if i >= 0 {
		w := &s.Workers[i]
		switch {
		case w.Status == WorkerGone:
			w.Addr, w.Status, w.Registered, w.Updated, w.Activated = c.Member.Addr, WorkerPending, c.Time, c.Time, 0
			return nil
		case w.Addr == c.Member.Addr:
			return nil
		default:
			return fmt.Errorf("%w: worker %q is already registered at %s (%s)", ErrConflict, w.ID, w.Addr, w.Status)
		}
	}
	w := Worker{ID: c.Member.ID, Addr: c.Member.Addr, Status: WorkerPending, Registered: c.Time, Updated: c.Time}
	i = sort.Search(len(s.Workers), func(i int) bool { return s.Workers[i].ID >= w.ID })
	s.Workers = append(s.Workers, Worker{})
	copy(s.Workers[i+1:], s.Workers[i:])
	s.Workers[i] = w
	return nil
}

func (s *State) leave(c Command) error {
	i := s.workerIndex(c.WorkerID)
	if i < 0 {
		return fmt.Errorf("%w: %q", ErrUnknownWorker, c.WorkerID)
	}
	w := &s.Workers[i]
	switch w.Status {
	case WorkerActive:
		w.Status, w.Updated = WorkerLeaving, c.Time
	case WorkerPending:
		w.Status, w.Updated = WorkerGone, c.Time
	}
	return nil
}

func (s *State) deregister(c Command) error {
	i := s.workerIndex(c.WorkerID)
	if i < 0 {
		return fmt.Errorf("%w: %q", ErrUnknownWorker, c.WorkerID)
	}
	w := &s.Workers[i]
	if w.Status == WorkerGone {
		return nil
	}
	if g, ok := s.Current(); ok && g.Index(w.ID) >= 0 {
		return fmt.Errorf("%w: worker %q is a member of generation %d; remove it with a new generation", ErrConflict, w.ID, g.Number)
	}
	w.Status, w.Updated = WorkerGone, c.Time
	return nil
}

func (s *State) setGeneration(c Command) error {
	g := c.Generation
	if g == nil {
		return argErr("set-generation without a generation")
	}
	if err := s.needJob(); err != nil {
		return err
	}
	cur := s.CurrentNumber()
	if g.Number <= cur {
		if old, ok := s.GenerationByNumber(g.Number); ok && generationsEqual(old, *g) {
			return nil // replay
		}
		return fmt.Errorf("%w: generation %d is not newer than the current %d", ErrStaleGeneration, g.Number, cur)
	}
	if len(g.Members) == 0 {
		return argErr("generation %d has no members", g.Number)
	}
	if len(g.Owner) != s.Job.Shards {
		return argErr("generation %d: owner map has %d shards, the job has %d", g.Number, len(g.Owner), s.Job.Shards)
	}
	seen := map[string]bool{}
	for _, m := range g.Members {
		w, ok := s.Worker(m.ID)
		if !ok || w.Status == WorkerGone {
			return fmt.Errorf("%w: generation %d names %q, which is not registered", ErrUnknownWorker, g.Number, m.ID)
		}
		if seen[m.ID] {
			return argErr("generation %d names %q twice", g.Number, m.ID)
		}
		seen[m.ID] = true
	}
	for sh, o := range g.Owner {
		if o < 0 || o >= len(g.Members) {
			return argErr("generation %d: shard %d has owner index %d of %d members", g.Number, sh, o, len(g.Members))
		}
	}
	ng := g.Clone()
	ng.Time = c.Time
	if g.Time != 0 {
		ng.Time = g.Time
	}
	for i := range s.Workers {
		w := &s.Workers[i]
		in := seen[w.ID]
		switch {
		case in && w.Status != WorkerActive && w.Status != WorkerLeaving:
			w.Status, w.Updated = WorkerActive, c.Time
		case !in && (w.Status == WorkerActive || w.Status == WorkerLeaving):
			w.Status, w.Updated = WorkerGone, c.Time
		}
	}
	s.Generations = append(s.Generations, ng)
	switch {
	case !ng.Cause.Has(ChangeRelink):
		s.RelinkStreak = nil
	case s.RelinkStreak != nil && s.RelinkStreak.GlobalStep == s.Watermark.GlobalStep:
		s.RelinkStreak.Count++
	default:
		s.RelinkStreak = &RelinkStreak{Count: 1, GlobalStep: s.Watermark.GlobalStep}
	}
	if s.Status.Phase == JobPending {
		s.Status = JobStatus{Phase: JobRunning, Time: c.Time}
	}
	return nil
}

func generationsEqual(a, b Generation) bool {
	if a.Number != b.Number || !a.Cause.Equal(b.Cause) || len(a.Members) != len(b.Members) || len(a.Owner) != len(b.Owner) {
		return false
	}
	for i := range a.Members {
		if a.Members[i] != b.Members[i] {
			return false
		}
	}
	for i := range a.Owner {
		if a.Owner[i] != b.Owner[i] {
			return false
		}
	}
	return true
}

// activate records that a worker trains in the ring of a generation (it
// holds the job's state): the leader keeps only such members in a
// generation made after a crash. The generation number in c.Generation.
func (s *State) activate(c Command) error {
	i := s.workerIndex(c.WorkerID)
	if i < 0 {
		return fmt.Errorf("%w: %q", ErrUnknownWorker, c.WorkerID)
	}
	if c.Generation == nil {
		return argErr("activate without a generation")
	}
	g, ok := s.GenerationByNumber(c.Generation.Number)
	if !ok || g.Index(c.WorkerID) < 0 {
		return fmt.Errorf("%w: %q is not a member of generation %d", ErrStaleGeneration, c.WorkerID, c.Generation.Number)
	}
	w := &s.Workers[i]
	if w.Status == WorkerGone {
		return fmt.Errorf("%w: %q was removed", ErrStaleGeneration, c.WorkerID)
	}
	w.Activated = max(w.Activated, g.Number)
	return nil
}

// relink records that worker c.WorkerID lost a data-plane link of the ring
// of generation c.Generation.Number while every member is alive (a
// corrupted or stalled stream): the leader answers with a generation of the
// same members, on which they reconcile over fresh connections
// (docs/elastic.md, "Link failures"). Only the first report of the current
// generation counts; a report of an older generation is stale.
func (s *State) relink(c Command) error {
	if err := s.needJob(); err != nil {
		return err
	}
	if c.Generation == nil {
		return argErr("relink without a generation")
	}
	cur, ok := s.Current()
	if !ok || c.Generation.Number != cur.Number || cur.Index(c.WorkerID) < 0 {
		return fmt.Errorf("%w: %q is not a member of the current generation %d", ErrStaleGeneration, c.WorkerID, c.Generation.Number)
	}
	if s.Relink != nil && s.Relink.Generation == cur.Number {
		return nil
	}
	s.Relink = &RelinkRequest{Generation: cur.Number, WorkerID: c.WorkerID, Message: c.Message, Time: c.Time}
	return nil
}

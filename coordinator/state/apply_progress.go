// The step log commands of Apply: report-progress and rewind.

package state

import (
	"fmt"
	"slices"
	"sort"
)

func (s *State) failJob(msg string, t int64) error {
	s.Status = JobStatus{Phase: JobFailed, Message: msg, Time: t}
	return fmt.Errorf("%w: %s", ErrJobFailed, msg)
}

func (s *State) lastReport(id string) (uint64, int) {
	i := sort.Search(len(s.LastReports), func(i int) bool { return s.LastReports[i].WorkerID >= id })
	if i < len(s.LastReports) && s.LastReports[i].WorkerID == id {
		return s.LastReports[i].GlobalStep, i
	}
	return 0, -i - 1
}

func (s *State) reportProgress(c Command) error {
	p := c.Progress
	if p == nil {
		return argErr("report without progress")
	}
	if err := s.needJob(); err != nil {
		return err
	}
	w, ok := s.Worker(p.WorkerID)
	if !ok || w.Status == WorkerGone {
		return fmt.Errorf("%w: %q is not a registered worker of the job", ErrUnknownWorker, p.WorkerID)
	}
	cur := s.CurrentNumber()
	if p.Generation > cur {
		return fmt.Errorf("%w: report from %q names generation %d, newer than the current %d", ErrStaleGeneration, p.WorkerID, p.Generation, cur)
	}
	g, ok := s.GenerationByNumber(p.Generation)
	if !ok || g.Index(p.WorkerID) < 0 {
		return fmt.Errorf("%w: %q is not a member of generation %d (current %d)", ErrStaleGeneration, p.WorkerID, p.Generation, cur)
	}
	for _, r := range p.Ranges {
		if r.From < 0 || r.To <= r.From || r.Epoch < 0 {
			return argErr("report from %q: bad step range %+v", p.WorkerID, r)
		}
	}
	if len(p.Losses) > MaxReportLosses {
		return argErr("report from %q: %d epoch losses, more than %d", p.WorkerID, len(p.Losses), MaxReportLosses)
	}
	for _, l := range p.Losses {
		if !l.Valid() {
			return argErr("report from %q: bad epoch loss %+v", p.WorkerID, l)
		}
	}
	s.recordLosses(p.Losses)
	last, li := s.lastReport(p.WorkerID)
	if li >= 0 && p.GlobalStep <= last {
		return nil // duplicate or old report of this worker
	}
	if p.GlobalStep > s.Watermark.GlobalStep {
		// First report of this global step: append its ranges. A worker
		// whose earlier report was lost sends ranges that start before the
		// watermark; those steps are committed already (by another
		// worker's report of the same steps), so only the part after the
		// watermark is new.
		p.Ranges = clipRanges(p.Ranges, p.GlobalStep, s.Watermark.GlobalStep)
		for _, r := range p.Ranges {
			if e, ok := s.overlap(r); ok {
				step := max(r.From, e.From)
				return s.failJob(fmt.Sprintf("step %d of stage %q epoch %d is committed twice: worker %s reports steps [%d,%d) at global step %d, already committed as [%d,%d)",
					step, r.Stage, r.Epoch, p.WorkerID, r.From, r.To, p.GlobalStep, e.From, e.To), c.Time)
			}
		}
		end := p.GlobalStep
		entries := make([]LogEntry, len(p.Ranges))
		for i := len(p.Ranges) - 1; i >= 0; i-- {
			r := p.Ranges[i]
			entries[i] = LogEntry{StepRange: r, GlobalEnd: end}
			n := uint64(r.To - r.From)
			if n > end {
				n = end
			}
			end -= n
		}
		for _, e := range entries {
			s.appendLog(e)
		}
		s.Watermark = Watermark{GlobalStep: p.GlobalStep, Stage: p.Stage, Epoch: p.Epoch, Step: p.Step,
			ParamHash: p.ParamHash, WorkerID: p.WorkerID, RowsPerSec: p.RowsPerSec, Time: c.Time}
		s.Recent = append(s.Recent, HashAt{GlobalStep: p.GlobalStep, ParamHash: p.ParamHash, WorkerID: p.WorkerID})
		if n := len(s.Recent) - RecentHashes; n > 0 {
			s.Recent = append([]HashAt(nil), s.Recent[n:]...)
		}
	} else {
		// An empty hash is no hash (a stage-end report has none): only two
		// hashes of the same step can disagree, and the first hash given
		// for a step is the one later reports are held to.
		i := sort.Search(len(s.Recent), func(i int) bool { return s.Recent[i].GlobalStep >= p.GlobalStep })
		if i < len(s.Recent) && s.Recent[i].GlobalStep == p.GlobalStep && s.Recent[i].ParamHash == "" && p.ParamHash != "" {
			s.Recent[i].ParamHash, s.Recent[i].WorkerID = p.ParamHash, p.WorkerID
		}
		if i < len(s.Recent) && s.Recent[i].GlobalStep == p.GlobalStep && p.ParamHash != "" && s.Recent[i].ParamHash != p.ParamHash {
			h := s.Recent[i]
			return s.failJob(fmt.Sprintf("divergent parameter hashes at global step %d: worker %s has %s, worker %s has %s",
				p.GlobalStep, h.WorkerID, h.ParamHash, p.WorkerID, p.ParamHash), c.Time)
		}
	}
	if li >= 0 {
		s.LastReports[li].GlobalStep = p.GlobalStep
	} else {
		i := -li - 1
		s.LastReports = append(s.LastReports, WorkerStep{})
		copy(s.LastReports[i+1:], s.LastReports[i:])
		s.LastReports[i] = WorkerStep{WorkerID: p.WorkerID, GlobalStep: p.GlobalStep}
	}
	return nil
}

// recordLosses keeps the epoch losses not seen before (by stage and
// epoch), dropping the oldest beyond MaxLosses.
func (s *State) recordLosses(ls []EpochLoss) {
	for _, l := range ls {
		if !slices.ContainsFunc(s.Losses, func(e EpochLoss) bool { return e.Stage == l.Stage && e.Epoch == l.Epoch }) {
			s.Losses = append(s.Losses, l)
		}
	}
	if n := len(s.Losses) - MaxLosses; n > 0 {
		s.Losses = append([]EpochLoss(nil), s.Losses[n:]...)
	}
}

func (s *State) overlap(r StepRange) (LogEntry, bool) {
	for _, e := range s.Log {
		if e.Stage == r.Stage && e.Epoch == r.Epoch && r.From < e.To && e.From < r.To {
			return e, true
		}
	}
	return LogEntry{}, false
}

func (s *State) appendLog(e LogEntry) {
	if n := len(s.Log); n > 0 {
		l := &s.Log[n-1]
		if l.Stage == e.Stage && l.Epoch == e.Epoch && l.To == e.From && l.GlobalEnd+uint64(e.To-e.From) == e.GlobalEnd {
			l.To, l.GlobalEnd = e.To, e.GlobalEnd
			return
		}
	}
	s.Log = append(s.Log, e)
}

func (s *State) rewind(c Command) error {
	if s.Job == nil {
		return ErrNoJob
	}
	g := c.GlobalStep
	if g > s.Watermark.GlobalStep {
		return argErr("rewind to global step %d, beyond the watermark %d", g, s.Watermark.GlobalStep)
	}
	if g == s.Watermark.GlobalStep {
		return nil
	}
	var log []LogEntry
	for _, e := range s.Log {
		if e.GlobalEnd <= g {
			log = append(log, e)
			continue
		}
		if start := e.GlobalEnd - uint64(e.To-e.From); start < g {
			e.To -= int(e.GlobalEnd - g)
			e.GlobalEnd = g
			log = append(log, e)
		}
		break
	}
	s.Log = log
	var recent []HashAt
	for _, h := range s.Recent {
		if h.GlobalStep <= g {
			recent = append(recent, h)
		}
	}
	s.Recent = recent
	s.Rewinds = append(s.Rewinds, Rewind{From: s.Watermark.GlobalStep, To: g, CheckpointID: c.CheckpointID, Time: c.Time})
	wm := Watermark{GlobalStep: g, Time: c.Time}
	if ck, ok := s.Checkpoint(c.CheckpointID); ok && ck.GlobalStep == g {
		wm.Stage, wm.Epoch, wm.Step = ck.Stage, ck.Epoch, ck.Step
	}
	if len(recent) > 0 && recent[len(recent)-1].GlobalStep == g {
		wm.ParamHash, wm.WorkerID = recent[len(recent)-1].ParamHash, recent[len(recent)-1].WorkerID
	}
	s.Watermark = wm
	s.LastReports = nil
	if s.Status.Phase == JobFailed {
		// A resume restarts a failed job.
		s.Status = JobStatus{Phase: JobRunning, Time: c.Time}
	}
	return nil
}

// clipRanges drops the part of ranges (which end at global step end) that
// lies at or before global step from.
func clipRanges(ranges []StepRange, end, from uint64) []StepRange {
	var total uint64
	for _, r := range ranges {
		total += uint64(r.To - r.From)
	}
	if total <= end-from {
		return ranges
	}
	skip := total - (end - from)
	var out []StepRange
	for _, r := range ranges {
		n := uint64(r.To - r.From)
		if skip >= n {
			skip -= n
			continue
		}
		r.From += int(skip)
		skip = 0
		out = append(out, r)
	}
	return out
}

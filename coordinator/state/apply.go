package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// Op names a command.
type Op uint8

// Commands.
const (
	OpSubmit Op = iota + 1
	OpRegister
	OpLeave
	OpDeregister
	OpSetGeneration
	OpReportProgress
	OpPutCheckpointChunk
	OpCommitCheckpoint
	OpRewind
	OpFail
	OpFinish
	OpActivate
)

var opNames = map[Op]string{
	OpSubmit: "submit", OpRegister: "register", OpLeave: "leave", OpDeregister: "deregister",
	OpSetGeneration: "set-generation", OpReportProgress: "report-progress",
	OpPutCheckpointChunk: "put-checkpoint-chunk", OpCommitCheckpoint: "commit-checkpoint",
	OpRewind: "rewind", OpFail: "fail", OpFinish: "finish", OpActivate: "activate",
}

func (o Op) String() string {
	if n, ok := opNames[o]; ok {
		return n
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Command is one typed, idempotent state change. Time is stamped by the
// leader; Apply reads no clock. Only the fields of Op are used.
type Command struct {
	Op   Op    `json:"op"`
	Time int64 `json:"time"`

	Job          *JobSpec          `json:"job,omitempty"`           // Submit
	Member       *Member           `json:"member,omitempty"`        // Register
	WorkerID     string            `json:"worker_id,omitempty"`     // Leave, Deregister, Activate
	Generation   *Generation       `json:"generation,omitempty"`    // SetGeneration
	Progress     *Progress         `json:"progress,omitempty"`      // ReportProgress
	UploadID     string            `json:"upload_id,omitempty"`     // PutCheckpointChunk, CommitCheckpoint
	Offset       int64             `json:"offset,omitempty"`        // PutCheckpointChunk
	Checkpoint   *CheckpointRecord `json:"checkpoint,omitempty"`    // CommitCheckpoint (ID assigned by Apply)
	GlobalStep   uint64            `json:"global_step,omitempty"`   // Rewind
	CheckpointID uint64            `json:"checkpoint_id,omitempty"` // Rewind
	Message      string            `json:"message,omitempty"`       // Fail
	RewardSHA    string            `json:"reward_sha,omitempty"`    // Finish
	Data         []byte            `json:"-"`                       // PutCheckpointChunk; encoded raw, not base64
}

func argErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}

// Apply applies c. The result is the command's value (the committed
// CheckpointRecord for CommitCheckpoint, else nil). An error leaves the state
// unchanged, except errors wrapping ErrJobFailed returned by ReportProgress
// when the report itself failed the job.
func (s *State) Apply(c Command) (any, error) {
	switch c.Op {
	case OpSubmit:
		return nil, s.submit(c)
	case OpRegister:
		return nil, s.register(c)
	case OpLeave:
		return nil, s.leave(c)
	case OpDeregister:
		return nil, s.deregister(c)
	case OpSetGeneration:
		return nil, s.setGeneration(c)
	case OpReportProgress:
		return nil, s.reportProgress(c)
	case OpPutCheckpointChunk:
		return nil, s.putChunk(c)
	case OpCommitCheckpoint:
		return s.commitCheckpoint(c)
	case OpRewind:
		return nil, s.rewind(c)
	case OpFail:
		return nil, s.fail(c)
	case OpFinish:
		return nil, s.finish(c)
	case OpActivate:
		return nil, s.activate(c)
	}
	return nil, argErr("unknown command %v", c.Op)
}

// JobError is the error of a job that is failed or done, nil while it runs.
func (s *State) JobError() error {
	switch s.Status.Phase {
	case JobFailed:
		return fmt.Errorf("%w: %s", ErrJobFailed, s.Status.Message)
	case JobDone:
		return ErrJobDone
	}
	return nil
}

func (s *State) needJob() error {
	if s.Job == nil {
		return ErrNoJob
	}
	return s.JobError()
}

func (s *State) submit(c Command) error {
	if c.Job == nil {
		return argErr("submit without a job")
	}
	j := c.Job.WithDefaults()
	if err := j.Validate(); err != nil {
		return err
	}
	if s.Job != nil {
		if s.Job.equal(j) {
			return nil
		}
		return fmt.Errorf("%w: %q", ErrJobExists, s.Job.ID)
	}
	j.Config = append([]byte(nil), j.Config...)
	s.Job = &j
	s.Status = JobStatus{Phase: JobPending, Time: c.Time}
	return nil
}

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
	if s.Status.Phase == JobPending {
		s.Status = JobStatus{Phase: JobRunning, Time: c.Time}
	}
	return nil
}

func generationsEqual(a, b Generation) bool {
	if a.Number != b.Number || a.Cause != b.Cause || len(a.Members) != len(b.Members) || len(a.Owner) != len(b.Owner) {
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

func (s *State) putChunk(c Command) error {
	if c.UploadID == "" {
		return argErr("checkpoint chunk without an upload id")
	}
	if c.Offset < 0 {
		return argErr("upload %s: chunk at offset %d", c.UploadID, c.Offset)
	}
	if err := s.needJob(); err != nil {
		return err
	}
	for _, b := range s.Blobs {
		if b.UploadID == c.UploadID {
			return nil // already committed
		}
	}
	i := -1
	for k, u := range s.Uploads {
		if u.ID == c.UploadID {
			i = k
		}
	}
	if i < 0 {
		if c.Offset != 0 {
			return argErr("upload %s: first chunk at offset %d", c.UploadID, c.Offset)
		}
		if len(s.Uploads) >= MaxUploads {
			s.Uploads = append([]Upload(nil), s.Uploads[len(s.Uploads)-MaxUploads+1:]...)
		}
		s.Uploads = append(s.Uploads, Upload{ID: c.UploadID, Time: c.Time})
		i = len(s.Uploads) - 1
	}
	u := &s.Uploads[i]
	switch {
	case c.Offset == u.Size:
		u.Data = append(u.Data, c.Data...)
		u.Size = int64(len(u.Data))
	case c.Offset <= u.Size-int64(len(c.Data)):
		// Replay of a chunk already applied: the same bytes.
		if end := c.Offset + int64(len(c.Data)); end > int64(len(u.Data)) || !bytes.Equal(u.Data[c.Offset:end], c.Data) {
			return fmt.Errorf("%w: upload %s: the chunk at offset %d differs from the bytes it replays", ErrConflict, c.UploadID, c.Offset)
		}
	default:
		return argErr("upload %s: chunk at offset %d, have %d bytes", c.UploadID, c.Offset, u.Size)
	}
	return nil
}

func (s *State) commitCheckpoint(c Command) (any, error) {
	rec := c.Checkpoint
	if rec == nil {
		return nil, argErr("commit without a checkpoint record")
	}
	if err := s.needJob(); err != nil {
		return nil, err
	}
	if c.UploadID != "" {
		for _, b := range s.Blobs {
			if b.UploadID == c.UploadID {
				r, _ := s.Checkpoint(b.ID)
				return r, nil // replay
			}
		}
	}
	r := *rec
	var blob *Blob
	switch {
	case r.Location == LocationRaft:
		i := -1
		for k, u := range s.Uploads {
			if u.ID == c.UploadID {
				i = k
			}
		}
		if i < 0 {
			return nil, argErr("commit of unknown upload %q", c.UploadID)
		}
		u := s.Uploads[i]
		if u.Size != r.Size {
			return nil, fmt.Errorf("%w: checkpoint has %d bytes, record says %d", ErrChecksumMismatch, u.Size, r.Size)
		}
		sum := sha256.Sum256(u.Data)
		if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, r.SHA256) {
			return nil, fmt.Errorf("%w: checkpoint sha256 is %s, record says %s", ErrChecksumMismatch, got, r.SHA256)
		}
		s.Uploads = append(s.Uploads[:i:i], s.Uploads[i+1:]...)
		blob = &Blob{UploadID: u.ID, Data: u.Data}
	case strings.HasPrefix(r.Location, "dir:") && len(r.Location) > 4:
	default:
		return nil, argErr("checkpoint location %q: want %q or \"dir:<path>\"", r.Location, LocationRaft)
	}
	s.NextCheckpointID++
	r.ID = s.NextCheckpointID
	r.Time = c.Time
	s.Checkpoints = append(s.Checkpoints, r)
	if blob != nil {
		blob.ID = r.ID
		s.Blobs = append(s.Blobs, *blob)
	}
	keep := s.Job.CheckpointKeep
	if keep < 1 {
		keep = DefaultCheckpointKeep
	}
	if n := len(s.Checkpoints) - keep; n > 0 {
		oldest := s.Checkpoints[n].ID
		s.Checkpoints = append([]CheckpointRecord(nil), s.Checkpoints[n:]...)
		var blobs []Blob
		for _, b := range s.Blobs {
			if b.ID >= oldest {
				blobs = append(blobs, b)
			}
		}
		s.Blobs = blobs
	}
	return r, nil
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

func (s *State) fail(c Command) error {
	if s.Job == nil {
		return ErrNoJob
	}
	if s.Status.Phase == JobFailed || s.Status.Phase == JobDone {
		return nil
	}
	msg := c.Message
	if msg == "" {
		msg = "failed without a message"
	}
	s.Status = JobStatus{Phase: JobFailed, Message: msg, Time: c.Time}
	return nil
}

func (s *State) finish(c Command) error {
	if err := s.needJob(); err != nil {
		if s.Status.Phase == JobDone && s.Status.RewardSHA256 == c.RewardSHA {
			return nil
		}
		return err
	}
	s.Status = JobStatus{Phase: JobDone, RewardSHA256: c.RewardSHA, Time: c.Time}
	return nil
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

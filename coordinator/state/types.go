// Package state is the replicated job state of the causalrm coordinator as
// plain Go values: the job spec, registered workers, membership generations,
// the committed step log and watermark, checkpoints and the job status, plus
// the typed commands and their deterministic Apply, the snapshot encoding and
// the minimal-move shard rebalancer. It imports no raft (docs/design.md, "Packages").
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/causalrm/causalrm/trainer"
)

// Sentinel errors. Services map them to gRPC codes at their edge.
var (
	ErrInvalidSpec      = errors.New("invalid job spec")
	ErrInvalidArgument  = errors.New("invalid argument")
	ErrNoJob            = errors.New("no job submitted")
	ErrJobExists        = errors.New("a different job is already submitted")
	ErrJobFailed        = errors.New("job failed")
	ErrJobDone          = errors.New("job is done")
	ErrUnknownWorker    = errors.New("unknown worker")
	ErrConflict         = errors.New("conflict")
	ErrStaleGeneration  = errors.New("stale generation")
	ErrNoCheckpoint     = errors.New("no checkpoint")
	ErrChecksumMismatch = errors.New("checksum mismatch")
)

// Defaults applied by JobSpec.WithDefaults.
const (
	DefaultProgressEvery  = 10
	DefaultCheckpointKeep = 2
)

// JobSpec is the job as submitted.
type JobSpec struct {
	ID                   string `json:"id"`
	Shards               int    `json:"shards"`                 // virtual shards S, >= 1
	MinWorkers           int    `json:"min_workers"`            // workers before generation 1 (>= 1)
	ProgressEvery        int    `json:"progress_every"`         // K: workers report every K global steps (0: default 10)
	CheckpointEverySteps int    `json:"checkpoint_every_steps"` // 0: off
	// CheckpointEverySeconds: also checkpoint when this long has passed
	// since the last one (0: off), at the next progress report.
	CheckpointEverySeconds float64 `json:"checkpoint_every_seconds,omitempty"`
	CheckpointKeep         int     `json:"checkpoint_keep"` // 0: default 2
	// Config is the training job as the CLI resolved it: its job file's
	// YAML text as a JSON string (a JSON object of the same keys is read
	// too). Validate checks its training settings (checkJobConfig), so that
	// a job no worker could run (an integer that is not one, a model too
	// large to allocate) is refused at submit time.
	Config json.RawMessage `json:"config"`
}

func specErr(field, format string, args ...any) error {
	return fmt.Errorf("%w: field %q: %s", ErrInvalidSpec, field, fmt.Sprintf(format, args...))
}

// Validate checks the spec. Errors wrap ErrInvalidSpec and name the field, e.g.
// `invalid job spec: field "shards": must be 1..65536, got 0`. Zero ProgressEvery
// and CheckpointKeep mean their defaults.
func (j JobSpec) Validate() error {
	switch {
	case j.ID == "":
		return specErr("id", "must not be empty")
	case j.Shards < 1 || j.Shards > trainer.MaxShards:
		return specErr("shards", "must be 1..%d, got %d", trainer.MaxShards, j.Shards)
	case j.MinWorkers < 1:
		return specErr("min_workers", "must be >= 1, got %d", j.MinWorkers)
	case j.MinWorkers > j.Shards:
		return specErr("min_workers", "must be <= shards (%d), got %d", j.Shards, j.MinWorkers)
	case j.ProgressEvery < 0:
		return specErr("progress_every", "must be >= 1 (or 0 for the default %d), got %d", DefaultProgressEvery, j.ProgressEvery)
	case j.CheckpointEverySteps < 0:
		return specErr("checkpoint_every_steps", "must be >= 0, got %d", j.CheckpointEverySteps)
	case j.CheckpointEverySeconds < 0 || j.CheckpointEverySeconds != j.CheckpointEverySeconds:
		return specErr("checkpoint_every_seconds", "must be >= 0, got %v", j.CheckpointEverySeconds)
	case j.CheckpointKeep < 0:
		return specErr("checkpoint_keep", "must be >= 1 (or 0 for the default %d), got %d", DefaultCheckpointKeep, j.CheckpointKeep)
	case len(j.Config) > MaxConfigBytes:
		return specErr("config", "%d bytes, more than the limit of %d", len(j.Config), MaxConfigBytes)
	case len(j.Config) > 0 && !json.Valid(j.Config):
		return specErr("config", "must be valid JSON")
	}
	return checkJobConfig(j.Config, j.Shards)
}

// WithDefaults returns the spec with zero ProgressEvery and CheckpointKeep
// replaced by their defaults.
func (j JobSpec) WithDefaults() JobSpec {
	if j.ProgressEvery == 0 {
		j.ProgressEvery = DefaultProgressEvery
	}
	if j.CheckpointKeep == 0 {
		j.CheckpointKeep = DefaultCheckpointKeep
	}
	return j
}

func (j JobSpec) equal(o JobSpec) bool {
	a, _ := json.Marshal(j)
	b, _ := json.Marshal(o)
	return string(a) == string(b)
}

// Member is a worker in a generation. Addr is its collective host:port.
type Member struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// Generation is one membership of the job: its members in ring order and the
// owner of every virtual shard.
type Generation struct {
	Number  uint64   `json:"number"`
	Members []Member `json:"members"` // ring order
	Owner   []int    `json:"owner"`   // len Shards; Owner[s] = index into Members
	Cause   Cause    `json:"cause"`   // encodes as its text: "start", "join:<id>", "restart,crash:<id>", ...
	Time    int64    `json:"time"`    // leader-stamped unix nanos
}

// Index is the position of worker id in Members, -1 if absent.
func (g Generation) Index(id string) int {
	for i, m := range g.Members {
		if m.ID == id {
			return i
		}
	}
	return -1
}

// ShardsOf lists the shards worker id owns, ascending.
func (g Generation) ShardsOf(id string) []int {
	i := g.Index(id)
	if i < 0 {
		return nil
	}
	var out []int
	for s, o := range g.Owner {
		if o == i {
			out = append(out, s)
		}
	}
	return out
}

// Clone returns a deep copy.
func (g Generation) Clone() Generation {
	g.Members = append([]Member(nil), g.Members...)
	g.Owner = append([]int(nil), g.Owner...)
	g.Cause = slices.Clone(g.Cause)
	return g
}

// StepRange is steps [From, To) of a stage's epoch.
type StepRange struct {
	Stage string `json:"stage"`
	Epoch int    `json:"epoch"`
	From  int    `json:"from"`
	To    int    `json:"to"`
}

// Progress is a worker's report.
type Progress struct {
	WorkerID   string      `json:"worker_id"`
	Generation uint64      `json:"generation"`
	GlobalStep uint64      `json:"global_step"` // steps completed over the whole job
	Stage      string      `json:"stage"`
	Epoch      int         `json:"epoch"`
	Step       int         `json:"step"`
	Ranges     []StepRange `json:"ranges"` // completed since this worker's previous report
	ParamHash  string      `json:"param_hash"`
	RowsPerSec float64     `json:"rows_per_sec"`
	Time       int64       `json:"time"`
	// Losses are the epochs completed since this worker's previous report.
	Losses []EpochLoss `json:"losses,omitempty"`
}

// EpochLoss is one completed epoch of a stage with its mean training loss
// and its validation loss (both finite). Every holder computes the same
// values, so the first report of an epoch is the one kept.
type EpochLoss struct {
	Stage string  `json:"stage"`
	Epoch int     `json:"epoch"` // 1-based
	Train float64 `json:"train"`
	Val   float64 `json:"val"`
}

// Valid reports whether l names a stage and an epoch (1-based) and both
// losses are finite (JSON cannot carry the others): what a report may
// hold.
func (l EpochLoss) Valid() bool {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	return l.Stage != "" && l.Epoch >= 1 && finite(l.Train) && finite(l.Val)
}

// MaxLosses is how many epoch losses the state keeps (the oldest go
// first), and MaxReportLosses how many one report may carry.
const (
	MaxLosses       = 4096
	MaxReportLosses = 1024
)

// CheckpointRecord describes a stored checkpoint.
type CheckpointRecord struct {
	ID         uint64 `json:"id"`
	GlobalStep uint64 `json:"global_step"`
	Stage      string `json:"stage"`
	Epoch      int    `json:"epoch"`
	Step       int    `json:"step"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
	Location   string `json:"location"` // "raft" or "dir:<path>"
	Time       int64  `json:"time"`
}

// LocationRaft is the Location of checkpoints stored in the raft state.
const LocationRaft = "raft"

// WorkerStatus is a registered worker's state.
type WorkerStatus string

// Worker statuses.
const (
	WorkerPending WorkerStatus = "pending" // registered, in no generation yet
	WorkerActive  WorkerStatus = "active"  // member of the current generation
	WorkerLeaving WorkerStatus = "leaving" // asked to leave, still a member
	WorkerGone    WorkerStatus = "gone"    // removed (left, crashed or deregistered)
)

// Worker is a registered worker.
type Worker struct {
	ID         string       `json:"id"`
	Addr       string       `json:"addr"`
	Status     WorkerStatus `json:"status"`
	Registered int64        `json:"registered"`
	Updated    int64        `json:"updated"`
	// Activated is the newest generation in whose ring the worker has
	// trained (0: none yet): such a worker holds the job's state.
	Activated uint64 `json:"activated,omitempty"`
}

// JobPhase is the job's life cycle.
type JobPhase string

// Job phases.
const (
	JobNone    JobPhase = ""
	JobPending JobPhase = "pending"
	JobRunning JobPhase = "running"
	JobFailed  JobPhase = "failed"
	JobDone    JobPhase = "done"
)

// JobStatus is the job's phase with its failure message or reward hash.
type JobStatus struct {
	Phase        JobPhase `json:"phase"`
	Message      string   `json:"message,omitempty"`
	RewardSHA256 string   `json:"reward_sha256,omitempty"`
	Time         int64    `json:"time"`
}

// Watermark is the newest committed progress.
type Watermark struct {
	GlobalStep uint64  `json:"global_step"`
	Stage      string  `json:"stage"`
	Epoch      int     `json:"epoch"`
	Step       int     `json:"step"`
	ParamHash  string  `json:"param_hash"`
	WorkerID   string  `json:"worker_id"`
	RowsPerSec float64 `json:"rows_per_sec"`
	Time       int64   `json:"time"`
}

// HashAt is the parameter hash first reported for a global step.
type HashAt struct {
	GlobalStep uint64 `json:"global_step"`
	ParamHash  string `json:"param_hash"`
	WorkerID   string `json:"worker_id"`
}

// LogEntry is a committed step range; GlobalEnd is the global step count
// after its last step.
type LogEntry struct {
	StepRange
	GlobalEnd uint64 `json:"global_end"`
}

// Rewind records a rewind of the step log (a resume from a checkpoint).
type Rewind struct {
	From         uint64 `json:"from"` // watermark before
	To           uint64 `json:"to"`
	CheckpointID uint64 `json:"checkpoint_id"`
	Time         int64  `json:"time"`
}

// WorkerStep is the last global step a worker reported.
type WorkerStep struct {
	WorkerID   string `json:"worker_id"`
	GlobalStep uint64 `json:"global_step"`
}

// Upload is a checkpoint being uploaded in chunks.
type Upload struct {
	ID   string `json:"id"`
	Size int64  `json:"size"`
	Time int64  `json:"time"`
	Data []byte `json:"-"`
}

// Blob is the data of a checkpoint stored in the raft state.
type Blob struct {
	ID       uint64 `json:"id"`
	UploadID string `json:"upload_id"`
	Data     []byte `json:"-"`
}

// RecentHashes is how many global steps' hashes are kept for comparison.
const RecentHashes = 256

// MaxUploads is how many unfinished uploads are kept (the oldest is dropped).
const MaxUploads = 2

// State is the replicated job state. The zero value is an empty state.
// Slices are kept sorted (workers by ID, checkpoints by ID) so that encoding
// is deterministic.
type State struct {
	Job              *JobSpec           `json:"job"`
	Status           JobStatus          `json:"status"`
	Workers          []Worker           `json:"workers"`
	Generations      []Generation       `json:"generations"` // history, ascending; the last is current
	Log              []LogEntry         `json:"log"`
	Watermark        Watermark          `json:"watermark"`
	Recent           []HashAt           `json:"recent"` // ascending global step
	LastReports      []WorkerStep       `json:"last_reports"`
	Rewinds          []Rewind           `json:"rewinds"`
	Checkpoints      []CheckpointRecord `json:"checkpoints"` // ascending ID
	Blobs            []Blob             `json:"blobs"`       // ascending ID, Location "raft" only
	NextCheckpointID uint64             `json:"next_checkpoint_id"`
	Uploads          []Upload           `json:"uploads"` // oldest first
	// Relink is the first link failure reported in the current generation
	// (nil: none); a newer generation makes it stale.
	Relink *RelinkRequest `json:"relink,omitempty"`
	// RelinkStreak counts the relink generations in a row at one committed
	// global step (nil after any other generation).
	RelinkStreak *RelinkStreak `json:"relink_streak,omitempty"`
	// Losses are the completed epochs' losses the workers reported, in the
	// order they were first reported (for the status page's curves).
	Losses []EpochLoss `json:"losses,omitempty"`
}

// RelinkStreak is a run of relink generations with no step committed
// between them: a ring that fails the same call however often it is
// relinked (a bug, not a link) fails the job at MaxRelinks.
type RelinkStreak struct {
	Count      int    `json:"count"`
	GlobalStep uint64 `json:"global_step"` // the watermark they all met
}

// MaxRelinks is how many relink generations in a row, with no step
// committed, the leader makes before it fails the job.
const MaxRelinks = 10

// RelinkRequest is a member's report that a link of its generation's ring
// failed while the members are alive.
type RelinkRequest struct {
	Generation uint64 `json:"generation"`
	WorkerID   string `json:"worker_id"`
	Message    string `json:"message,omitempty"`
	Time       int64  `json:"time"` // stamped by the leader
}

// Current returns the current generation.
func (s *State) Current() (Generation, bool) {
	if len(s.Generations) == 0 {
		return Generation{}, false
	}
	return s.Generations[len(s.Generations)-1], true
}

// CurrentNumber is the current generation's number, 0 before generation 1.
func (s *State) CurrentNumber() uint64 {
	g, _ := s.Current()
	return g.Number
}

// GenerationByNumber finds a generation in the history.
func (s *State) GenerationByNumber(n uint64) (Generation, bool) {
	i := sort.Search(len(s.Generations), func(i int) bool { return s.Generations[i].Number >= n })
	if i < len(s.Generations) && s.Generations[i].Number == n {
		return s.Generations[i], true
	}
	return Generation{}, false
}

// Worker finds a registered worker.
func (s *State) Worker(id string) (Worker, bool) {
	i := s.workerIndex(id)
	if i < 0 {
		return Worker{}, false
	}
	return s.Workers[i], true
}

func (s *State) workerIndex(id string) int {
	i := sort.Search(len(s.Workers), func(i int) bool { return s.Workers[i].ID >= id })
	if i < len(s.Workers) && s.Workers[i].ID == id {
		return i
	}
	return -1
}

// StepLog returns the committed step ranges in commit order.
func (s *State) StepLog() []StepRange {
	out := make([]StepRange, len(s.Log))
	for i, e := range s.Log {
		out[i] = e.StepRange
	}
	return out
}

// LatestCheckpoint is the newest checkpoint record.
func (s *State) LatestCheckpoint() (CheckpointRecord, bool) {
	if len(s.Checkpoints) == 0 {
		return CheckpointRecord{}, false
	}
	return s.Checkpoints[len(s.Checkpoints)-1], true
}

// Checkpoint finds a checkpoint record by id.
func (s *State) Checkpoint(id uint64) (CheckpointRecord, bool) {
	for _, c := range s.Checkpoints {
		if c.ID == id {
			return c, true
		}
	}
	return CheckpointRecord{}, false
}

// Blob returns the stored data of checkpoint id (Location "raft"). The slice
// must not be modified.
func (s *State) Blob(id uint64) ([]byte, bool) {
	for _, b := range s.Blobs {
		if b.ID == id {
			return b.Data, true
		}
	}
	return nil, false
}

// Clone returns a copy that shares nothing mutable with s except the
// checkpoint blobs and upload data, which are never modified in place.
func (s *State) Clone() State {
	c := *s
	if s.Job != nil {
		j := *s.Job
		j.Config = append(json.RawMessage(nil), s.Job.Config...)
		c.Job = &j
	}
	c.Workers = append([]Worker(nil), s.Workers...)
	c.Generations = make([]Generation, len(s.Generations))
	for i, g := range s.Generations {
		c.Generations[i] = g.Clone()
	}
	c.Log = append([]LogEntry(nil), s.Log...)
	c.Recent = append([]HashAt(nil), s.Recent...)
	c.LastReports = append([]WorkerStep(nil), s.LastReports...)
	c.Rewinds = append([]Rewind(nil), s.Rewinds...)
	c.Checkpoints = append([]CheckpointRecord(nil), s.Checkpoints...)
	c.Blobs = append([]Blob(nil), s.Blobs...)
	c.Uploads = append([]Upload(nil), s.Uploads...)
	c.Losses = append([]EpochLoss(nil), s.Losses...)
	if s.Relink != nil {
		r := *s.Relink
		c.Relink = &r
	}
	if s.RelinkStreak != nil {
		r := *s.RelinkStreak
		c.RelinkStreak = &r
	}
	return c
}

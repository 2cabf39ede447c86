package state

import (
	"fmt"
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
	OpRelink
)

var opNames = map[Op]string{
	OpSubmit: "submit", OpRegister: "register", OpLeave: "leave", OpDeregister: "deregister",
	OpSetGeneration: "set-generation", OpReportProgress: "report-progress",
	OpPutCheckpointChunk: "put-checkpoint-chunk", OpCommitCheckpoint: "commit-checkpoint",
	OpRewind: "rewind", OpFail: "fail", OpFinish: "finish", OpActivate: "activate",
	OpRelink: "relink",
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
	WorkerID     string            `json:"worker_id,omitempty"`     // Leave, Deregister, Activate, Relink
	Generation   *Generation       `json:"generation,omitempty"`    // SetGeneration; Activate and Relink: its Number
	Progress     *Progress         `json:"progress,omitempty"`      // ReportProgress
	UploadID     string            `json:"upload_id,omitempty"`     // PutCheckpointChunk, CommitCheckpoint
	Offset       int64             `json:"offset,omitempty"`        // PutCheckpointChunk
	Checkpoint   *CheckpointRecord `json:"checkpoint,omitempty"`    // CommitCheckpoint (ID assigned by Apply)
	GlobalStep   uint64            `json:"global_step,omitempty"`   // Rewind
	CheckpointID uint64            `json:"checkpoint_id,omitempty"` // Rewind
	Message      string            `json:"message,omitempty"`       // Fail, Relink
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
	case OpRelink:
		return nil, s.relink(c)
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

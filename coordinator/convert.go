package coordinator

import (
	"fmt"

	"github.com/causalrm/causalrm/coordinator/state"
	pb "github.com/causalrm/causalrm/proto/coordinatorpb"
)

func specToPB(j state.JobSpec) *pb.JobSpec {
	return &pb.JobSpec{Id: j.ID, Shards: int32(j.Shards), MinWorkers: int32(j.MinWorkers), ProgressEvery: int32(j.ProgressEvery),
		CheckpointEverySteps: int32(j.CheckpointEverySteps), CheckpointKeep: int32(j.CheckpointKeep), Config: j.Config,
		CheckpointEverySeconds: j.CheckpointEverySeconds}
}

func specFromPB(j *pb.JobSpec) state.JobSpec {
	if j == nil {
		return state.JobSpec{}
	}
	return state.JobSpec{ID: j.Id, Shards: int(j.Shards), MinWorkers: int(j.MinWorkers), ProgressEvery: int(j.ProgressEvery),
		CheckpointEverySteps: int(j.CheckpointEverySteps), CheckpointKeep: int(j.CheckpointKeep), Config: j.Config,
		CheckpointEverySeconds: j.GetCheckpointEverySeconds()}
}

func genToPB(g state.Generation) *pb.Generation {
	out := &pb.Generation{Number: g.Number, Cause: g.Cause.String(), TimeUnixNano: g.Time, Owner: make([]int32, len(g.Owner))}
	for _, m := range g.Members {
		out.Members = append(out.Members, &pb.Member{Id: m.ID, Addr: m.Addr})
	}
	for i, o := range g.Owner {
		out.Owner[i] = int32(o)
	}
	return out
}

// genFromPB converts a generation from the wire; a cause that does not
// parse (state.ParseCause) is an error wrapping state.ErrInvalidArgument.
func genFromPB(g *pb.Generation) (state.Generation, error) {
	cause, err := state.ParseCause(g.Cause)
	if err != nil {
		return state.Generation{}, fmt.Errorf("generation %d: %w", g.Number, err)
	}
	out := state.Generation{Number: g.Number, Cause: cause, Time: g.TimeUnixNano, Owner: make([]int, len(g.Owner))}
	for _, m := range g.Members {
		out.Members = append(out.Members, state.Member{ID: m.Id, Addr: m.Addr})
	}
	for i, o := range g.Owner {
		out.Owner[i] = int(o)
	}
	return out, nil
}

func statusToPB(s state.JobStatus) *pb.JobStatus {
	return &pb.JobStatus{Phase: string(s.Phase), Message: s.Message, RewardSha256: s.RewardSHA256, TimeUnixNano: s.Time}
}

func statusFromPB(s *pb.JobStatus) state.JobStatus {
	return state.JobStatus{Phase: state.JobPhase(s.Phase), Message: s.Message, RewardSHA256: s.RewardSha256, Time: s.TimeUnixNano}
}

func progressToPB(p state.Progress) *pb.ProgressRequest {
	out := &pb.ProgressRequest{WorkerId: p.WorkerID, Generation: p.Generation, GlobalStep: p.GlobalStep, Stage: p.Stage,
		Epoch: int32(p.Epoch), Step: int32(p.Step), ParamHash: p.ParamHash, RowsPerSec: p.RowsPerSec, TimeUnixNano: p.Time}
	for _, r := range p.Ranges {
		out.Ranges = append(out.Ranges, &pb.StepRange{Stage: r.Stage, Epoch: int32(r.Epoch), From: int32(r.From), To: int32(r.To)})
	}
	for _, l := range p.Losses {
		out.Losses = append(out.Losses, &pb.EpochLoss{Stage: l.Stage, Epoch: int32(l.Epoch), Train: l.Train, Val: l.Val})
	}
	return out
}

func progressFromPB(p *pb.ProgressRequest) state.Progress {
	out := state.Progress{WorkerID: p.WorkerId, Generation: p.Generation, GlobalStep: p.GlobalStep, Stage: p.Stage,
		Epoch: int(p.Epoch), Step: int(p.Step), ParamHash: p.ParamHash, RowsPerSec: p.RowsPerSec, Time: p.TimeUnixNano}
	for _, r := range p.Ranges {
		out.Ranges = append(out.Ranges, state.StepRange{Stage: r.Stage, Epoch: int(r.Epoch), From: int(r.From), To: int(r.To)})
	}
	for _, l := range p.Losses {
		out.Losses = append(out.Losses, state.EpochLoss{Stage: l.Stage, Epoch: int(l.Epoch), Train: l.Train, Val: l.Val})
	}
	return out
}

func recToPB(r state.CheckpointRecord) *pb.CheckpointRecord {
	return &pb.CheckpointRecord{Id: r.ID, GlobalStep: r.GlobalStep, Stage: r.Stage, Epoch: int32(r.Epoch), Step: int32(r.Step),
		Size: r.Size, Sha256: r.SHA256, Location: r.Location, TimeUnixNano: r.Time}
}

func recFromPB(r *pb.CheckpointRecord) state.CheckpointRecord {
	if r == nil {
		return state.CheckpointRecord{}
	}
	return state.CheckpointRecord{ID: r.Id, GlobalStep: r.GlobalStep, Stage: r.Stage, Epoch: int(r.Epoch), Step: int(r.Step),
		Size: r.Size, SHA256: r.Sha256, Location: r.Location, Time: r.TimeUnixNano}
}

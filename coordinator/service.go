package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	pb "github.com/causalrm/causalrm/proto/coordinatorpb"
	"github.com/hashicorp/raft"
)

// chunkBytes is the data size of one checkpoint raft entry and stream
// message: with its header an entry stays under 1 MiB.
const chunkBytes = 1<<20 - 4<<10

// ServerStatus is a member of the raft group as the leader sees it.
type ServerStatus struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	GRPCAddr string `json:"grpc_addr,omitempty"`
	Voter    bool   `json:"voter"`
	Leader   bool   `json:"leader"`
}

// Status is the job and group status (the Status RPC, `causalrm status`).
type Status struct {
	Leader         string                  `json:"leader"`
	LeaderAddr     string                  `json:"leader_addr"`
	Servers        []ServerStatus          `json:"servers"`
	Job            *state.JobSpec          `json:"job,omitempty"`
	JobStatus      state.JobStatus         `json:"job_status"`
	Generation     *state.Generation       `json:"generation,omitempty"`
	Watermark      state.Watermark         `json:"watermark"`
	RowsPerSec     float64                 `json:"rows_per_sec"`
	LastCheckpoint *state.CheckpointRecord `json:"last_checkpoint,omitempty"`
	CheckpointAge  time.Duration           `json:"checkpoint_age,omitempty"`
	Members        []state.Worker          `json:"members"` // every registered worker with its status
	Rewinds        []state.Rewind          `json:"rewinds,omitempty"`
	// Log is the committed step log: every step of every epoch of every
	// stage the job has run, each exactly once (the test oracle).
	Log []state.LogEntry `json:"log,omitempty"`
}

type service struct {
	pb.UnimplementedCoordinatorServer
	n *Node
}

func (s *service) SubmitJob(ctx context.Context, r *pb.SubmitJobRequest) (*pb.SubmitJobResponse, error) {
	spec := specFromPB(r.GetJob()).WithDefaults()
	if err := spec.Validate(); err != nil {
		return nil, toStatus(err)
	}
	_, err := s.n.apply(ctx, state.Command{Op: state.OpSubmit, Job: &spec})
	return &pb.SubmitJobResponse{}, toStatus(err)
}

func (s *service) GetJob(ctx context.Context, _ *pb.GetJobRequest) (*pb.GetJobResponse, error) {
	if _, err := s.n.leading(); err != nil {
		return nil, toStatus(err)
	}
	var j *state.JobSpec
	s.n.fsm.read(func(st *state.State) {
		if st.Job != nil {
			c := *st.Job
			j = &c
		}
	})
	if j == nil {
		return nil, toStatus(state.ErrNoJob)
	}
	return &pb.GetJobResponse{Job: specToPB(*j)}, nil
}

func (s *service) Register(ctx context.Context, r *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	w := r.GetWorker()
	if w == nil {
		return nil, toStatus(fmt.Errorf("%w: register without a worker", state.ErrInvalidArgument))
	}
	if _, err := s.n.apply(ctx, state.Command{Op: state.OpRegister, Member: &state.Member{ID: w.Id, Addr: w.Addr}}); err != nil {
		return nil, toStatus(err)
	}
	s.n.live.beat(w.Id)
	s.n.kickLoop()
	return &pb.RegisterResponse{}, nil
}

func (s *service) Leave(ctx context.Context, r *pb.LeaveRequest) (*pb.LeaveResponse, error) {
	if _, err := s.n.apply(ctx, state.Command{Op: state.OpLeave, WorkerID: r.WorkerId}); err != nil {
		return nil, toStatus(err)
	}
	s.n.kickLoop()
	return &pb.LeaveResponse{}, nil
}

func (s *service) Activate(ctx context.Context, r *pb.ActivateRequest) (*pb.ActivateResponse, error) {
	if _, err := s.n.apply(ctx, state.Command{Op: state.OpActivate, WorkerID: r.WorkerId,
		Generation: &state.Generation{Number: r.Generation}}); err != nil {
		return nil, toStatus(err)
	}
	return &pb.ActivateResponse{}, nil
}

func (s *service) ReportLinkFailure(ctx context.Context, r *pb.LinkFailureRequest) (*pb.LinkFailureResponse, error) {
	msg := r.Message
	if len(msg) > 512 {
		msg = msg[:512]
	}
	if _, err := s.n.apply(ctx, state.Command{Op: state.OpRelink, WorkerID: r.WorkerId,
		Generation: &state.Generation{Number: r.Generation}, Message: msg}); err != nil {
		return nil, toStatus(err)
	}
	s.n.log.Warn("link failure reported", "worker", r.WorkerId, "generation", r.Generation, "message", msg)
	s.n.kickLoop()
	return &pb.LinkFailureResponse{}, nil
}

// workerCheck returns why worker id may not heartbeat, nil if it may.
func (s *service) workerCheck(id string) (gen uint64, err error) {
	s.n.fsm.read(func(st *state.State) {
		gen = st.CurrentNumber()
		w, ok := st.Worker(id)
		switch {
		case !ok:
			err = fmt.Errorf("%w: %q is not registered", state.ErrUnknownWorker, id)
		case w.Status == state.WorkerGone:
			err = fmt.Errorf("%w: %q was removed from the job", state.ErrUnknownWorker, id)
		case st.Job != nil:
			err = st.JobError()
		}
	})
	return gen, err
}

func (s *service) Heartbeat(stream pb.Coordinator_HeartbeatServer) error {
	lctx, err := s.n.leading()
	if err != nil {
		return toStatus(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	id := first.WorkerId
	if _, err := s.workerCheck(id); err != nil {
		return toStatus(err)
	}
	beats := make(chan error, 1)
	go func() {
		for {
			b, err := stream.Recv()
			if err == nil && b.WorkerId != id {
				err = fmt.Errorf("%w: heartbeat stream of %q carries %q", state.ErrInvalidArgument, id, b.WorkerId)
			}
			select {
			case beats <- err:
			case <-stream.Context().Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var next error
	for {
		s.n.live.beat(id)
		gen, err := s.workerCheck(id)
		if err != nil {
			return toStatus(err)
		}
		if err := stream.Send(&pb.BeatAck{Generation: gen}); err != nil {
			next = err
		}
		if next == nil {
			select {
			case <-lctx.Done():
				return toStatus(s.n.notLeader())
			case next = <-beats:
			case <-stream.Context().Done():
				next = stream.Context().Err()
			}
		}
		if next != nil {
			// The stream broke (or the worker closed it) without a Leave: if
			// the worker is still a member or joining, it is dead now. (With
			// a registry, only its etcd key decides: a beat is a mere beat.)
			if lctx.Err() == nil && s.n.ctx.Err() == nil && s.n.cfg.Registry == "" {
				if _, err := s.workerCheck(id); err == nil {
					var st state.WorkerStatus
					s.n.fsm.read(func(x *state.State) { w, _ := x.Worker(id); st = w.Status })
					if st == state.WorkerActive || st == state.WorkerPending {
						s.n.log.Info("heartbeat stream broke", "worker", id, "err", next)
						s.n.live.breakStream(id)
						s.n.kickLoop()
					}
				}
			}
			if errors.Is(next, io.EOF) {
				return nil
			}
			return toStatus(next)
		}
	}
}

func (s *service) WatchGenerations(r *pb.WatchRequest, stream pb.Coordinator_WatchGenerationsServer) error {
	lctx, err := s.n.leading()
	if err != nil {
		return toStatus(err)
	}
	sent := r.After
	first := true
	var lastStatus state.JobStatus
	for {
		changed := s.n.fsm.watch()
		var gens []state.Generation
		var st state.JobStatus
		s.n.fsm.read(func(x *state.State) {
			st = x.Status
			cur := x.CurrentNumber()
			if first && sent == 0 && cur > 0 {
				sent = cur - 1
			}
			for _, g := range x.Generations {
				if g.Number > sent {
					gens = append(gens, g.Clone())
				}
			}
		})
		for _, g := range gens {
			if err := stream.Send(&pb.WatchEvent{Event: &pb.WatchEvent_Generation{Generation: genToPB(g)}}); err != nil {
				return err
			}
			sent = g.Number
		}
		if first || st != lastStatus {
			if err := stream.Send(&pb.WatchEvent{Event: &pb.WatchEvent_Status{Status: statusToPB(st)}}); err != nil {
				return err
			}
			lastStatus = st
		}
		first = false
		select {
		case <-changed:
		case <-lctx.Done():
			return toStatus(s.n.notLeader())
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func (s *service) ReportProgress(ctx context.Context, r *pb.ProgressRequest) (*pb.ProgressResponse, error) {
	p := progressFromPB(r)
	_, err := s.n.apply(ctx, state.Command{Op: state.OpReportProgress, Progress: &p})
	return &pb.ProgressResponse{}, toStatus(err)
}

func (s *service) PutCheckpoint(stream pb.Coordinator_PutCheckpointServer) error {
	ctx := stream.Context()
	if _, err := s.n.leading(); err != nil {
		return toStatus(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if first.Record == nil {
		return toStatus(fmt.Errorf("%w: the first checkpoint message carries no record", state.ErrInvalidArgument))
	}
	rec := recFromPB(first.Record)
	if rec.Location == "" {
		rec.Location = state.LocationRaft
	}
	upload := ""
	if rec.Location == state.LocationRaft {
		upload = fmt.Sprintf("%s-%d-%d", s.n.cfg.ID, time.Now().UnixNano(), s.n.uploads.Add(1))
		var off int64
		buf := make([]byte, 0, chunkBytes)
		flush := func() error {
			if len(buf) == 0 && off > 0 {
				return nil
			}
			_, err := s.n.apply(ctx, state.Command{Op: state.OpPutCheckpointChunk, UploadID: upload, Offset: off, Data: buf})
			off += int64(len(buf))
			buf = buf[:0]
			return err
		}
		data := first.Data
		for {
			for len(data) > 0 {
				k := min(len(data), chunkBytes-len(buf))
				buf = append(buf, data[:k]...)
				data = data[k:]
				if len(buf) == chunkBytes {
					if err := flush(); err != nil {
						return toStatus(err)
					}
				}
			}
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			data = m.Data
		}
		if err := flush(); err != nil {
			return toStatus(err)
		}
		if off != rec.Size {
			return toStatus(fmt.Errorf("%w: received %d checkpoint bytes, record says %d", state.ErrChecksumMismatch, off, rec.Size))
		}
	} else {
		for {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if len(m.Data) > 0 {
				return toStatus(fmt.Errorf("%w: checkpoint at %s carries data", state.ErrInvalidArgument, rec.Location))
			}
		}
	}
	v, err := s.n.apply(ctx, state.Command{Op: state.OpCommitCheckpoint, UploadID: upload, Checkpoint: &rec})
	if err != nil {
		return toStatus(err)
	}
	committed, _ := v.(state.CheckpointRecord)
	return stream.SendAndClose(&pb.PutCheckpointResponse{Record: recToPB(committed)})
}

func (s *service) GetCheckpoint(r *pb.GetCheckpointRequest, stream pb.Coordinator_GetCheckpointServer) error {
	if _, err := s.n.leading(); err != nil {
		return toStatus(err)
	}
	var rec state.CheckpointRecord
	var data []byte
	var ok bool
	s.n.fsm.read(func(st *state.State) {
		if r.Id == 0 {
			rec, ok = st.LatestCheckpoint()
		} else {
			rec, ok = st.Checkpoint(r.Id)
		}
		if ok && rec.Location == state.LocationRaft {
			data, _ = st.Blob(rec.ID) // immutable once committed
		}
	})
	if !ok {
		if r.Id != 0 {
			return toStatus(fmt.Errorf("%w: checkpoint %d", state.ErrNoCheckpoint, r.Id))
		}
		return toStatus(state.ErrNoCheckpoint)
	}
	first := &pb.CheckpointChunk{Record: recToPB(rec)}
	for {
		k := min(len(data), chunkBytes)
		if first != nil {
			first.Data = data[:k]
			if err := stream.Send(first); err != nil {
				return err
			}
			first = nil
		} else if err := stream.Send(&pb.CheckpointChunk{Data: data[:k]}); err != nil {
			return err
		}
		data = data[k:]
		if len(data) == 0 {
			return nil
		}
	}
}

func (s *service) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	if _, err := s.n.leading(); err != nil {
		return nil, toStatus(err)
	}
	st := s.n.status()
	b, err := json.Marshal(st)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.StatusResponse{StatusJson: b}, nil
}

func (n *Node) status() Status {
	var st Status
	st.Leader, st.LeaderAddr = n.Leader()
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			ss := ServerStatus{ID: string(s.ID), RaftAddr: string(s.Address), Voter: s.Suffrage == raft.Voter, Leader: string(s.ID) == st.Leader}
			for _, c := range n.cfg.Servers {
				if c.ID == ss.ID {
					ss.GRPCAddr = c.GRPCAddr
				}
			}
			if ss.ID == n.cfg.ID {
				ss.GRPCAddr = n.grpcAddr
			}
			st.Servers = append(st.Servers, ss)
		}
	}
	n.fsm.read(func(x *state.State) {
		if x.Job != nil {
			j := *x.Job
			st.Job = &j
		}
		st.JobStatus = x.Status
		if g, ok := x.Current(); ok {
			g = g.Clone()
			st.Generation = &g
		}
		st.Watermark = x.Watermark
		st.RowsPerSec = x.Watermark.RowsPerSec
		if c, ok := x.LatestCheckpoint(); ok {
			st.LastCheckpoint = &c
			st.CheckpointAge = time.Since(time.Unix(0, c.Time))
		}
		st.Members = append([]state.Worker(nil), x.Workers...)
		st.Rewinds = append([]state.Rewind(nil), x.Rewinds...)
		st.Log = append([]state.LogEntry(nil), x.Log...)
	})
	return st
}

func (s *service) FinishJob(ctx context.Context, r *pb.FinishJobRequest) (*pb.FinishJobResponse, error) {
	_, err := s.n.apply(ctx, state.Command{Op: state.OpFinish, RewardSHA: r.RewardSha256})
	return &pb.FinishJobResponse{}, toStatus(err)
}

func (s *service) FailJob(ctx context.Context, r *pb.FailJobRequest) (*pb.FailJobResponse, error) {
	msg := strings.TrimSpace(r.Message)
	_, err := s.n.apply(ctx, state.Command{Op: state.OpFail, Message: msg})
	return &pb.FailJobResponse{}, toStatus(err)
}

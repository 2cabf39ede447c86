package statuspage

import (
	"sort"

	"github.com/causalrm/causalrm/coordinator/state"
)

// View is /status.json: one snapshot of a coordinator's state as the page
// shows it. Times are unix milliseconds (0: never).
type View struct {
	Node       string `json:"node"`        // this coordinator's id
	Leader     string `json:"leader"`      // the leader's id ("": none known)
	LeaderAddr string `json:"leader_addr"` // its gRPC address
	IsLeader   bool   `json:"is_leader"`   // this coordinator leads
	Time       int64  `json:"time"`        // when the snapshot was taken

	Job    *Job   `json:"job"` // nil: no job submitted
	Status Status `json:"status"`

	// Progress is the newest committed progress report (the watermark).
	Progress Progress `json:"progress"`
	// StepRate is the global steps per second over the last RateWindow of
	// the sampled watermarks (0 when the newest is older than that).
	StepRate float64 `json:"step_rate"`
	// Samples are the watermarks the page has seen, oldest first.
	Samples []Sample `json:"samples"`

	// Members are every registered worker, the current generation's in
	// ring order first, then the others by id.
	Members []Member `json:"members"`
	// Counts is the number of members by status.
	Counts map[state.WorkerStatus]int `json:"counts"`

	// Generations are the newest MaxGenerations generations, oldest first.
	Generations      []Generation `json:"generations"`
	GenerationsTotal int          `json:"generations_total"`

	// Stages are the committed steps per stage and epoch, in the order the
	// stages ran, with the losses the workers reported for the completed
	// epochs.
	Stages []Stage `json:"stages"`

	Checkpoints []Checkpoint `json:"checkpoints"` // ascending id
	Rewinds     []Rewind     `json:"rewinds"`
}

// Job is the submitted job's elastic settings.
type Job struct {
	ID                   string `json:"id"`
	Shards               int    `json:"shards"`
	MinWorkers           int    `json:"min_workers"`
	ProgressEvery        int    `json:"progress_every"`
	CheckpointEverySteps int    `json:"checkpoint_every_steps"`
}

// Status is the job's phase.
type Status struct {
	Phase        string `json:"phase"` // "", pending, running, failed, done
	Message      string `json:"message,omitempty"`
	RewardSHA256 string `json:"reward_sha256,omitempty"`
	Time         int64  `json:"time"`
}

// Progress is a committed progress report.
type Progress struct {
	GlobalStep uint64  `json:"global_step"`
	Stage      string  `json:"stage"`
	Epoch      int     `json:"epoch"`
	Step       int     `json:"step"`
	WorkerID   string  `json:"worker_id"`
	RowsPerSec float64 `json:"rows_per_sec"`
	ParamHash  string  `json:"param_hash"`
	Time       int64   `json:"time"`
}

// Sample is one sampled watermark.
type Sample struct {
	Time       int64   `json:"time"`
	GlobalStep uint64  `json:"global_step"`
	Stage      string  `json:"stage"`
	Epoch      int     `json:"epoch"`
	WorkerID   string  `json:"worker_id"`
	RowsPerSec float64 `json:"rows_per_sec"`
}

// Member is a registered worker.
type Member struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	Status string `json:"status"` // pending, active, leaving, gone
	// Rank is its place in the current generation's ring (-1: not a
	// member), Shards the virtual shards it owns there.
	Rank       int    `json:"rank"`
	Shards     int    `json:"shards"`
	Registered int64  `json:"registered"`
	Updated    int64  `json:"updated"` // its status's last change
	Activated  uint64 `json:"activated"`
	// LastGlobalStep is the global step of its last progress report (0:
	// none).
	LastGlobalStep uint64 `json:"last_global_step"`
	// RowsPerSec is the job's rows/s in its newest report that the page
	// sampled as the watermark (the first report of a global step), and
	// RowsPerSecTime when that report was committed (0: none seen).
	RowsPerSec     float64 `json:"rows_per_sec"`
	RowsPerSecTime int64   `json:"rows_per_sec_time"`
}

// Generation is one membership of the job.
type Generation struct {
	Number  uint64   `json:"number"`
	Cause   string   `json:"cause"`   // "start", "join:w3", "restart,crash:w1", ...
	Label   string   `json:"label"`   // the cause's kind, as the metrics label it
	Members []string `json:"members"` // ring order
	Time    int64    `json:"time"`
}

// Stage is the committed steps of one stage.
type Stage struct {
	Name   string  `json:"name"`
	Steps  int     `json:"steps"`
	Epochs []Epoch `json:"epochs"` // ascending
}

// Epoch is the committed steps of one epoch of a stage, and its mean
// training loss and validation loss once a worker reported the epoch
// complete (nil before).
type Epoch struct {
	Epoch int      `json:"epoch"`
	Steps int      `json:"steps"`
	Train *float64 `json:"train"`
	Val   *float64 `json:"val"`
}

// Checkpoint is a stored checkpoint.
type Checkpoint struct {
	ID         uint64 `json:"id"`
	GlobalStep uint64 `json:"global_step"`
	Stage      string `json:"stage"`
	Epoch      int    `json:"epoch"`
	Step       int    `json:"step"`
	Size       int64  `json:"size"`
	Location   string `json:"location"`
	Time       int64  `json:"time"`
}

// Rewind is a rewind of the step log to a checkpoint.
type Rewind struct {
	From         uint64 `json:"from"`
	To           uint64 `json:"to"`
	CheckpointID uint64 `json:"checkpoint_id"`
	Time         int64  `json:"time"`
}

// Snapshot is the page's view of the source's state now (and records its
// watermark as a sample).
func (p *Page) Snapshot() View {
	st := p.src.State()
	p.sample(&st)
	v := view(&st)
	v.Node = p.src.ID()
	v.Leader, v.LeaderAddr = p.src.Leader()
	v.IsLeader = v.Leader != "" && v.Leader == v.Node
	now := p.now()
	v.Time = now.UnixMilli()
	p.mu.Lock()
	v.Samples = append([]Sample{}, p.samples...)
	p.mu.Unlock()
	v.StepRate = stepRate(v.Samples, v.Time)
	rates := map[string]Sample{}
	for _, s := range v.Samples {
		rates[s.WorkerID] = s
	}
	for i := range v.Members {
		if s, ok := rates[v.Members[i].ID]; ok {
			v.Members[i].RowsPerSec, v.Members[i].RowsPerSecTime = s.RowsPerSec, s.Time
		}
	}
	return v
}

// stepRate is the global steps per second between the oldest and the
// newest sample of the last RateWindow (after any rewind), 0 when the
// newest sample is older than the window at now.
func stepRate(ss []Sample, now int64) float64 {
	n := len(ss)
	if n < 2 {
		return 0
	}
	last := ss[n-1]
	window := RateWindow.Milliseconds()
	if now-last.Time > window {
		return 0
	}
	first := last
	for i := n - 2; i >= 0; i-- {
		s := ss[i]
		if last.Time-s.Time > window || s.GlobalStep > first.GlobalStep || s.Time > first.Time {
			break
		}
		first = s
	}
	if last.Time <= first.Time {
		return 0
	}
	return float64(last.GlobalStep-first.GlobalStep) / (float64(last.Time-first.Time) / 1000)
}

// view is the part of the snapshot that comes from the state alone.
func view(st *state.State) View {
	v := View{
		Status: Status{Phase: string(st.Status.Phase), Message: st.Status.Message, RewardSHA256: st.Status.RewardSHA256,
			Time: ms(st.Status.Time)},
		Counts: map[state.WorkerStatus]int{},
	}
	if j := st.Job; j != nil {
		v.Job = &Job{ID: j.ID, Shards: j.Shards, MinWorkers: j.MinWorkers, ProgressEvery: j.ProgressEvery,
			CheckpointEverySteps: j.CheckpointEverySteps}
	}
	wm := st.Watermark
	v.Progress = Progress{GlobalStep: wm.GlobalStep, Stage: wm.Stage, Epoch: wm.Epoch, Step: wm.Step, WorkerID: wm.WorkerID,
		RowsPerSec: wm.RowsPerSec, ParamHash: wm.ParamHash, Time: ms(wm.Time)}

	cur, _ := st.Current()
	last := map[string]uint64{}
	for _, r := range st.LastReports {
		last[r.WorkerID] = r.GlobalStep
	}
	v.Members = []Member{}
	for _, w := range st.Workers {
		m := Member{ID: w.ID, Addr: w.Addr, Status: string(w.Status), Rank: cur.Index(w.ID), Registered: ms(w.Registered),
			Updated: ms(w.Updated), Activated: w.Activated, LastGlobalStep: last[w.ID]}
		m.Shards = len(cur.ShardsOf(w.ID))
		v.Members = append(v.Members, m)
		v.Counts[w.Status]++
	}
	sort.SliceStable(v.Members, func(i, j int) bool {
		a, b := v.Members[i], v.Members[j]
		if (a.Rank >= 0) != (b.Rank >= 0) {
			return a.Rank >= 0
		}
		if a.Rank >= 0 {
			return a.Rank < b.Rank
		}
		return a.ID < b.ID
	})

	v.GenerationsTotal = len(st.Generations)
	gens := st.Generations
	if len(gens) > MaxGenerations {
		gens = gens[len(gens)-MaxGenerations:]
	}
	v.Generations = []Generation{}
	for _, g := range gens {
		ids := make([]string, len(g.Members))
		for i, m := range g.Members {
			ids[i] = m.ID
		}
		v.Generations = append(v.Generations, Generation{Number: g.Number, Cause: g.Cause.String(), Label: g.Cause.Label(),
			Members: ids, Time: ms(g.Time)})
	}

	v.Stages = []Stage{}
	at := map[string]int{}
	for _, e := range st.Log {
		i, ok := at[e.Stage]
		if !ok {
			i = len(v.Stages)
			at[e.Stage] = i
			v.Stages = append(v.Stages, Stage{Name: e.Stage})
		}
		s := &v.Stages[i]
		n := e.To - e.From
		s.Steps += n
		j := sort.Search(len(s.Epochs), func(j int) bool { return s.Epochs[j].Epoch >= e.Epoch })
		if j == len(s.Epochs) || s.Epochs[j].Epoch != e.Epoch {
			s.Epochs = append(s.Epochs, Epoch{})
			copy(s.Epochs[j+1:], s.Epochs[j:])
			s.Epochs[j] = Epoch{Epoch: e.Epoch}
		}
		s.Epochs[j].Steps += n
	}
	for _, l := range st.Losses {
		i, ok := at[l.Stage]
		if !ok {
			continue
		}
		es := v.Stages[i].Epochs
		if j := sort.Search(len(es), func(j int) bool { return es[j].Epoch >= l.Epoch }); j < len(es) && es[j].Epoch == l.Epoch {
			es[j].Train, es[j].Val = &l.Train, &l.Val
		}
	}

	v.Checkpoints = []Checkpoint{}
	for _, c := range st.Checkpoints {
		v.Checkpoints = append(v.Checkpoints, Checkpoint{ID: c.ID, GlobalStep: c.GlobalStep, Stage: c.Stage, Epoch: c.Epoch,
			Step: c.Step, Size: c.Size, Location: c.Location, Time: ms(c.Time)})
	}
	v.Rewinds = []Rewind{}
	for _, r := range st.Rewinds {
		v.Rewinds = append(v.Rewinds, Rewind{From: r.From, To: r.To, CheckpointID: r.CheckpointID, Time: ms(r.Time)})
	}
	return v
}

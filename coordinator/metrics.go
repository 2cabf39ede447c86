package coordinator

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/telemetry"
)

// nodeMetrics are what a node measures as it runs (the rest of its
// metrics are read from raft and the replicated state at scrape time).
type nodeMetrics struct {
	commit  prometheus.Histogram
	mu      sync.Mutex
	changes map[string]float64 // generations this node committed as leader, by cause
}

func newNodeMetrics() *nodeMetrics {
	m := &nodeMetrics{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: telemetry.Namespace, Name: "raft_commit_seconds",
			Help:    "Time to commit one command through raft on this node as leader (raft Apply until the FSM applied it), failures included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		changes: map[string]float64{},
	}
	for _, c := range telemetry.GenerationCauses {
		m.changes[c] = 0
	}
	return m
}

// applied records one n.apply: its duration and, for a committed
// generation, its cause.
func (m *nodeMetrics) applied(c *state.Command, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.commit.Observe(d.Seconds())
	if err == nil && c.Op == state.OpSetGeneration && c.Generation != nil {
		m.mu.Lock()
		m.changes[c.Generation.Cause.Label()]++
		m.mu.Unlock()
	}
}

var (
	cRaftState  = cdesc("raft_state", "1 for this node's current raft state, 0 for the others.", "state")
	cLastIndex  = cdesc("raft_last_index", "The last index in this node's raft log (stable storage or the latest snapshot).")
	cGeneration = cdesc("generation", "The job's current generation number in the replicated state (0 before the first).")
	cGenChanges = cdesc("generation_changes_total", "Generations this node committed while it led, by cause.", "cause")
	cWorkers    = cdesc("workers", "Registered workers in the replicated state, by status.", "status")
	cJobStep    = cdesc("job_global_step", "The job's committed progress watermark: the newest global step reported.")
	cCkptAge    = cdesc("checkpoint_age_seconds", "Seconds since the newest checkpoint record (absent before the first).")
	cRewinds    = cdesc("rewinds_total", "Rewinds of the job's step log to a checkpoint (full restarts) in the replicated state.")
	cLeader     = cdesc("raft_leader_known", "1 when this node knows the raft group's leader.")
)

func cdesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(telemetry.Namespace+"_"+name, help, labels, nil)
}

// nodeCollector exports a node's metrics.
type nodeCollector struct{ n *Node }

// RegisterMetrics registers the node's Prometheus metrics with reg.
func (n *Node) RegisterMetrics(reg prometheus.Registerer) error {
	if err := reg.Register(n.metrics.commit); err != nil {
		return err
	}
	return reg.Register(nodeCollector{n})
}

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cRaftState, cLastIndex, cGeneration, cGenChanges, cWorkers, cJobStep, cCkptAge, cRewinds, cLeader} {
		ch <- d
	}
}

var raftStates = []raft.RaftState{raft.Leader, raft.Follower, raft.Candidate, raft.Shutdown}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	cur := n.raft.State()
	for _, s := range raftStates {
		v := 0.0
		if s == cur {
			v = 1
		}
		gauge(cRaftState, v, strings.ToLower(s.String()))
	}
	gauge(cLastIndex, float64(n.raft.LastIndex()))
	known := 0.0
	if id, _ := n.Leader(); id != "" {
		known = 1
	}
	gauge(cLeader, known)
	n.metrics.mu.Lock()
	for cause, v := range n.metrics.changes {
		counter(cGenChanges, v, cause)
	}
	n.metrics.mu.Unlock()

	workers := map[state.WorkerStatus]float64{state.WorkerPending: 0, state.WorkerActive: 0, state.WorkerLeaving: 0, state.WorkerGone: 0}
	var gen, step, rewinds float64
	var ckptTime int64
	n.fsm.read(func(s *state.State) {
		gen = float64(s.CurrentNumber())
		for _, w := range s.Workers {
			workers[w.Status]++
		}
		step = float64(s.Watermark.GlobalStep)
		rewinds = float64(len(s.Rewinds))
		if ck, ok := s.LatestCheckpoint(); ok {
			ckptTime = ck.Time
		}
	})
	gauge(cGeneration, gen)
	for st, v := range workers {
		gauge(cWorkers, v, string(st))
	}
	gauge(cJobStep, step)
	if ckptTime != 0 {
		gauge(cCkptAge, max(time.Since(time.Unix(0, ckptTime)).Seconds(), 0))
	}
	counter(cRewinds, rewinds)
}

// Ready is nil while the node is a member of a raft group with a known
// leader (/readyz).
func (n *Node) Ready() error {
	if n.raft.State() == raft.Shutdown {
		return errors.New("raft is shut down")
	}
	id, _ := n.Leader()
	if id == "" {
		return errors.New("no known raft leader")
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("raft configuration: %w", err)
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.cfg.ID {
			return nil
		}
	}
	return fmt.Errorf("not a member of the raft configuration (leader %s)", id)
}

package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func gatherRaftState(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "causalrm_raft_state" {
			continue
		}
		for _, m := range f.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return out
}

// Three nodes: one reports raft_state leader, the others follower; all
// are ready; a closed node reports shutdown and is not ready.
func TestMetricsRaftStateAndReady(t *testing.T) {
	c := startCluster(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	li := c.leader(ctx)
	regs := make([]*prometheus.Registry, len(c.nodes))
	for i, n := range c.nodes {
		regs[i] = prometheus.NewRegistry()
		if err := n.RegisterMetrics(regs[i]); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "every node ready", func() bool {
		for _, n := range c.nodes {
			if n.Ready() != nil {
				return false
			}
		}
		return true
	})
	for i := range c.nodes {
		st := gatherRaftState(t, regs[i])
		want := "follower"
		if i == li {
			want = "leader"
		}
		if len(st) != 4 || st[want] != 1 || st["leader"]+st["follower"]+st["candidate"]+st["shutdown"] != 1 {
			t.Fatalf("node %d (want %s): raft_state %v", i, want, st)
		}
	}
	f := (li + 1) % len(c.nodes)
	c.nodes[f].Close()
	if st := gatherRaftState(t, regs[f]); st["shutdown"] != 1 {
		t.Fatalf("closed node: raft_state %v", st)
	}
	if err := c.nodes[f].Ready(); err == nil {
		t.Fatal("closed node ready")
	}
}

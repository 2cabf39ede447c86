package worker

import (
	"math"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/causalrm/causalrm/coordinator/state"
)

// gathered sums the samples of each metric (by name and one label pair,
// "name{k=v}", or by name alone) of one Gather.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			v := value(m)
			out[f.GetName()] += v
			for _, l := range m.GetLabel() {
				out[f.GetName()+"{"+l.GetName()+"="+l.GetValue()+"}"] += v
			}
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	}
	return math.NaN()
}

// A crash mid-stage: the survivor's metrics count the start and the crash
// generations, the reconciliation, and the traffic of both its rings.
func TestElasticMetricsThroughACrash(t *testing.T) {
	fc := newFakeCoord()
	shards := elasticConfig().Shards
	lis, addrs := listeners(t, "a", "b", "c")
	nodes := map[string]*elasticNode{}
	regs := map[string]*prometheus.Registry{}
	for _, id := range []string{"a", "b", "c"} {
		nodes[id] = startNode(t, fc, id, lis[id])
		regs[id] = prometheus.NewRegistry()
		m, err := NewMetrics(regs[id])
		if err != nil {
			t.Fatal(err)
		}
		nodes[id].e.cfg.Metrics = m
		if err := m.Ready(); err == nil {
			t.Fatalf("%s ready before a ring", id)
		}
	}
	var once sync.Once
	var before map[string]float64
	fc.onReport = func(p state.Progress) {
		if p.WorkerID == "a" && p.GlobalStep >= 20 {
			once.Do(func() {
				before = gathered(t, regs["a"])
				if err := nodes["a"].e.cfg.Metrics.Ready(); err != nil {
					t.Errorf("a not ready while training: %v", err)
				}
				nodes["c"].cancel()
				nodes["c"].host.Close()
				fc.commit([]string{"a", "b"}, addrs, shards, "crash:c")
			})
		}
	}
	runToEnd(t, fc, nodes, addrs, shards, "a", "b")
	got := gathered(t, regs["a"])
	t.Logf("a at step 20: %v", before)
	t.Logf("a at the end: %v", got)
	checks := []struct {
		name string
		ok   bool
	}{
		{"generation 2", got["causalrm_generation"] == 2},
		{"one start change", got["causalrm_generation_changes_total{cause=start}"] == 1},
		{"one crash change", got["causalrm_generation_changes_total{cause=crash}"] == 1},
		{"a reconciliation", got["causalrm_reconciliations_total"] >= 1 && before["causalrm_reconciliations_total"] == 0},
		{"global step grew", got["causalrm_worker_global_step"] > before["causalrm_worker_global_step"] && before["causalrm_worker_global_step"] >= 20},
		{"rows/s", got["causalrm_worker_rows_per_second"] > 0},
		{"loss", got["causalrm_worker_loss"] > 0},
		{"bytes sent grew past the first ring's", got["causalrm_allreduce_bytes_total{direction=sent}"] > before["causalrm_allreduce_bytes_total{direction=sent}"] && before["causalrm_allreduce_bytes_total{direction=sent}"] > 0},
		{"bytes received", got["causalrm_allreduce_bytes_total{codec=s2}"] > got["causalrm_allreduce_bytes_total{direction=sent}"]},
		{"ops grew", got["causalrm_allreduce_ops_total"] > before["causalrm_allreduce_ops_total"]},
		{"seconds", got["causalrm_allreduce_seconds_total{codec=s2}"] > 0},
		{"ready", got["causalrm_worker_ready"] == 1},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("a's metrics: %s does not hold", c.name)
		}
	}
	for _, n := range nodes {
		n.e.Close()
		n.host.Close()
	}
	if err := nodes["a"].e.cfg.Metrics.Ready(); err == nil {
		t.Error("a still ready after Close")
	}
}

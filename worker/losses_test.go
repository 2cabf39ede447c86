package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"testing"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/trainer"
)

// Every worker reports every completed epoch of every stage once, with the
// one-process run's training and validation losses (the status page's
// curves), the last epoch of each stage included.
func TestElasticReportsEpochLosses(t *testing.T) {
	ref, err := trainer.New(elasticConfig(), elasticData(t), trainer.Local{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ref.Reward(context.Background(), elasticConfig().Method); err != nil {
		t.Fatal(err)
	}
	var want []string
	for name, res := range ref.Stages {
		for i := range res.Train {
			if !math.IsNaN(res.Train[i]) && !math.IsInf(res.Train[i], 0) && !math.IsNaN(res.Val[i]) && !math.IsInf(res.Val[i], 0) {
				want = append(want, fmt.Sprintf("%s/%d %x %x", name, i+1, math.Float64bits(res.Train[i]), math.Float64bits(res.Val[i])))
			}
		}
	}
	sort.Strings(want)
	if len(want) < 4 {
		t.Fatalf("the reference run has %d epochs with losses", len(want))
	}

	fc := newFakeCoord()
	lis, addrs := listeners(t, "a", "b")
	nodes := []*elasticNode{startNode(t, fc, "a", lis["a"]), startNode(t, fc, "b", lis["b"])}
	fc.commit([]string{"a", "b"}, addrs, elasticConfig().Shards, "start")
	for _, n := range nodes {
		n.run(context.Background())
	}
	for _, n := range nodes {
		if err := <-n.done; err != nil {
			t.Fatalf("%s: %v", n.id, err)
		}
		n.e.Close()
		n.host.Close()
	}
	got := map[string][]string{}
	fc.mu.Lock()
	for _, p := range fc.reports {
		for _, l := range p.Losses {
			got[p.WorkerID] = append(got[p.WorkerID], fmt.Sprintf("%s/%d %x %x", l.Stage, l.Epoch, math.Float64bits(l.Train), math.Float64bits(l.Val)))
		}
	}
	fc.mu.Unlock()
	for _, id := range []string{"a", "b"} {
		g := got[id]
		sort.Strings(g)
		if fmt.Sprint(g) != fmt.Sprint(want) {
			t.Fatalf("worker %s reported %d epoch losses:\n%v\nthe one-process run has %d:\n%v", id, len(g), g, len(want), want)
		}
	}
}

// A report that fails carries its epochs into the next; the queue keeps
// the newest state.MaxReportLosses, and non-finite losses are skipped.
func TestProgressLossQueue(t *testing.T) {
	p := &progress{}
	p.epochs("s", []float64{1, math.NaN(), 3}, []float64{0.5, 0.5, math.Inf(1)})
	p.epochs("s", []float64{1, math.NaN(), 3, 4}, []float64{0.5, 0.5, math.Inf(1), 2})
	if fmt.Sprint(p.losses) != "[{s 1 1 0.5} {s 4 4 2}]" {
		t.Fatalf("queued %v", p.losses)
	}
	p.inflight = &sending{p: state.Progress{Losses: p.losses}, done: make(chan struct{}), err: fmt.Errorf("unavailable")}
	close(p.inflight.done)
	p.losses = []state.EpochLoss{{Stage: "t", Epoch: 1}}
	p.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := p.collect(true); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p.losses) != "[{s 1 1 0.5} {s 4 4 2} {t 1 0 0}]" {
		t.Fatalf("after a failed report: %v", p.losses)
	}
	long := make([]float64, state.MaxReportLosses+10)
	p.epochs("u", long, long)
	if n := len(p.losses); n != state.MaxReportLosses || p.losses[n-1] != (state.EpochLoss{Stage: "u", Epoch: state.MaxReportLosses + 10}) {
		t.Fatalf("%d queued, last %v", n, p.losses[n-1])
	}
}

package trainer

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/shard"
)

// calibCase is 20 validation rows (p_hat, o) in row order, with four rows
// tied at the clip 0.1 across a bin boundary, and the deciles computed by
// hand: rank the rows by p_hat (ties by row index) and put two in each bin.
func calibCase() (p []float64, o []uint8, want []CalibBin) {
	p = []float64{0.9, 0.1, 0.5, 0.1, 0.3, 0.7, 0.1, 0.2, 0.6, 0.8, 0.4, 0.1, 0.95, 0.25, 0.55, 0.35, 0.65, 0.45, 0.85, 0.75}
	o = []uint8{1, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 0}
	want = []CalibBin{
		{Lo: 0.1, Hi: 0.1, MeanPred: 0.1, ObsRate: 0, N: 2},      // rows 1, 3
		{Lo: 0.1, Hi: 0.1, MeanPred: 0.1, ObsRate: 0.5, N: 2},    // rows 6, 11
		{Lo: 0.2, Hi: 0.25, MeanPred: 0.225, ObsRate: 0.5, N: 2}, // rows 7, 13
		{Lo: 0.3, Hi: 0.35, MeanPred: 0.325, ObsRate: 0, N: 2},   // rows 4, 15
		{Lo: 0.4, Hi: 0.45, MeanPred: 0.425, ObsRate: 0, N: 2},   // rows 10, 17
		{Lo: 0.5, Hi: 0.55, MeanPred: 0.525, ObsRate: 1, N: 2},   // rows 2, 14
		{Lo: 0.6, Hi: 0.65, MeanPred: 0.625, ObsRate: 0.5, N: 2}, // rows 8, 16
		{Lo: 0.7, Hi: 0.75, MeanPred: 0.725, ObsRate: 0.5, N: 2}, // rows 5, 19
		{Lo: 0.8, Hi: 0.85, MeanPred: 0.825, ObsRate: 1, N: 2},   // rows 9, 18
		{Lo: 0.9, Hi: 0.95, MeanPred: 0.925, ObsRate: 1, N: 2},   // rows 0, 12
	}
	return p, o, want
}

func calibTrainer(p []float64, o []uint8, red Reducer) *Trainer {
	va := &shard.Split{Name: "val", N: len(p), O: o}
	return &Trainer{cfg: Config{Shards: 4}, ds: &shard.Dataset{Val: va}, red: red, PHatVal: slices.Clone(p)}
}

func sameCalib(got, want []CalibBin) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d bins, want %d: %+v", len(got), len(want), got)
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.N != w.N || g.Lo != w.Lo || g.Hi != w.Hi || math.Abs(g.MeanPred-w.MeanPred) > 1e-6 || g.ObsRate != w.ObsRate {
			return fmt.Errorf("bin %d = %+v, want %+v", i, g, w)
		}
	}
	return nil
}

// The propensity calibration's bins are equal-count deciles of p_hat over
// the validation rows, each with its predicted range, and several holders
// owning disjoint shards get the very bins one process gets.
func TestCalibrationEqualCountDeciles(t *testing.T) {
	ctx := context.Background()
	p, o, want := calibCase()
	one, err := calibTrainer(p, o, Local{}).calibration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameCalib(one, want); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{2, 3} {
		g := newMemGroup(n)
		got := make([][]CalibBin, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for rank := 0; rank < n; rank++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tr := calibTrainer(p, o, g.member(rank))
				var mine []int
				for s := rank; s < 4; s += n {
					mine = append(mine, s)
				}
				if errs[rank] = tr.Own(mine); errs[rank] == nil {
					got[rank], errs[rank] = tr.calibration(ctx)
				}
			}()
		}
		wg.Wait()
		for rank := range n {
			if errs[rank] != nil {
				t.Fatalf("%d holders, rank %d: %v", n, rank, errs[rank])
			}
			if !slices.Equal(got[rank], one) {
				t.Fatalf("%d holders, rank %d: bins %+v, one process %+v", n, rank, got[rank], one)
			}
		}
	}
	// Fewer rows than ten: one row per bin.
	few, err := calibTrainer([]float64{0.4, 0.2, 0.3}, []uint8{1, 0, 1}, Local{}).calibration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sameCalib(few, []CalibBin{{0.2, 0.2, 0.2, 0, 1}, {0.3, 0.3, 0.3, 1, 1}, {0.4, 0.4, 0.4, 1, 1}}); err != nil {
		t.Fatal(err)
	}
}

// A learned propensity model's calibration on real (generated) data:
// every bin holds a tenth of the validation rows (to one row), the ranges
// are ordered and do not overlap, and two holders get the same bins.
func TestCalibrationPipelineHolders(t *testing.T) {
	cfg := smallConfig()
	cfg.Shards = 8
	cfg.Propensity = "learn"
	ctx := context.Background()
	run := func(red Reducer, own []int) ([]CalibBin, int, error) {
		ds := smallData(t, 600, 8, 5)
		tr, err := New(cfg, ds, red, nil)
		if err != nil {
			return nil, 0, err
		}
		if own != nil {
			if err := tr.Own(own); err != nil {
				return nil, 0, err
			}
		}
		if err := tr.Prepare(ctx, causal.IPS); err != nil {
			return nil, 0, err
		}
		return tr.Calib, ds.Val.N, nil
	}
	one, nval, err := run(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(one) != 10 {
		t.Fatalf("%d bins", len(one))
	}
	total := 0
	for i, b := range one {
		total += b.N
		if b.N < nval/10 || b.N > nval/10+1 {
			t.Errorf("bin %d holds %d of %d rows", i, b.N, nval)
		}
		if b.Lo > b.MeanPred || b.MeanPred > b.Hi || i > 0 && b.Lo < one[i-1].Hi {
			t.Errorf("bin %d: range %v-%v, mean %v, previous hi %v", i, b.Lo, b.Hi, b.MeanPred, one[max(i-1, 0)].Hi)
		}
	}
	if total != nval {
		t.Errorf("bins hold %d rows, val has %d", total, nval)
	}
	g := newMemGroup(2)
	got := make([][]CalibBin, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for rank := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []int
			for s := rank; s < cfg.Shards; s += 2 {
				mine = append(mine, s)
			}
			got[rank], _, errs[rank] = run(g.member(rank), mine)
		}()
	}
	wg.Wait()
	for rank := range 2 {
		if errs[rank] != nil {
			t.Fatal(errs[rank])
		}
		if !slices.Equal(got[rank], one) {
			t.Fatalf("rank %d: %+v, one process %+v", rank, got[rank], one)
		}
	}
}

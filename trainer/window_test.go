package trainer

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/causalrm/causalrm/causal"
)

func TestTrailingMeanHand(t *testing.T) {
	v := []float64{4, 2, 6, 8}
	for _, c := range []struct {
		n, w int
		want float64
	}{{1, 5, 4}, {2, 5, 3}, {4, 5, 5}, {4, 2, 7}, {4, 1, 8}, {3, 3, 4}} {
		if got := trailingMean(v[:c.n], c.w); got != c.want {
			t.Errorf("trailingMean(%v, %d) = %v, want %v", v[:c.n], c.w, got, c.want)
		}
	}
}

// The reward stage keeps the epoch whose trailing mean of the validation
// estimate (MonitorWindow epochs ending at it) is the first lowest, and
// reports that epoch's own value; window 1 keeps the lowest epoch. Checked
// against the recorded per-epoch values, recomputed here.
func TestMonitorWindowSelects(t *testing.T) {
	for _, w := range []int{1, 3, 5} {
		cfg := smallConfig()
		cfg.Hidden, cfg.MaxEpochs, cfg.Patience, cfg.LR = []int{16, 8}, 25, 25, 3e-3
		cfg.MonitorWindow = w
		tr, err := New(cfg, smallData(t, 1500, 16, 8), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := tr.Reward(context.Background(), causal.CausalDR)
		if err != nil {
			t.Fatal(err)
		}
		best, bestMean := 0, math.Inf(1)
		for e := 1; e <= len(res.Val); e++ {
			sum, n := 0.0, 0
			for i := max(0, e-w); i < e; i++ {
				sum += res.Val[i]
				n++
			}
			if res.Val[e-1] >= 0 && sum/float64(n) < bestMean {
				best, bestMean = e, sum/float64(n)
			}
		}
		if res.BestEpoch != best || res.BestVal != res.Val[best-1] {
			t.Fatalf("window %d: kept epoch %d (%v), want %d (its value %v; trailing mean %v) of %v", w, res.BestEpoch, res.BestVal,
				best, res.Val[best-1], bestMean, res.Val)
		}
		t.Logf("window %d: epoch %d of %d", w, best, len(res.Val))
	}
	cfg := DefaultConfig()
	if cfg.MonitorWindow != DefaultMonitorWindow || cfg.monitorWindow() != DefaultMonitorWindow {
		t.Fatalf("default window %d", cfg.MonitorWindow)
	}
	var fe *FieldError
	for _, bad := range []int{-1, MaxMonitorWindow + 1} {
		cfg.MonitorWindow = bad
		if err := cfg.Validate(); !errors.As(err, &fe) || fe.Field != "monitor_window" {
			t.Fatalf("monitor_window %d: %v", bad, err)
		}
	}
}

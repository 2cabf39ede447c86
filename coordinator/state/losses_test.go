package state

import (
	"errors"
	"math"
	"reflect"
	"testing"
)

// Epoch losses ride on progress reports: the first report of a stage's
// epoch is kept (every holder computes the same values, and a rewound run
// reports them again), a duplicate or an old report still adds new ones,
// bad values are refused by field, and the state keeps the newest
// MaxLosses. They survive a snapshot round trip and Clone.
func TestEpochLosses(t *testing.T) {
	s := running(t)
	report := func(w string, global uint64, ls ...EpochLoss) error {
		_, err := s.Apply(Command{Op: OpReportProgress, Progress: &Progress{WorkerID: w, Generation: 1, GlobalStep: global, Losses: ls}})
		return err
	}
	if err := report("a", 10, EpochLoss{"ps", 1, 0.7, 0.6}); err != nil {
		t.Fatal(err)
	}
	// b reports the same epoch with other values (impossible in a correct
	// run): the first stays. Then a second epoch, in a duplicate report.
	if err := report("b", 10, EpochLoss{"ps", 1, 9, 9}, EpochLoss{"ps", 2, 0.5, 0.45}); err != nil {
		t.Fatal(err)
	}
	if err := report("a", 5, EpochLoss{"noise", 1, 0.3, -0.1}); err != nil {
		t.Fatal(err)
	}
	want := []EpochLoss{{"ps", 1, 0.7, 0.6}, {"ps", 2, 0.5, 0.45}, {"noise", 1, 0.3, -0.1}}
	if !reflect.DeepEqual(s.Losses, want) {
		t.Fatalf("losses %+v, want %+v", s.Losses, want)
	}
	for _, bad := range []EpochLoss{{"", 1, 0, 0}, {"ps", 0, 0, 0}, {"ps", 3, math.NaN(), 0}, {"ps", 3, 0, math.Inf(1)}} {
		if err := report("a", 30, bad); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("loss %+v: %v, want invalid argument", bad, err)
		}
	}
	if err := report("a", 30, make([]EpochLoss, MaxReportLosses+1)...); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("%d losses in one report: %v", MaxReportLosses+1, err)
	}
	if !reflect.DeepEqual(s.Losses, want) {
		t.Fatalf("a refused report changed the losses: %+v", s.Losses)
	}

	c := s.Clone()
	s.Losses[0].Train = 42
	if !reflect.DeepEqual(c.Losses, want) {
		t.Fatalf("clone shares the losses: %+v", c.Losses)
	}
	if back := roundTrip(t, &c); !reflect.DeepEqual(back.Losses, want) {
		t.Fatalf("round trip: %+v", back.Losses)
	}

	// The oldest go first beyond MaxLosses.
	global := uint64(100)
	for lo := 1; lo <= MaxLosses; lo += MaxReportLosses {
		var ls []EpochLoss
		for e := lo; e < lo+MaxReportLosses; e++ {
			ls = append(ls, EpochLoss{"reward", e, float64(e), 0})
		}
		global++
		if err := report("a", global, ls...); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.Losses); n != MaxLosses || s.Losses[0].Stage != "reward" || s.Losses[0].Epoch != 1 || s.Losses[n-1].Epoch != MaxLosses {
		t.Fatalf("after %d more: %d losses, first %+v, last %+v", MaxLosses, n, s.Losses[0], s.Losses[n-1])
	}
}

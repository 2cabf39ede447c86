package chaos

import (
	"strings"
	"testing"
)

func TestParsePauses(t *testing.T) {
	log := `time=2026-12-07T03:45:40.569Z level=INFO msg="collective call failed; reconciling" worker=w2 call=7
time=2026-12-07T03:45:40.569Z level=INFO msg="generation change pause" worker=w2 generation=2 cause=join:w3 pause=66ms
time=2026-12-07T03:45:46.197Z level=INFO msg="generation change pause" worker=w2 generation=3 cause=crash:w1,join:w4 pause=1.5s
time=2026-12-07T03:45:47.000Z level=INFO msg="generation change pause" worker=w2 generation=4 cause="leave:a b" pause=9ms
time=2026-12-07T03:45:48.000Z level=INFO msg="generation change pause" worker=w2 generation=x cause=leave:w5 pause=9ms
`
	got := parsePauses("w2", []byte(log))
	want := []Pause{
		{Worker: "w2", Generation: 2, Cause: "join:w3", Seconds: 0.066},
		{Worker: "w2", Generation: 3, Cause: "crash:w1,join:w4", Seconds: 1.5},
		{Worker: "w2", Generation: 4, Cause: "leave:a b", Seconds: 0.009},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d pauses %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("pause %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, c := range []struct {
		cause, class string
		planned      bool
	}{
		{"join:w3", "join", true},
		{"join:w3,leave:w1,join:w4", "join+leave", true},
		{"crash:w1,join:w4", "crash+join", false},
		{"relink:w2", "relink", false},
		{"restart", "restart", false},
		{"bogus", "unknown", false},
	} {
		p := Pause{Cause: c.cause}
		if p.Class() != c.class || p.Planned() != c.planned {
			t.Errorf("%q: class %q planned %v, want %q %v", c.cause, p.Class(), p.Planned(), c.class, c.planned)
		}
	}
}

func TestSpread(t *testing.T) {
	if _, _, _, ok := spread(nil); ok {
		t.Fatal("spread of nothing is ok")
	}
	// 11 values 0..10 shuffled: median 5, p90 the 10th of 11 (index 9), max 10.
	med, p90, max, ok := spread([]float64{7, 3, 10, 0, 5, 1, 9, 2, 8, 4, 6})
	if !ok || med != 5 || p90 != 9 || max != 10 {
		t.Fatalf("spread: %v %v %v %v, want 5 9 10", med, p90, max, ok)
	}
}

func TestTotals(t *testing.T) {
	r1, r2 := 0.5, 1.5
	sum := &Summary{Failed: 1, Runs: []*RunResult{
		{Run: 1, Pass: true, Faults: []*Injected{{Kind: KillWorker, RecoveryS: &r1}, {Kind: KillLeader, Skipped: "no such coordinator"}},
			Pauses: []Pause{{Cause: "join:w3", Seconds: 0.08}, {Cause: "crash:w1", Seconds: 0.04}}},
		{Run: 2, Pass: false, Faults: []*Injected{{Kind: KillWorker, RecoveryS: &r2}, {Kind: KillWorker}},
			Pauses: []Pause{{Cause: "join:w4", Seconds: 0.12}}},
	}}
	var b strings.Builder
	WriteTable(&b, sum)
	out := b.String()
	for _, want := range []string{
		"2 runs, 1 passed, 1 failed.",
		"| kill-worker | 3 | 0 | 3 | 2 | 1.50 | 1.50 | 1.50 |",
		"| kill-leader | 1 | 1 | 0 | 0 | - | - | - |",
		"| crash | 1 | 0.04 | 0.04 | 0.04 |",
		"| join | 2 | 0.12 | 0.12 | 0.12 |",
		"| 0.08 / 0.04 |",
		"| 0.12 / - |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

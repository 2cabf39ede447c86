package chaos

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
)

// The same seed draws the same plan; another seed another one; faults lie
// in the window, sorted, with start-together at most once and at 0.
func TestPlanIsDrawnFromTheSeed(t *testing.T) {
	c := &Config{Kinds: AllKinds(), FaultsPerRun: 4, Window: 8 * time.Second}
	a, b := Plan(11, c), Plan(11, c)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different plans:\n%+v\n%+v", a, b)
	}
	differ := false
	for seed := uint64(1); seed < 50; seed++ {
		p := Plan(seed, c)
		if !reflect.DeepEqual(p, a) {
			differ = true
		}
		together := 0
		for i, f := range p {
			if i > 0 && f.At < p[i-1].At {
				t.Fatalf("seed %d: plan not sorted: %+v", seed, p)
			}
			if f.Kind == StartTogether {
				together++
				if f.At != 0 {
					t.Fatalf("seed %d: start-together at %v", seed, f.At)
				}
			} else if f.At < 500*time.Millisecond || f.At > c.Window {
				t.Fatalf("seed %d: %s at %v, outside (0.5s, %v]", seed, f.Kind, f.At, c.Window)
			}
			if f.Kind == PauseWorker && (f.Duration < 2*time.Second || f.Duration > 8*time.Second) {
				t.Fatalf("seed %d: pause of %v", seed, f.Duration)
			}
		}
		if together > 1 {
			t.Fatalf("seed %d: %d start-together faults", seed, together)
		}
	}
	if !differ {
		t.Fatal("every seed drew the same plan")
	}
}

func TestScenario(t *testing.T) {
	faults, err := ParseScenario("s.yaml", []byte("- {kind: kill-leader, at: 3, duration: 2.5}\n- kind: pause-worker\n  at: 1.5\n  target: w2\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Fault{{Kind: KillLeader, At: 3 * time.Second, Duration: 2500 * time.Millisecond},
		{Kind: PauseWorker, At: 1500 * time.Millisecond, Target: "w2"}}
	if !reflect.DeepEqual(faults, want) {
		t.Fatalf("got %+v, want %+v", faults, want)
	}
	p := Plan(1, &Config{Scenario: faults, Window: time.Second})
	if len(p) != 2 || p[0].Kind != PauseWorker || p[0].Duration == 0 || p[1].Duration != 2500*time.Millisecond {
		t.Fatalf("plan of the scenario: %+v", p)
	}
	for _, bad := range []string{"- {kind: kill-everything, at: 1}\n", "- {kind: kill-worker, at: -1}\n",
		"- {kind: kill-worker, when: 1}\n", "[]\n", "- {kind: kill-worker, target: none}\n"} {
		if _, err := ParseScenario("s.yaml", []byte(bad)); err == nil {
			t.Errorf("scenario %q accepted", bad)
		}
	}
	if f, err := ParseScenario("s.yaml", []byte("- {kind: start-together, target: none}\n")); err != nil || f[0].Target != NoTarget {
		t.Fatalf("start-together with target none: %+v, %v", f, err)
	}
	if _, err := ParseKinds("kill-worker,pause"); err == nil || !strings.Contains(err.Error(), `"pause"`) {
		t.Fatalf("ParseKinds: %v", err)
	}
}

// Recovery is the first commit two report intervals past the step at the
// fault, or the first commit past a rewind after it.
func TestRecovery(t *testing.T) {
	t0 := time.Unix(100, 0)
	at := func(s float64) time.Time { return t0.Add(secs(s)) }
	commits := []commit{{at(0), 10}, {at(1), 15}, {at(2), 20}, {at(3), 25}, {at(4), 30}}
	took, redone, ok := recovery(commits, nil, at(0.5), time.Time{}, 10, 5)
	if !ok || took != 1500*time.Millisecond || redone != 0 {
		t.Fatalf("got %v %d %v", took, redone, ok)
	}
	rw := []state.Rewind{{From: 30, To: 20, Time: at(4.5).UnixNano()}}
	commits = append(commits, commit{at(4.6), 20}, commit{at(5), 25})
	took, redone, ok = recovery(commits, rw, at(4.2), time.Time{}, 30, 5)
	if !ok || took != 800*time.Millisecond || redone != 10 {
		t.Fatalf("after a rewind: got %v %d %v", took, redone, ok)
	}
	if _, redone, _ = recovery(commits, rw, at(0.5), at(2.5), 10, 5); redone != 0 {
		t.Fatalf("a rewind after the next fault counted: %d", redone)
	}
	if _, _, ok = recovery(commits, nil, at(5.5), time.Time{}, 25, 5); ok {
		t.Fatal("recovered without a commit")
	}
}

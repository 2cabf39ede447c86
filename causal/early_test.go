package causal

import (
	"encoding/json"
	"math"
	"testing"
)

func TestEarlyStopper(t *testing.T) {
	e := EarlyStopper{Patience: 2}
	if ep, v := e.Best(); ep != -1 || !math.IsInf(v, 1) {
		t.Fatalf("Best() before any = %d, %v", ep, v)
	}
	steps := []struct {
		val            float64
		improved, stop bool
	}{
		{5, true, false},
		{4, true, false},
		{4, false, false}, // a tie is not an improvement
		{3.9, true, false},
		{math.NaN(), false, false},
		{4.5, false, true}, // two epochs without improvement
	}
	for ep, s := range steps {
		imp, stop := e.Observe(ep, s.val)
		if imp != s.improved || stop != s.stop {
			t.Fatalf("epoch %d val %v: (%v,%v), want (%v,%v)", ep, s.val, imp, stop, s.improved, s.stop)
		}
	}
	if ep, v := e.Best(); ep != 3 || v != 3.9 {
		t.Errorf("Best() = %d, %v, want 3, 3.9", ep, v)
	}

	// A checkpointed stopper resumes identically.
	b, err := json.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	var r EarlyStopper
	if err := json.Unmarshal(b, &r); err != nil || r != e {
		t.Fatalf("round trip %+v -> %+v (%v)", e, r, err)
	}

	z := EarlyStopper{}
	if imp, stop := z.Observe(0, math.NaN()); imp || !stop {
		t.Errorf("patience 0, NaN first: (%v,%v)", imp, stop)
	}
	if imp, stop := z.Observe(1, 7); !imp || stop {
		t.Errorf("patience 0, first value: (%v,%v)", imp, stop)
	}
	if ep, v := z.Best(); ep != 1 || v != 7 {
		t.Errorf("Best() = %d, %v", ep, v)
	}
}

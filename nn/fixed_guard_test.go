package nn

import (
	"testing"
	"time"
)

// A dimension below 1 (an empty embedding) must not loop forever: the row
// loop of ColumnMaxAbs used to advance by d.
func TestColumnFunctionsDimensionZero(t *testing.T) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, d := range []int{0, -1} {
			if m := ColumnMaxAbs(d, []float32{}, []float32{1, 2}); len(m) != 0 {
				t.Errorf("ColumnMaxAbs(%d) = %v, want no columns", d, m)
			}
			if e := ColumnExps(d, []float32{}); len(e) != 0 {
				t.Errorf("ColumnExps(%d) = %v, want no columns", d, e)
			}
			x := []float32{1.5, 2}
			QuantizeX(x, d, nil)
			if x[0] != 1.5 || x[1] != 2 {
				t.Errorf("QuantizeX(d=%d) changed x: %v", d, x)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("d = 0 hangs")
	}
}

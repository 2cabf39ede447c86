package gradgen

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"testing"
)

// The values are pinned: benchmark results (wire ratios) are comparable
// across versions only while the synthetic gradients stay the same bits.
// The sums are those of collective.FixedPointGradient and Gradient32,
// which this package's functions were before they moved here.
func TestGolden(t *testing.T) {
	h := sha256.New()
	for _, x := range FixedPoint(4096, 1) {
		h.Write(binary.LittleEndian.AppendUint64(nil, uint64(x)))
	}
	if got, want := fmt.Sprintf("%x", h.Sum(nil)), "a3b1c2dd933e99595c0d27bf0d9adb14944360c8a64f6eca99e28c03c6693ead"; got != want {
		t.Errorf("FixedPoint(4096, 1): sha256 %s, want %s", got, want)
	}
	h = sha256.New()
	for _, x := range Float32(4096, 2) {
		h.Write(binary.LittleEndian.AppendUint32(nil, math.Float32bits(x)))
	}
	if got, want := fmt.Sprintf("%x", h.Sum(nil)), "51e25fb520e0196d61bf42e123a4828edcb50fd684e4019501aab3de812eef4f"; got != want {
		t.Errorf("Float32(4096, 2): sha256 %s, want %s", got, want)
	}
}

func TestSeeds(t *testing.T) {
	a, b, c := FixedPoint(1000, 1), FixedPoint(1000, 1), FixedPoint(1000, 2)
	same, differ := true, false
	for i := range a {
		same = same && a[i] == b[i]
		differ = differ || a[i] != c[i]
	}
	if !same || !differ {
		t.Fatalf("same seed gives the same values: %v; another seed other values: %v", same, differ)
	}
	f := Float32(1000, 1)
	for i, x := range f {
		if want := float32(math.Ldexp(float64(a[i]), -40)); x != want {
			t.Fatalf("Float32[%d] = %v, want FixedPoint's value times 2^-40 = %v", i, x, want)
		}
	}
}

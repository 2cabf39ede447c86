package trainer

import (
	"errors"
	"math"
	"testing"

	"github.com/causalrm/causalrm/nn"
)

func TestScaleFinite(t *testing.T) {
	src := []float32{1, -2, math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, 0}
	dst := make([]float32, len(src))
	if err := scaleFinite(dst, src, 0.5); err != nil {
		t.Fatal(err)
	}
	for i, v := range src {
		if dst[i] != v*0.5 {
			t.Fatalf("dst[%d] = %v, want %v", i, dst[i], v*0.5)
		}
	}
	inf := float32(math.Inf(1))
	for _, bad := range []float32{float32(math.NaN()), inf, -inf} {
		in := []float32{1, 2, bad, 4}
		err := scaleFinite(make([]float32, 4), in, 1)
		if !errors.Is(err, nn.ErrNonFinite) {
			t.Fatalf("%v: err %v, want ErrNonFinite", bad, err)
		}
	}
}

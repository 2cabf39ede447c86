package trainer

import (
	"math"
	"strings"
	"testing"

	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/shard"
)

// rowsX builds row-major embeddings from rows.
func rowsX(rows ...[]float32) []float32 {
	var x []float32
	for _, r := range rows {
		x = append(x, r...)
	}
	return x
}

// kinds lists the warnings' kinds.
func kinds(ws []Warning) []string {
	var k []string
	for _, w := range ws {
		k = append(k, w.Kind)
	}
	return k
}

// checkWarnings compares warnings with the wanted ones: each wanted
// warning is its kind and substrings of its message.
func checkWarnings(t *testing.T, got []Warning, want [][]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d warnings %v, want %d:\n%v", len(got), kinds(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Kind != w[0] {
			t.Errorf("warning %d: kind %s, want %s", i, got[i].Kind, w[0])
		}
		for _, s := range w[1:] {
			if !strings.Contains(got[i].Message, s) {
				t.Errorf("warning %d (%s): message lacks %q:\n%s", i, got[i].Kind, s, got[i].Message)
			}
		}
	}
}

func TestColumnScaleWarnings(t *testing.T) {
	// 100 rows of 4 columns of magnitude about 1 (column 3 is zero but in
	// one row: a sparse feature, not a small one).
	base := func() []float32 {
		x := make([]float32, 100*4)
		for i := 0; i < 100; i++ {
			x[i*4+0] = float32(i%7) / 7
			x[i*4+1] = -float32(i%5) / 3
			x[i*4+2] = float32(i%3) + 0.5
		}
		x[17*4+3] = 0.25
		return x
	}
	for _, tc := range []struct {
		name string
		x    func() []float32
		want [][]string
	}{
		{"ordinary columns", base, nil},
		{"one value of 1e30", func() []float32 {
			x := base()
			x[42*4+1] = 1e30
			return x
		}, [][]string{{WarnColumnScale, "feature column 1:", "max |x| is 1e+30", "median of the other columns' max |x| (0.8571)",
			"2^15 steps", "every value of this column below", "rounds to 0", "(79 of its 80 non-zero values", "constant predictor"}}},
		{"just below the ratio", func() []float32 {
			x := base()
			x[42*4+0] = float32(ColumnScaleRatio) * 4 / 3 * 0.99
			return x
		}, nil},
		{"at the ratio", func() []float32 {
			x := base()
			x[42*4+0] = float32(ColumnScaleRatio) * 1.33334
			return x
		}, [][]string{{WarnColumnScale, "feature column 0:"}}},
		{"a sparse column's outlier", func() []float32 {
			x := base()
			x[17*4+3] = 1e9
			return x
		}, [][]string{{WarnColumnScale, "feature column 3:", "(0 of its 1 non-zero values"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := tc.x()
			checkWarnings(t, ColumnScaleWarnings(4, nn.ColumnMaxAbs(4, x), x), tc.want)
		})
	}
	// Many large columns: five are named, the rest counted.
	d := 40
	x := make([]float32, 10*d)
	for i := range x {
		x[i] = 1
	}
	for j := 0; j < 8; j++ {
		x[3*d+j] = 1e12
	}
	got := ColumnScaleWarnings(d, nn.ColumnMaxAbs(d, x), x)
	checkWarnings(t, got, [][]string{{WarnColumnScale, "column 0:"}, {WarnColumnScale, "column 1:"}, {WarnColumnScale, "column 2:"},
		{WarnColumnScale, "column 3:"}, {WarnColumnScale, "column 4:"}, {WarnColumnScale, "3 more columns", "the median of the other columns'", "[5 6 7]"}})
	// Nothing to compare with: no warning.
	if w := ColumnScaleWarnings(2, []float64{0, 5}, nil); w != nil {
		t.Fatalf("one non-zero column: %v", w)
	}
}

func TestConstantEmbeddingWarnings(t *testing.T) {
	for _, tc := range []struct {
		name string
		xs   [][]float32
		want [][]string
	}{
		{"different rows", [][]float32{rowsX([]float32{1, 2}, []float32{1, 2}), rowsX([]float32{1, 2.5})}, nil},
		{"identical rows across train and val", [][]float32{rowsX([]float32{1, 2}, []float32{1, 2}), rowsX([]float32{1, 2})},
			[][]string{{WarnConstantEmbeddings, "every one of the 3 train and val embeddings is identical", "constant"}}},
		{"all zero", [][]float32{rowsX([]float32{0, 0}, []float32{0, 0})},
			[][]string{{WarnConstantEmbeddings, "is all zero"}}},
		{"one row", [][]float32{rowsX([]float32{0, 0})}, nil},
		{"no rows", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkWarnings(t, ConstantEmbeddingWarnings(2, tc.xs...), tc.want)
		})
	}
}

func TestOneClassWarnings(t *testing.T) {
	for _, tc := range []struct {
		name string
		o, y []uint8
		want [][]string
	}{
		{"both classes", []uint8{1, 1, 0}, []uint8{1, 0, 0}, nil},
		{"all observed are 1", []uint8{1, 1, 0, 1}, []uint8{1, 1, 0, 1},
			[][]string{{WarnOneClass, "all 3 observed training labels are y = 1 (none is 0)"}}},
		{"all observed are 0", []uint8{1, 0, 1}, []uint8{0, 0, 0},
			[][]string{{WarnOneClass, "all 2 observed training labels are y = 0 (none is 1)", "predict 0"}}},
		{"nothing observed", []uint8{0, 0}, []uint8{0, 0}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &shard.Split{Name: "train", N: len(tc.o), O: tc.o, Y: tc.y}
			checkWarnings(t, OneClassWarnings(s), tc.want)
		})
	}
}

func TestStageWarnings(t *testing.T) {
	for _, tc := range []struct {
		name       string
		train, val []float64
		best       int
		want       [][]string
	}{
		{"positive", []float64{0.9, 0.6, 0.5}, []float64{0.7, 0.5, 0.4}, 3, nil},
		{"zero is not negative", []float64{0.2, 0.1}, []float64{0.1, 0}, 2, nil},
		{"NaN is not negative", []float64{0.2, 0.1}, []float64{0.1, math.NaN()}, 1, nil},
		{"validation goes negative", []float64{0.9, 0.6, 0.5, 0.4, 0.4}, []float64{0.5, 0.1, -0.02, -0.1, 0.03}, 2,
			[][]string{{WarnNegativeValidation, "stage reward/causalrm-ips:", "validation estimate went negative (-0.02 at epoch 3; lowest -0.1 at epoch 4)",
				"unbounded below", "--risk nonnegative"}}},
		{"training goes negative", []float64{0.5, -0.3, -0.7}, []float64{0.5, 0.4, 0.45}, 2,
			[][]string{{WarnNegativeTraining, "training loss went negative (-0.3 at epoch 2; lowest -0.7 at epoch 3)"}}},
		{"diverges", []float64{0.5, 0.2, 0.3, 0.41}, []float64{0.5, 0.4, 0.45, 0.5}, 2,
			[][]string{{WarnDiverged, "0.41 at the last epoch (4), more than 2 times its lowest 0.2 (epoch 2)", "--lr"}}},
		{"rises but not twice", []float64{0.5, 0.2, 0.39}, []float64{0.5, 0.4, 0.45}, 2, nil},
		{"best epoch early", []float64{0.5, 0.45, 0.44, 0.43, 0.42, 0.41, 0.4, 0.39, 0.38, 0.37},
			[]float64{0.5, 0.4, 0.45, 0.46, 0.47, 0.48, 0.49, 0.5, 0.51, 0.52}, 2,
			[][]string{{WarnEarlyBest, "best epoch was epoch 2 of 10"}}},
		{"best epoch early of few", []float64{0.5, 0.45, 0.44}, []float64{0.5, 0.4, 0.45}, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := &StageResult{Name: "reward/causalrm-ips", Train: tc.train, Val: tc.val, Epochs: len(tc.val), BestEpoch: tc.best}
			checkWarnings(t, StageWarnings(res), tc.want)
		})
	}
	if StageWarnings(nil) != nil {
		t.Fatal("nil stage")
	}
}

// New checks the data as loaded, before the grid rounds it: the outlier's
// column is named with the count of its values the grid zeroes, and a
// worker holding some rows' embeddings only checks the labels.
func TestNewFindsDataWarnings(t *testing.T) {
	ds := smallData(t, 400, 10, 5)
	if tr, err := New(smallConfig(), ds, nil, nil); err != nil || len(tr.DataWarnings) != 0 {
		t.Fatalf("simulated data: %v %v", err, tr.DataWarnings)
	}
	ds = smallData(t, 400, 10, 5)
	nonzero := 0
	for i := 0; i < ds.Train.N; i++ {
		if ds.Train.X[i*10+6] != 0 {
			nonzero++
		}
	}
	for _, s := range []*shard.Split{ds.Val, ds.Test} {
		for i := 0; i < s.N; i++ {
			if s.X[i*10+6] != 0 {
				nonzero++
			}
		}
	}
	ds.Train.X[7*10+6] = 1e30
	for i, o := range ds.Train.O {
		if o == 1 {
			ds.Train.Y[i] = 1
		}
	}
	tr, err := New(smallConfig(), ds, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkWarnings(t, tr.DataWarnings, [][]string{
		{WarnColumnScale, "feature column 6:", "max |x| is 1e+30", "of its " + itoa(nonzero) + " non-zero values"},
		{WarnOneClass, "observed training labels are y = 1"}})

	// A split holding some rows' embeddings only (a static ring's worker).
	ds = smallData(t, 400, 10, 5)
	ds.Train.X[7*10+6] = 1e30
	ds.Train.XIndex = make([]int32, ds.Train.N)
	for i := range ds.Train.XIndex {
		ds.Train.XIndex[i] = int32(i)
	}
	if w := DataWarnings(ds, nil); len(w) != 0 {
		t.Fatalf("partial embeddings: %v", w)
	}
}

func itoa(n int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

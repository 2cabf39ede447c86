package shard

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

type genOpts struct {
	opt      bool // P, R (train/val) and Rating
	synthIDs bool // ids "train:0", ...
}

// genSplit builds a valid random split.
func genSplit(rng *rand.Rand, name string, n, d int, o genOpts) *Split {
	s := &Split{Name: name, N: n, D: d, IDs: make([]string, n), X: make([]float32, n*d),
		O: make([]uint8, n), Y: make([]uint8, n)}
	for i := range s.X {
		s.X[i] = float32(rng.NormFloat64())
	}
	if o.opt || name == SplitTest {
		s.R = make([]uint8, n)
	}
	if o.opt {
		s.P = make([]float32, n)
		s.Rating = make([]float32, n)
	}
	for i := 0; i < n; i++ {
		if o.synthIDs {
			s.IDs[i] = fmt.Sprintf("%s:%d", name, i)
		} else {
			s.IDs[i] = fmt.Sprintf("%s/row-%d", name, i*7+3)
		}
		if name == SplitTest || rng.IntN(3) == 0 {
			s.O[i] = 1
		}
		r := uint8(rng.IntN(2))
		if s.R != nil {
			s.R[i] = r
		}
		if s.O[i] == 1 {
			s.Y[i] = r
			if name != SplitTest && rng.IntN(5) == 0 {
				s.Y[i] = 1 - r // noise
			}
		}
		if o.opt {
			s.P[i] = float32(0.05 + 0.95*rng.Float64())
			if i == 0 {
				s.P[i] = 1
			}
			s.Rating[i] = float32(rng.IntN(10)) / 2
		}
	}
	return s
}

func genDataset(seed uint64, n [3]int, d int, o genOpts) *Dataset {
	rng := rand.New(rand.NewPCG(seed, 1))
	return &Dataset{
		Train: genSplit(rng, SplitTrain, n[0], d, o),
		Val:   genSplit(rng, SplitVal, n[1], d, o),
		Test:  genSplit(rng, SplitTest, n[2], d, o),
	}
}

func stripSource(s *Split) *Split {
	if s == nil {
		return nil
	}
	c := *s
	c.Source = ""
	return &c
}

func equalSplits(t *testing.T, what string, got, want *Split) {
	t.Helper()
	g, w := stripSource(got), stripSource(want)
	if reflect.DeepEqual(g, w) {
		return
	}
	if g == nil || w == nil {
		t.Fatalf("%s: got %v, want %v", what, g, w)
	}
	gv, wv := reflect.ValueOf(*g), reflect.ValueOf(*w)
	for k := 0; k < gv.NumField(); k++ {
		if !reflect.DeepEqual(gv.Field(k).Interface(), wv.Field(k).Interface()) {
			gs, ws := fmt.Sprint(gv.Field(k).Interface()), fmt.Sprint(wv.Field(k).Interface())
			if len(gs) > 200 {
				gs = gs[:200] + "..."
			}
			if len(ws) > 200 {
				ws = ws[:200] + "..."
			}
			t.Errorf("%s: field %s differs:\n got %s\nwant %s", what, gv.Type().Field(k).Name, gs, ws)
		}
	}
	t.FailNow()
}

func equalDatasets(t *testing.T, got, want *Dataset) {
	t.Helper()
	equalSplits(t, "train", got.Train, want.Train)
	equalSplits(t, "val", got.Val, want.Val)
	equalSplits(t, "test", got.Test, want.Test)
}

// wantRowErr checks that err is a *RowError at the given place wrapping sentinel.
func wantRowErr(t *testing.T, err error, file string, row int, line bool, field string, sentinel error, msgPart string) *RowError {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v at %s %d field %q", sentinel, file, row, field)
	}
	var re *RowError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T) is not a *RowError", err, err)
	}
	if re.File != file || re.Row != row || re.Line != line || re.Field != field {
		t.Fatalf("error %q located at file=%q row=%d line=%v field=%q, want file=%q row=%d line=%v field=%q",
			err, re.File, re.Row, re.Line, re.Field, file, row, line, field)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %q does not wrap %v", err, sentinel)
	}
	if !strings.Contains(err.Error(), msgPart) {
		t.Fatalf("error %q does not contain %q", err, msgPart)
	}
	return re
}

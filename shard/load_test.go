package shard

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/causalrm/causalrm/internal/safetensors"
)

type writerFunc func(string, *Dataset) error

var formats = []struct {
	ext   string
	write writerFunc
}{
	{".safetensors", WriteSafetensors},
	{".parquet", WriteParquet},
	{".jsonl", WriteJSONL},
	{".jsonl.gz", WriteJSONL},
}

func TestRoundTripAllSplitsInOneFile(t *testing.T) {
	for _, f := range formats {
		for _, o := range []genOpts{{}, {opt: true}, {synthIDs: true}, {opt: true, synthIDs: true}} {
			t.Run(f.ext, func(t *testing.T) {
				ds := genDataset(7, [3]int{53, 17, 21}, 5, o)
				p := filepath.Join(t.TempDir(), "all"+f.ext)
				if err := f.write(p, ds); err != nil {
					t.Fatal(err)
				}
				got, err := Load(LoadSpec{Train: p})
				if err != nil {
					t.Fatal(err)
				}
				equalDatasets(t, got, ds)
				if got.Train.Source != p || got.Test.Source != p {
					t.Fatalf("sources %q %q", got.Train.Source, got.Test.Source)
				}
			})
		}
	}
}

func TestRoundTripSeparateFiles(t *testing.T) {
	for _, f := range formats {
		t.Run(f.ext, func(t *testing.T) {
			dir := t.TempDir()
			ds := genDataset(8, [3]int{30, 9, 11}, 3, genOpts{opt: true})
			tr := filepath.Join(dir, "train"+f.ext)
			va := filepath.Join(dir, "val"+f.ext)
			te := filepath.Join(dir, "test"+f.ext)
			// train: a file holding all three splits (its val/test must be ignored);
			// val: a file with a "val" split; test: a file whose only split is
			// labelled "train".
			other := genDataset(9, [3]int{30, 4, 4}, 3, genOpts{opt: true})
			other.Train = ds.Train
			other.Val.IDs[0], other.Test.IDs[0] = "v-other", "t-other"
			if err := f.write(tr, other); err != nil {
				t.Fatal(err)
			}
			if err := f.write(va, &Dataset{Val: ds.Val}); err != nil {
				t.Fatal(err)
			}
			testAsTrain := *ds.Test
			testAsTrain.Name = SplitTrain
			if err := f.write(te, &Dataset{Train: &testAsTrain}); err != nil {
				t.Fatal(err)
			}
			got, err := Load(LoadSpec{Train: tr, Val: va, Test: te})
			if err != nil {
				t.Fatal(err)
			}
			equalDatasets(t, got, ds)
			if got.Val.Source != va || got.Test.Source != te {
				t.Fatalf("sources %q %q", got.Val.Source, got.Test.Source)
			}
		})
	}
}

func TestParquetUnlabelledVariants(t *testing.T) {
	// int64 ids, a repeated (non-LIST) double column, bool flags, several row
	// groups and pages, no split column.
	type row struct {
		ID int64     `parquet:"id"`
		X  []float64 `parquet:"x"`
		O  bool      `parquet:"o"`
		Y  *bool     `parquet:"y,optional"`
		R  *int64    `parquet:"r,optional"`
	}
	ds := genDataset(3, [3]int{100, 0, 40}, 6, genOpts{synthIDs: true})
	toRows := func(s *Split, idBase int64) []row {
		rows := make([]row, s.N)
		for i := range rows {
			x := make([]float64, s.D)
			for k, v := range s.Row(i) {
				x[k] = float64(v)
			}
			rows[i] = row{ID: idBase + int64(i), X: x, O: s.O[i] == 1}
			if s.O[i] == 1 {
				y := s.Y[i] == 1
				rows[i].Y = &y
			}
			if s.R != nil {
				r := int64(s.R[i])
				rows[i].R = &r
			}
		}
		return rows
	}
	dir := t.TempDir()
	tr, te := filepath.Join(dir, "tr.parquet"), filepath.Join(dir, "te.parquet")
	opts := []parquet.WriterOption{parquet.MaxRowsPerRowGroup(13), parquet.PageBufferSize(256)}
	if err := parquet.WriteFile(tr, toRows(ds.Train, 1000), opts...); err != nil {
		t.Fatal(err)
	}
	if err := parquet.WriteFile(te, toRows(ds.Test, -5), opts...); err != nil {
		t.Fatal(err)
	}
	got, err := Load(LoadSpec{Train: tr, Test: te, AllowEmptyVal: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range ds.Train.IDs {
		ds.Train.IDs[i] = strconv.Itoa(1000 + i)
	}
	for i := range ds.Test.IDs {
		ds.Test.IDs[i] = strconv.Itoa(i - 5)
	}
	equalSplits(t, "train", got.Train, ds.Train)
	equalSplits(t, "test", got.Test, ds.Test)
	if got.Val == nil || got.Val.N != 0 || got.Val.D != 6 {
		t.Fatalf("val = %+v", got.Val)
	}
	// Without AllowEmptyVal the missing val split is an error.
	_, err = Load(LoadSpec{Train: tr, Test: te})
	wantRowErr(t, err, tr, -1, false, "", ErrEmptySplit, "no validation split")
}

func TestAuthorsSafetensorsLayout(t *testing.T) {
	// Dtypes as the authors' PyTorch code may store them: labels as float,
	// masks as int64, propensities as float64, ratings as float64.
	p := filepath.Join(t.TempDir(), "authors.safetensors")
	f32 := func(v ...float32) []float32 { return v }
	ts := map[string]safetensors.Tensor{
		"X_train":          safetensors.FromFloat32([]int{3, 2}, f32(1, 2, 3, 4, 5, 6)),
		"y_train_binary":   safetensors.FromFloat32([]int{3}, f32(1, 1, 0)),
		"mask_train":       safetensors.FromInt64([]int{3}, []int64{1, 0, 1}),
		"propensity_train": safetensors.FromFloat64([]int{3}, []float64{0.5, 0.25, 1}),
		"y_train":          safetensors.FromFloat64([]int{3}, []float64{4, 1, 2}),
		"X_val":            safetensors.FromFloat64([]int{1, 2}, []float64{7, 8}),
		"y_val_binary":     safetensors.FromInt64([]int{1}, []int64{0}),
		"mask_val":         safetensors.FromBool([]int{1}, []bool{true}),
		"X_test":           {DType: "F16", Shape: []int{2, 2}, Data: []byte{0, 0x3c, 0, 0x40, 0, 0x42, 0, 0x44}},
		"y_test_binary":    safetensors.FromFloat32([]int{2}, f32(0, 1)),
	}
	if err := safetensors.Write(p, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	ds, err := Load(LoadSpec{Train: p})
	if err != nil {
		t.Fatal(err)
	}
	want := &Dataset{
		Train: &Split{Name: "train", N: 3, D: 2, IDs: []string{"train:0", "train:1", "train:2"},
			X: f32(1, 2, 3, 4, 5, 6), O: []uint8{1, 0, 1}, Y: []uint8{1, 0, 0},
			P: f32(0.5, 0.25, 1), Rating: f32(4, 1, 2)},
		Val: &Split{Name: "val", N: 1, D: 2, IDs: []string{"val:0"}, X: f32(7, 8), O: []uint8{1}, Y: []uint8{0}},
		Test: &Split{Name: "test", N: 2, D: 2, IDs: []string{"test:0", "test:1"}, X: f32(1, 2, 3, 4),
			O: []uint8{1, 1}, Y: []uint8{0, 1}, R: []uint8{0, 1}},
	}
	equalDatasets(t, ds, want)

	// Val and test from separate single-split files.
	dir := t.TempDir()
	vp, tp := filepath.Join(dir, "v.safetensors"), filepath.Join(dir, "t.safetensors")
	if err := safetensors.Write(vp, map[string]safetensors.Tensor{
		"X": ts["X_val"], "y_binary": ts["y_val_binary"], "mask": ts["mask_val"]}, nil); err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Write(tp, map[string]safetensors.Tensor{
		"X_test": ts["X_test"], "y_test_binary": ts["y_test_binary"]}, nil); err != nil {
		t.Fatal(err)
	}
	ds2, err := Load(LoadSpec{Train: p, Val: vp, Test: tp})
	if err != nil {
		t.Fatal(err)
	}
	equalDatasets(t, ds2, want)
}

func TestSafetensorsReadIsFrugal(t *testing.T) {
	const n, d = 2000, 512
	ds := genDataset(11, [3]int{n, 10, 10}, d, genOpts{synthIDs: true})
	p := filepath.Join(t.TempDir(), "big.safetensors")
	if err := WriteSafetensors(p, ds); err != nil {
		t.Fatal(err)
	}
	xBytes := uint64(4 * (n + 20) * d)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got, err := Load(LoadSpec{Train: p})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("X %d bytes, allocated %d bytes while loading", xBytes, alloc)
	if alloc > xBytes+xBytes/4 {
		t.Fatalf("loading allocated %d bytes for %d bytes of embeddings: an extra copy is made", alloc, xBytes)
	}
	equalDatasets(t, got, ds)
}

func TestUnknownExtension(t *testing.T) {
	p := filepath.Join(t.TempDir(), "data.csv")
	os.WriteFile(p, []byte("x"), 0o644)
	_, err := Load(LoadSpec{Train: p})
	wantRowErr(t, err, p, -1, false, "", ErrFormat, "unknown file type")
}

func TestValidateInMemory(t *testing.T) {
	ds := genDataset(1, [3]int{5, 3, 4}, 2, genOpts{opt: true})
	if err := ds.Validate(); err != nil {
		t.Fatal(err)
	}
	ds.Val.IDs[2] = ds.Train.IDs[1]
	err := ds.Validate()
	wantRowErr(t, err, "(val)", 2, false, "id", ErrDuplicateID, "first at (train) row 1")
	ds.Val.IDs[2] = "fresh"
	ds.Train.O[3], ds.Train.Y[3] = 0, 1
	wantRowErr(t, ds.Validate(), "(train)", 3, false, "y", ErrNotBinary, "unobserved")
	if err := WriteParquet(filepath.Join(t.TempDir(), "x.parquet"), ds); err == nil {
		t.Fatal("writer accepted an invalid dataset")
	}
}

func TestJSONLLongLines(t *testing.T) {
	// Lines far longer than the reader's 64 KiB buffer.
	ds := genDataset(5, [3]int{3, 2, 2}, 9000, genOpts{opt: true})
	for _, ext := range []string{".jsonl", ".jsonl.gz"} {
		p := filepath.Join(t.TempDir(), "long"+ext)
		if err := WriteJSONL(p, ds); err != nil {
			t.Fatal(err)
		}
		got, err := Load(LoadSpec{Train: p})
		if err != nil {
			t.Fatal(err)
		}
		equalDatasets(t, got, ds)
	}
}

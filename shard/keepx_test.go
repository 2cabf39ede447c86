package shard

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/causalrm/causalrm/internal/safetensors"
)

// keepShards keeps the virtual shards ids of Shards(n, s) in every split.
func keepShards(s int, ids ...int) func(string, int) []Range {
	return func(_ string, n int) []Range {
		all := Shards(n, s)
		var out []Range
		for _, id := range ids {
			out = append(out, all[id])
		}
		return out
	}
}

// wantIndex is the XIndex of n rows keeping ranges (sorted, disjoint).
func wantIndex(n int, ranges []Range) []int32 {
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = -1
	}
	k := int32(0)
	for _, r := range ranges {
		for i := r.Lo; i < r.Hi; i++ {
			idx[i] = k
			k++
		}
	}
	return idx
}

// checkPartial checks a split loaded with KeepX against the full load of the
// same file: small columns equal, XIndex as the ranges say, packed rows equal
// to the full rows, X no larger than the kept rows.
func checkPartial(t *testing.T, what string, got, full *Split, ranges []Range) {
	t.Helper()
	idx := wantIndex(full.N, ranges)
	if !reflect.DeepEqual(got.XIndex, idx) {
		t.Fatalf("%s: XIndex = %v, want %v", what, got.XIndex, idx)
	}
	kept := 0
	var keptRows []int32
	for i, k := range idx {
		if k >= 0 {
			kept++
			keptRows = append(keptRows, int32(i))
		}
	}
	if len(got.X) != kept*full.D || cap(got.X) != kept*full.D {
		t.Fatalf("%s: len(X) = %d, cap %d, want %d (%d kept rows x %d)", what, len(got.X), cap(got.X), kept*full.D, kept, full.D)
	}
	for i := 0; i < full.N; i++ {
		if got.HasX(i) != (idx[i] >= 0) {
			t.Fatalf("%s: HasX(%d) = %v", what, i, got.HasX(i))
		}
		if idx[i] >= 0 && !reflect.DeepEqual(got.Row(i), full.Row(i)) {
			t.Fatalf("%s: row %d = %v, want %v", what, i, got.Row(i), full.Row(i))
		}
	}
	xr := got.XRows(keptRows, make([]int32, 1))
	for k, v := range xr {
		if v != int32(k) {
			t.Fatalf("%s: XRows of the kept rows = %v", what, xr)
		}
	}
	// Everything but X and XIndex equals the full load.
	g, f := *got, *full
	g.X, g.XIndex, f.X = nil, nil, nil
	equalSplits(t, what, &g, &f)
}

func TestKeepXAllFormats(t *testing.T) {
	type variant struct {
		name string
		keep func(string, int) []Range
	}
	variants := []variant{
		{"shards1and3of4", keepShards(4, 1, 3)},
		{"adjacentUnsorted", keepShards(5, 3, 1, 2)}, // merged into one range
		{"everything", func(_ string, n int) []Range { return []Range{{0, n}} }},
		{"noValRows", func(split string, n int) []Range {
			if split == SplitVal {
				return nil
			}
			return []Range{{0, 1}, {n - 2, n - 2}, {n - 1, n}} // an empty range too
		}},
	}
	exts := append(formats[:len(formats):len(formats)], struct {
		ext   string
		write writerFunc
	}{".parquet", writeParquetSmallGroups})
	for fi, f := range exts {
		for oi, o := range []genOpts{{}, {opt: true, synthIDs: true}} {
			ds := genDataset(21, [3]int{53, 17, 21}, 5, o)
			p := filepath.Join(t.TempDir(), "all"+f.ext)
			if err := f.write(p, ds); err != nil {
				t.Fatal(err)
			}
			full, err := Load(LoadSpec{Train: p})
			if err != nil {
				t.Fatal(err)
			}
			equalDatasets(t, full, ds)
			for _, v := range variants {
				t.Run(fmt.Sprintf("%d%s/opts%d/%s", fi, f.ext, oi, v.name), func(t *testing.T) {
					var asked []string
					got, err := Load(LoadSpec{Train: p, KeepX: func(split string, n int) []Range {
						asked = append(asked, split)
						return v.keep(split, n)
					}})
					if err != nil {
						t.Fatal(err)
					}
					if len(asked) != 3 {
						t.Fatalf("KeepX asked for %v, want each split once", asked)
					}
					for _, e := range []struct {
						name      string
						got, full *Split
					}{{"train", got.Train, full.Train}, {"val", got.Val, full.Val}, {"test", got.Test, full.Test}} {
						rs := v.keep(e.name, e.full.N)
						norm := []Range{}
						for _, r := range rs {
							if r.Len() > 0 {
								norm = append(norm, r)
							}
						}
						// wantIndex wants them sorted.
						for a := range norm {
							for b := a + 1; b < len(norm); b++ {
								if norm[b].Lo < norm[a].Lo {
									norm[a], norm[b] = norm[b], norm[a]
								}
							}
						}
						checkPartial(t, e.name, e.got, e.full, norm)
					}
					if v.name == "noValRows" && (got.Val.X == nil || len(got.Val.X) != 0) {
						t.Fatalf("val X = %v, want empty", got.Val.X)
					}
					if err := got.Validate(); err != nil {
						t.Fatalf("Validate of a partial load: %v", err)
					}
					out := filepath.Join(t.TempDir(), "again"+f.ext)
					err = f.write(out, got)
					if v.name == "everything" {
						if err != nil {
							t.Fatalf("writing a load that kept every row: %v", err)
						}
					} else if err == nil || !strings.Contains(err.Error(), "embeddings are loaded") {
						t.Fatalf("writing a partial load: err = %v", err)
					}
				})
			}
		}
	}
}

// writeParquetSmallGroups writes ds as WriteParquet does, in row groups of
// 13 rows and small pages, so the x column spans several of both.
func writeParquetSmallGroups(path string, ds *Dataset) error {
	tmp := path + ".tmp.parquet"
	if err := WriteParquet(tmp, ds); err != nil {
		return err
	}
	defer os.Remove(tmp)
	rows, err := parquet.ReadFile[pqRow](tmp)
	if err != nil {
		return err
	}
	return parquet.WriteFile(path, rows, parquet.MaxRowsPerRowGroup(13), parquet.PageBufferSize(256))
}

func TestKeepXSeparateFilesAndEmptyVal(t *testing.T) {
	for _, f := range formats {
		t.Run(f.ext, func(t *testing.T) {
			dir := t.TempDir()
			ds := genDataset(22, [3]int{30, 0, 11}, 3, genOpts{opt: true})
			tr, te := filepath.Join(dir, "train"+f.ext), filepath.Join(dir, "test"+f.ext)
			if err := f.write(tr, &Dataset{Train: ds.Train}); err != nil {
				t.Fatal(err)
			}
			if err := f.write(te, &Dataset{Test: ds.Test}); err != nil {
				t.Fatal(err)
			}
			keep := keepShards(3, 0, 2)
			got, err := Load(LoadSpec{Train: tr, Test: te, AllowEmptyVal: true, KeepX: keep})
			if err != nil {
				t.Fatal(err)
			}
			checkPartial(t, "train", got.Train, ds.Train, keep(SplitTrain, 30))
			checkPartial(t, "test", got.Test, ds.Test, keep(SplitTest, 11))
			if got.Val.N != 0 || got.Val.XIndex == nil || len(got.Val.XIndex) != 0 || len(got.Val.X) != 0 {
				t.Fatalf("empty val: %+v", got.Val)
			}
		})
	}
}

func TestKeepXSafetensorsConverted(t *testing.T) {
	// F16 and F64 embeddings are converted range by range, through a buffer
	// smaller than a row (chunks straddle rows).
	defer func(c int) { stChunkBytes = c }(stChunkBytes)
	stChunkBytes = 6
	const n, d = 23, 5
	ds := genDataset(23, [3]int{n, 4, 6}, d, genOpts{})
	for _, dt := range []string{"F16", "BF16", "F64"} {
		t.Run(dt, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "a.safetensors")
			if err := WriteSafetensors(p, ds); err != nil {
				t.Fatal(err)
			}
			m, meta, err := safetensors.Read(p)
			if err != nil {
				t.Fatal(err)
			}
			x := ds.Train.X
			var tn safetensors.Tensor
			switch dt {
			case "F16":
				b := make([]byte, 2*len(x))
				for i, v := range x {
					h := safetensors.Float32ToFloat16(v)
					b[2*i], b[2*i+1] = byte(h), byte(h>>8)
				}
				tn = safetensors.Tensor{DType: "F16", Shape: []int{n, d}, Data: b}
			case "BF16":
				b := make([]byte, 2*len(x))
				for i, v := range x {
					h := math.Float32bits(v) >> 16
					b[2*i], b[2*i+1] = byte(h), byte(h>>8)
				}
				tn = safetensors.Tensor{DType: "BF16", Shape: []int{n, d}, Data: b}
			case "F64":
				v := make([]float64, len(x))
				for i := range x {
					v[i] = float64(x[i]) + 1e-12
				}
				tn = safetensors.FromFloat64([]int{n, d}, v)
			}
			m["X_train"] = tn
			if err := safetensors.Write(p, m, meta); err != nil {
				t.Fatal(err)
			}
			full, err := Load(LoadSpec{Train: p})
			if err != nil {
				t.Fatal(err)
			}
			for _, keep := range []func(string, int) []Range{keepShards(4, 1, 3), keepShards(3, 0, 1, 2), keepShards(7, 6)} {
				got, err := Load(LoadSpec{Train: p, KeepX: keep})
				if err != nil {
					t.Fatal(err)
				}
				checkPartial(t, "train", got.Train, full.Train, keep(SplitTrain, n))
			}
		})
	}
}

func TestKeepXNonFinite(t *testing.T) {
	// A NaN in train row 2 (of 8); KeepX keeps rows [4, 8) of train.
	ds := genDataset(24, [3]int{8, 3, 3}, 4, genOpts{})
	keepLate := func(split string, n int) []Range {
		if split == SplitTrain {
			return []Range{{4, 8}}
		}
		return []Range{{0, n}}
	}
	nanBits := math.Float32bits(float32(math.NaN()))

	t.Run("safetensors", func(t *testing.T) {
		poison := func(row int) string {
			p := filepath.Join(t.TempDir(), "a.safetensors")
			if err := WriteSafetensors(p, ds); err != nil {
				t.Fatal(err)
			}
			m, meta, err := safetensors.Read(p)
			if err != nil {
				t.Fatal(err)
			}
			x := m["X_train"]
			b := append([]byte(nil), x.Data...)
			off := 4 * (row*4 + 1)
			b[off], b[off+1], b[off+2], b[off+3] = byte(nanBits), byte(nanBits>>8), byte(nanBits>>16), byte(nanBits>>24)
			x.Data = b
			m["X_train"] = x
			if err := safetensors.Write(p, m, meta); err != nil {
				t.Fatal(err)
			}
			return p
		}
		p := poison(2)
		_, err := Load(LoadSpec{Train: p})
		wantRowErr(t, err, p, 2, false, "X_train", ErrNonFinite, "x[1] = NaN")
		// Row 2 is not read: its NaN goes unnoticed.
		got, err := Load(LoadSpec{Train: p, KeepX: keepLate})
		if err != nil {
			t.Fatalf("a NaN in a row not loaded: %v", err)
		}
		checkPartial(t, "train", got.Train, ds.Train, []Range{{4, 8}})
		// A NaN in a loaded row is found, located at its split row.
		p = poison(6)
		_, err = Load(LoadSpec{Train: p, KeepX: keepLate})
		wantRowErr(t, err, p, 6, false, "X_train", ErrNonFinite, "x[1] = NaN")
	})

	// Parquet and JSONL parse every row: the NaN is reported either way.
	t.Run("parquet", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "a.parquet")
		if err := WriteParquet(p, ds); err != nil {
			t.Fatal(err)
		}
		rows, err := parquet.ReadFile[pqRow](p)
		if err != nil {
			t.Fatal(err)
		}
		rows[2].X = append([]float32(nil), rows[2].X...)
		rows[2].X[1] = math.Float32frombits(nanBits)
		if err := parquet.WriteFile(p, rows); err != nil {
			t.Fatal(err)
		}
		for _, keep := range []func(string, int) []Range{nil, keepLate} {
			_, err := Load(LoadSpec{Train: p, KeepX: keep})
			wantRowErr(t, err, p, 2, false, "x", ErrNonFinite, "x[1] = NaN")
		}
		// A wrong length in a row not kept is still a dimension error.
		rows[2].X = rows[2].X[:3]
		if err := parquet.WriteFile(p, rows); err != nil {
			t.Fatal(err)
		}
		_, err = Load(LoadSpec{Train: p, KeepX: keepLate})
		wantRowErr(t, err, p, 2, false, "x", ErrDimension, "expected 4 values, got 3")
	})
	t.Run("jsonl", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "a.jsonl")
		if err := WriteJSONL(p, ds); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		re := regexp.MustCompile(`("x":\[[^,]+,)[^,]+`)
		lines[2] = re.ReplaceAllString(lines[2], "${1}NaN") // train row 2, line 3
		p = writeLines(t, t.TempDir(), "b.jsonl", lines)
		for _, keep := range []func(string, int) []Range{nil, keepLate} {
			_, err := Load(LoadSpec{Train: p, KeepX: keep})
			wantRowErr(t, err, p, 3, true, "x", ErrNonFinite, "x[1] = NaN")
		}
	})
}

func TestKeepXBadRanges(t *testing.T) {
	ds := genDataset(25, [3]int{10, 3, 3}, 2, genOpts{})
	for _, f := range formats {
		p := filepath.Join(t.TempDir(), "a"+f.ext)
		if err := f.write(p, ds); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			rs  []Range
			msg string
		}{
			{[]Range{{0, 5}, {4, 6}}, "overlapping"},
			{[]Range{{6, 9}, {0, 7}}, "overlapping"},
			{[]Range{{0, 11}}, "invalid range"},
			{[]Range{{-1, 2}}, "invalid range"},
			{[]Range{{3, 2}}, "invalid range"},
		} {
			_, err := Load(LoadSpec{Train: p, KeepX: func(split string, n int) []Range {
				if split == SplitTrain {
					return c.rs
				}
				return []Range{{0, n}}
			}})
			if err == nil || !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), "KeepX") {
				t.Fatalf("%s %v: err = %v, want %q", f.ext, c.rs, err, c.msg)
			}
		}
	}
}

func TestSplitRowAndXRows(t *testing.T) {
	s := &Split{Name: "train", N: 4, D: 2, X: []float32{10, 11, 30, 31}, XIndex: []int32{-1, -1, 0, 1}}
	s.IDs, s.O, s.Y = []string{"a", "b", "c", "d"}, make([]uint8, 4), make([]uint8, 4)
	if got := s.Row(2); !reflect.DeepEqual(got, []float32{10, 11}) {
		t.Fatalf("Row(2) = %v", got)
	}
	if got := s.XRows([]int32{3, 2, 3}, nil); !reflect.DeepEqual(got, []int32{1, 0, 1}) {
		t.Fatalf("XRows = %v", got)
	}
	wantPanic := func(what string, fn func()) {
		t.Helper()
		defer func() {
			r := recover()
			if msg, _ := r.(string); !strings.Contains(msg, "train row 1: embedding not loaded") {
				t.Fatalf("%s: panic %v", what, r)
			}
		}()
		fn()
	}
	wantPanic("Row", func() { s.Row(1) })
	wantPanic("XRows", func() { s.XRows([]int32{2, 1}, nil) })
	if err := (&Dataset{Train: s}).Validate(); err != nil {
		t.Fatal(err)
	}
	// Without XIndex: the identity, into dst's storage.
	full := &Split{N: 2, D: 1, X: []float32{1, 2}}
	dst := make([]int32, 0, 8)
	rows := []int32{1, 0}
	got := full.XRows(rows, dst)
	if !reflect.DeepEqual(got, rows) || &got[0] != &dst[:1][0] {
		t.Fatalf("XRows without XIndex = %v", got)
	}
	// Validate checks the packing.
	for _, c := range []struct {
		idx []int32
		x   int
		msg string
	}{
		{[]int32{-1, 1, 0, -1}, 4, "want -1 or 0"},
		{[]int32{0, -1, 1}, 4, "XIndex has 3 entries"},
		{[]int32{0, -1, -1, -1}, 4, "has 4 values, want 2"},
	} {
		bad := *s
		bad.XIndex, bad.X = c.idx, make([]float32, c.x)
		if err := (&Dataset{Train: &bad}).Validate(); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Fatalf("Validate %v: err = %v, want %q", c.idx, err, c.msg)
		}
	}
	// A NaN in X is reported at its split row.
	bad := *s
	bad.X = []float32{10, 11, 30, float32(math.NaN())}
	wantRowErr(t, (&Dataset{Train: &bad}).Validate(), "(train)", 3, false, "x", ErrNonFinite, "x[1] = NaN")
}

func TestSafetensorsKeepXIsFrugal(t *testing.T) {
	const n, d = 4000, 512
	ds := genDataset(26, [3]int{n, 40, 40}, d, genOpts{synthIDs: true})
	p := filepath.Join(t.TempDir(), "big.safetensors")
	if err := WriteSafetensors(p, ds); err != nil {
		t.Fatal(err)
	}
	ds = nil
	fullBytes := uint64(4 * (n + 80) * d)
	keep := keepShards(4, 1, 3) // half of every split
	measure := func(spec LoadSpec) (uint64, *Dataset) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		got, err := Load(spec)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		return after.TotalAlloc - before.TotalAlloc, got
	}
	allFull, full := measure(LoadSpec{Train: p})
	half, got := measure(LoadSpec{Train: p, KeepX: keep})
	keptBytes := uint64(4 * (len(got.Train.X) + len(got.Val.X) + len(got.Test.X)))
	t.Logf("X %d bytes, kept %d: full load allocated %d, half load %d", fullBytes, keptBytes, allFull, half)
	if keptBytes != fullBytes/2 {
		t.Fatalf("kept %d bytes of %d", keptBytes, fullBytes)
	}
	// The rest is the full-length small columns, the same in both loads.
	if half < keptBytes || half > keptBytes+keptBytes/4 || half > allFull*6/10 {
		t.Fatalf("loading half the rows allocated %d bytes for %d bytes of kept embeddings (full load: %d)", half, keptBytes, allFull)
	}
	checkPartial(t, "train", got.Train, full.Train, keep(SplitTrain, n))
}

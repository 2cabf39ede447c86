package shard

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/causalrm/causalrm/internal/safetensors"
)

// validJSONL is a small valid all-splits file (D = 4); line k of the file is
// lines[k-1].
func validJSONL() []string {
	return []string{
		`{"id":"a","split":"train","x":[1,2,3,4],"o":1,"y":0}`,
		`{"id":"b","split":"train","x":[1,2,3,4],"o":0}`,
		`{"id":"c","split":"train","x":[1,2,3,4],"o":1,"y":1}`,
		`{"id":"d","split":"val","x":[1,2,3,4],"o":1,"y":1}`,
		`{"id":"e","split":"test","x":[1,2,3,4],"o":1,"y":1}`,
		`{"id":"f","split":"test","x":[1,2,3,4],"y":0}`,
	}
}

func writeLines(t *testing.T, dir, name string, lines []string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestJSONLValidBaseline(t *testing.T) {
	p := writeLines(t, t.TempDir(), "ok.jsonl", validJSONL())
	ds, err := Load(LoadSpec{Train: p})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Train.N != 3 || ds.Val.N != 1 || ds.Test.N != 2 || ds.Train.D != 4 {
		t.Fatalf("sizes %d %d %d D=%d", ds.Train.N, ds.Val.N, ds.Test.N, ds.Train.D)
	}
	// A test row without o is observed.
	if ds.Test.O[1] != 1 || ds.Test.Y[1] != 0 {
		t.Fatalf("test defaults: %+v", ds.Test)
	}
}

func TestJSONLBadRows(t *testing.T) {
	type tc struct {
		name     string
		line     int    // 1-based line to replace (0: none)
		text     string // replacement
		extra    []string
		field    string
		sentinel error
		msg      string
		errLine  int
	}
	cases := []tc{
		{"dimension", 3, `{"id":"c","split":"train","x":[1,2,3],"o":1,"y":1}`, nil, "x", ErrDimension, `line 3: field "x": expected 4 values, got 3`, 3},
		{"dimensionLonger", 4, `{"id":"d","split":"val","x":[1,2,3,4,5],"o":1,"y":1}`, nil, "x", ErrDimension, "expected 4 values, got 5", 4},
		{"nan", 2, `{"id":"b","split":"train","x":[1,NaN,3,4],"o":0}`, nil, "x", ErrNonFinite, "x[1] = NaN", 2},
		{"inf", 5, `{"id":"e","split":"test","x":[1,2,3,-Infinity],"o":1,"y":1}`, nil, "x", ErrNonFinite, "x[3] = -Inf", 5},
		{"overflow32", 1, `{"id":"a","split":"train","x":[1e39,2,3,4],"o":1,"y":0}`, nil, "x", ErrNonFinite, "x[0] = +Inf", 1},
		{"nullElement", 1, `{"id":"a","split":"train","x":[1,null,3,4],"o":1,"y":0}`, nil, "x", ErrFormat, "element 1 is null", 1},
		{"oNotBinary", 2, `{"id":"b","split":"train","x":[1,2,3,4],"o":2}`, nil, "o", ErrNotBinary, "value 2 not in {0,1}", 2},
		{"yNotBinary", 3, `{"id":"c","split":"train","x":[1,2,3,4],"o":1,"y":0.5}`, nil, "y", ErrNotBinary, "0.5", 3},
		{"yString", 3, `{"id":"c","split":"train","x":[1,2,3,4],"o":1,"y":"1"}`, nil, "y", ErrNotBinary, `"1"`, 3},
		{"rNotBinary", 5, `{"id":"e","split":"test","x":[1,2,3,4],"o":1,"y":1,"r":-1}`, nil, "r", ErrNotBinary, "-1", 5},
		{"pZero", 1, `{"id":"a","split":"train","x":[1,2,3,4],"o":1,"y":0,"p":0}`, nil, "p", ErrPropensity, "outside (0,1]", 1},
		{"pAboveOne", 1, `{"id":"a","split":"train","x":[1,2,3,4],"o":1,"y":0,"p":1.5}`, nil, "p", ErrPropensity, "1.5", 1},
		{"pNaN", 1, `{"id":"a","split":"train","x":[1,2,3,4],"o":1,"y":0,"p":NaN}`, nil, "p", ErrPropensity, "NaN", 1},
		{"pPartial", 3, `{"id":"c","split":"train","x":[1,2,3,4],"o":1,"y":1,"p":0.5}`, nil, "p", ErrMissingField, "other rows of the train split", 1},
		{"missingX", 2, `{"id":"b","split":"train","o":0}`, nil, "x", ErrMissingField, "missing", 2},
		{"nullX", 2, `{"id":"b","split":"train","x":null,"o":0}`, nil, "x", ErrMissingField, "missing", 2},
		{"missingO", 3, `{"id":"c","split":"train","x":[1,2,3,4],"y":1}`, nil, "o", ErrMissingField, "missing", 3},
		{"missingYObserved", 4, `{"id":"d","split":"val","x":[1,2,3,4],"o":1}`, nil, "y", ErrMissingField, "observed", 4},
		{"missingID", 2, `{"split":"train","x":[1,2,3,4],"o":0}`, nil, "id", ErrMissingField, "missing", 2},
		{"emptyID", 2, `{"id":"","split":"train","x":[1,2,3,4],"o":0}`, nil, "id", ErrMissingField, "empty id", 2},
		{"floatID", 2, `{"id":1.5,"split":"train","x":[1,2,3,4],"o":0}`, nil, "id", ErrFormat, "string or an integer", 2},
		{"duplicate", 5, `{"id":"b","split":"test","x":[1,2,3,4],"o":1,"y":1}`, nil, "id", ErrDuplicateID, `duplicate id "b" (first at `, 5},
		{"badJSON", 4, `{"id":"d","split":"val","x":[1,2,3,4],"o":1,"y":1`, nil, "", ErrFormat, "invalid JSON", 4},
		{"unknownSplit", 4, `{"id":"d","split":"dev","x":[1,2,3,4],"o":1,"y":1}`, nil, "split", ErrSplitName, `"dev"`, 4},
		{"missingSplit", 4, `{"id":"d","x":[1,2,3,4],"o":1,"y":1}`, nil, "split", ErrMissingField, "other lines", 4},
		{"rating", 1, `{"id":"a","split":"train","x":[1,2,3,4],"o":1,"y":0,"rating":Infinity}`, nil, "rating", ErrNonFinite, "rating", 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			lines := validJSONL()
			if c.line > 0 {
				lines[c.line-1] = c.text
			}
			lines = append(lines, c.extra...)
			p := writeLines(t, t.TempDir(), "data.jsonl", lines)
			_, err := Load(LoadSpec{Train: p})
			wantRowErr(t, err, p, c.errLine, true, c.field, c.sentinel, c.msg)
			if c.name == "duplicate" && !strings.Contains(err.Error(), p+" line 2") {
				t.Fatalf("duplicate error %q should name line 2", err)
			}
		})
	}
}

func TestJSONLLabelOnUnobservedRowIgnored(t *testing.T) {
	lines := validJSONL()
	lines[1] = `{"id":"b","split":"train","x":[1,2,3,4],"o":0,"y":7}`
	lines = append(lines, "", "   ") // blank lines are skipped
	p := writeLines(t, t.TempDir(), "data.jsonl", lines)
	ds, err := Load(LoadSpec{Train: p})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Train.Y[1] != 0 {
		t.Fatalf("Y on unobserved row = %d, want 0", ds.Train.Y[1])
	}
}

func TestJSONLLineNumbersCountBlankLines(t *testing.T) {
	lines := validJSONL()
	lines = append(lines[:2], append([]string{"", ""}, lines[2:]...)...)
	lines[4] = `{"id":"c","split":"train","x":[1,2,3],"o":1,"y":1}` // line 5
	p := writeLines(t, t.TempDir(), "data.jsonl", lines)
	_, err := Load(LoadSpec{Train: p})
	wantRowErr(t, err, p, 5, true, "x", ErrDimension, "line 5:")
}

func TestEmptySplits(t *testing.T) {
	dir := t.TempDir()
	all := validJSONL()
	noTrain := writeLines(t, dir, "notrain.jsonl", all[3:])
	_, err := Load(LoadSpec{Train: noTrain})
	wantRowErr(t, err, noTrain, -1, false, "", ErrEmptySplit, "no train rows")

	noVal := writeLines(t, dir, "noval.jsonl", append(append([]string{}, all[:3]...), all[4:]...))
	_, err = Load(LoadSpec{Train: noVal})
	wantRowErr(t, err, noVal, -1, false, "", ErrEmptySplit, "no validation split")
	ds, err := Load(LoadSpec{Train: noVal, AllowEmptyVal: true})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Val.N != 0 || ds.Val.D != 4 || ds.Val.Name != SplitVal {
		t.Fatalf("empty val = %+v", ds.Val)
	}

	noTest := writeLines(t, dir, "notest.jsonl", all[:4])
	_, err = Load(LoadSpec{Train: noTest})
	wantRowErr(t, err, noTest, -1, false, "", ErrEmptySplit, "no test split")

	// An empty test file named explicitly.
	emptyTest := writeLines(t, dir, "empty.jsonl", nil)
	_, err = Load(LoadSpec{Train: noTest, Test: emptyTest})
	wantRowErr(t, err, emptyTest, -1, false, "", ErrEmptySplit, "test split has no rows")
}

func TestDuplicateAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	all := validJSONL()
	tr := writeLines(t, dir, "train.jsonl", all[:3])
	va := writeLines(t, dir, "val.jsonl", []string{
		`{"id":"z","x":[0,0,0,0],"o":1,"y":1}`,
		`{"id":"c","x":[0,0,0,0],"o":1,"y":1}`,
	})
	te := writeLines(t, dir, "test.jsonl", all[4:])
	_, err := Load(LoadSpec{Train: tr, Val: va, Test: te})
	re := wantRowErr(t, err, va, 2, true, "id", ErrDuplicateID, tr+" line 3")
	if re.Split != SplitVal {
		t.Fatalf("split %q", re.Split)
	}
	// Dimension checked against the train file.
	va2 := writeLines(t, dir, "val2.jsonl", []string{`{"id":"z","x":[0,0,0],"o":1,"y":1}`})
	_, err = Load(LoadSpec{Train: tr, Val: va2, Test: te})
	wantRowErr(t, err, va2, 1, true, "x", ErrDimension, "expected 4 values, got 3")
	// The same rows cannot fill two slots.
	_, err = Load(LoadSpec{Train: tr, Val: va, Test: va})
	if err == nil || !strings.Contains(err.Error(), "both val and test") {
		t.Fatalf("err = %v", err)
	}
}

// ---------------------------------------------------------------------------
// Parquet

type pqBadRow struct {
	ID    string    `parquet:"id"`
	Split string    `parquet:"split"`
	X     []float32 `parquet:"x,list"`
	O     int32     `parquet:"o"`
	Y     *int32    `parquet:"y,optional"`
	P     *float32  `parquet:"p,optional"`
}

func validPQ() []pqBadRow {
	one, zero := int32(1), int32(0)
	return []pqBadRow{
		{ID: "a", Split: "train", X: []float32{1, 2, 3}, O: 1, Y: &one},
		{ID: "b", Split: "train", X: []float32{1, 2, 3}, O: 0},
		{ID: "c", Split: "train", X: []float32{1, 2, 3}, O: 1, Y: &zero},
		{ID: "d", Split: "validation", X: []float32{1, 2, 3}, O: 1, Y: &zero},
		{ID: "e", Split: "test", X: []float32{1, 2, 3}, O: 1, Y: &one},
	}
}

func TestParquetBadRows(t *testing.T) {
	two, one := int32(2), int32(1)
	nan := float32(0)
	nan = nan / nan
	zero := float32(0)
	cases := []struct {
		name     string
		edit     func(r []pqBadRow)
		row      int
		field    string
		sentinel error
		msg      string
	}{
		{"dimension", func(r []pqBadRow) { r[2].X = []float32{1, 2} }, 2, "x", ErrDimension, `row 2: field "x": expected 3 values, got 2`},
		{"emptyX", func(r []pqBadRow) { r[1].X = nil }, 1, "x", ErrDimension, "expected 3 values, got 0"},
		{"nan", func(r []pqBadRow) { r[3].X = []float32{1, nan, 3} }, 3, "x", ErrNonFinite, "x[1] = NaN"},
		{"oNotBinary", func(r []pqBadRow) { r[4].O = 2 }, 4, "o", ErrNotBinary, "value 2"},
		{"yNotBinary", func(r []pqBadRow) { r[0].Y = &two }, 0, "y", ErrNotBinary, "value 2"},
		{"yMissing", func(r []pqBadRow) { r[2].Y = nil }, 2, "y", ErrMissingField, "observed"},
		{"pZero", func(r []pqBadRow) {
			for i := range r {
				p := float32(0.5)
				r[i].P = &p
			}
			r[3].P = &zero
		}, 3, "p", ErrPropensity, "outside (0,1]"},
		{"pPartial", func(r []pqBadRow) { p := float32(0.5); r[0].P = &p }, 1, "p", ErrMissingField, "other rows"},
		{"duplicate", func(r []pqBadRow) { r[4].ID = "a" }, 4, "id", ErrDuplicateID, " row 0)"},
		{"emptyID", func(r []pqBadRow) { r[1].ID = "" }, 1, "id", ErrMissingField, "empty id"},
		{"badSplit", func(r []pqBadRow) { r[1].Split = "holdout" }, 1, "split", ErrSplitName, "holdout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rows := validPQ()
			c.edit(rows)
			p := filepath.Join(t.TempDir(), "d.parquet")
			if err := parquet.WriteFile(p, rows); err != nil {
				t.Fatal(err)
			}
			_, err := Load(LoadSpec{Train: p})
			wantRowErr(t, err, p, c.row, false, c.field, c.sentinel, c.msg)
		})
	}
	// An observed label on an unobserved row is ignored.
	rows := validPQ()
	rows[1].Y = &one
	p := filepath.Join(t.TempDir(), "ok.parquet")
	if err := parquet.WriteFile(p, rows); err != nil {
		t.Fatal(err)
	}
	ds, err := Load(LoadSpec{Train: p})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Train.Y[1] != 0 || ds.Val.N != 1 || ds.Val.IDs[0] != "d" {
		t.Fatalf("got %+v", ds)
	}
}

func TestParquetMissingColumns(t *testing.T) {
	type noO struct {
		ID string    `parquet:"id"`
		X  []float32 `parquet:"x,list"`
		Y  int32     `parquet:"y"`
	}
	dir := t.TempDir()
	tr := filepath.Join(dir, "tr.parquet")
	if err := parquet.WriteFile(tr, []noO{{"a", []float32{1}, 1}, {"b", []float32{2}, 0}}); err != nil {
		t.Fatal(err)
	}
	te := filepath.Join(dir, "te.parquet")
	if err := parquet.WriteFile(te, []noO{{"c", []float32{1}, 1}}); err != nil {
		t.Fatal(err)
	}
	// Train needs o.
	_, err := Load(LoadSpec{Train: tr, Test: te, AllowEmptyVal: true})
	wantRowErr(t, err, tr, 0, false, "o", ErrMissingField, "missing")
	// A test file without o is fully observed.
	ds, err := Load(LoadSpec{Train: writeLines(t, dir, "tr.jsonl", []string{`{"id":"z","x":[0],"o":0}`}), Test: te, AllowEmptyVal: true})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Test.O[0] != 1 || ds.Test.Y[0] != 1 {
		t.Fatalf("test %+v", ds.Test)
	}
	type noX struct {
		ID string `parquet:"id"`
		O  int32  `parquet:"o"`
	}
	nx := filepath.Join(dir, "nx.parquet")
	if err := parquet.WriteFile(nx, []noX{{"a", 1}}); err != nil {
		t.Fatal(err)
	}
	_, err = Load(LoadSpec{Train: nx})
	wantRowErr(t, err, nx, -1, false, "x", ErrMissingField, "no x column")
	type strO struct {
		ID string    `parquet:"id"`
		X  []float32 `parquet:"x,list"`
		O  string    `parquet:"o"`
	}
	so := filepath.Join(dir, "so.parquet")
	if err := parquet.WriteFile(so, []strO{{"a", []float32{1}, "1"}}); err != nil {
		t.Fatal(err)
	}
	_, err = Load(LoadSpec{Train: so})
	wantRowErr(t, err, so, -1, false, "o", ErrFormat, "unsupported physical type")
}

// ---------------------------------------------------------------------------
// Safetensors

func validST() map[string]safetensors.Tensor {
	f := func(shape []int, v ...float32) safetensors.Tensor { return safetensors.FromFloat32(shape, v) }
	return map[string]safetensors.Tensor{
		"X_train":        f([]int{3, 2}, 1, 2, 3, 4, 5, 6),
		"y_train_binary": f([]int{3}, 1, 0, 1),
		"mask_train":     f([]int{3}, 1, 0, 1),
		"X_val":          f([]int{2, 2}, 1, 2, 3, 4),
		"y_val_binary":   f([]int{2}, 1, 0),
		"mask_val":       f([]int{2}, 1, 1),
		"X_test":         f([]int{2, 2}, 1, 2, 3, 4),
		"y_test_binary":  f([]int{2}, 1, 0),
	}
}

func TestSafetensorsBadInputs(t *testing.T) {
	f := func(shape []int, v ...float32) safetensors.Tensor { return safetensors.FromFloat32(shape, v) }
	nan := float32(0)
	nan = nan / nan
	cases := []struct {
		name     string
		edit     func(m map[string]safetensors.Tensor)
		row      int
		field    string
		sentinel error
		msg      string
	}{
		{"nan", func(m map[string]safetensors.Tensor) { m["X_train"] = f([]int{3, 2}, 1, 2, 3, 4, nan, 6) }, 2, "X_train", ErrNonFinite, "x[0] = NaN"},
		{"maskNotBinary", func(m map[string]safetensors.Tensor) { m["mask_val"] = f([]int{2}, 1, 2) }, 1, "mask_val", ErrNotBinary, "value 2"},
		{"yNotBinary", func(m map[string]safetensors.Tensor) { m["y_train_binary"] = f([]int{3}, 1, 0, 0.5) }, 2, "y_train_binary", ErrNotBinary, "0.5"},
		{"testLabelNotBinary", func(m map[string]safetensors.Tensor) { m["y_test_binary"] = f([]int{2}, 1, 3) }, 1, "y_test_binary", ErrNotBinary, "value 3"},
		{"rNotBinary", func(m map[string]safetensors.Tensor) { m["r_train_binary"] = f([]int{3}, 1, 0, -1) }, 2, "r_train_binary", ErrNotBinary, "-1"},
		{"propensity", func(m map[string]safetensors.Tensor) { m["propensity_train"] = f([]int{3}, 0.5, 1.01, 0.5) }, 1, "propensity_train", ErrPropensity, "outside"},
		{"shape", func(m map[string]safetensors.Tensor) { m["y_val_binary"] = f([]int{1}, 1) }, -1, "y_val_binary", ErrShape, "expected shape [2]"},
		{"missingMask", func(m map[string]safetensors.Tensor) { delete(m, "mask_train") }, -1, "mask_train", ErrMissingField, "missing tensor"},
		{"missingY", func(m map[string]safetensors.Tensor) { delete(m, "y_val_binary") }, -1, "y_val_binary", ErrMissingField, "missing tensor"},
		{"dimension", func(m map[string]safetensors.Tensor) { m["X_test"] = f([]int{2, 1}, 1, 2) }, 0, "X_test", ErrDimension, "expected 2 values, got 1"},
		{"notMatrix", func(m map[string]safetensors.Tensor) { m["X_val"] = f([]int{4}, 1, 2, 3, 4) }, -1, "X_val", ErrShape, "2-D"},
		{"emptyVal", func(m map[string]safetensors.Tensor) {
			m["X_val"], m["y_val_binary"], m["mask_val"] = f([]int{0, 2}), f([]int{0}), f([]int{0})
		}, -1, "", ErrEmptySplit, "val split has no rows"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := validST()
			c.edit(m)
			p := filepath.Join(t.TempDir(), "a.safetensors")
			if err := safetensors.Write(p, m, nil); err != nil {
				t.Fatal(err)
			}
			_, err := Load(LoadSpec{Train: p})
			wantRowErr(t, err, p, c.row, false, c.field, c.sentinel, c.msg)
		})
	}
	// The y label of an unobserved row is ignored (set to 0).
	m := validST()
	m["y_train_binary"] = f([]int{3}, 1, 7, 1)
	p := filepath.Join(t.TempDir(), "ok.safetensors")
	if err := safetensors.Write(p, m, nil); err != nil {
		t.Fatal(err)
	}
	ds, err := Load(LoadSpec{Train: p})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Train.Y[1] != 0 || ds.Test.R[0] != 1 || ds.Test.O[1] != 1 {
		t.Fatalf("got %+v / %+v", ds.Train, ds.Test)
	}
	// A corrupt file is a format error.
	bad := filepath.Join(t.TempDir(), "bad.safetensors")
	os.WriteFile(bad, []byte("\x05\x00\x00\x00\x00\x00\x00\x00{oops"), 0o644)
	_, err = Load(LoadSpec{Train: bad})
	wantRowErr(t, err, bad, -1, false, "", ErrFormat, "not a JSON object")
}

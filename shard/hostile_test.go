package shard

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"

	"github.com/causalrm/causalrm/internal/safetensors"
)

// Hostile inputs: each test here failed (error missing, panic, hang or an
// allocation out of proportion) before the readers were hardened.

// GuardedResult is what one guarded load did.
type GuardedResult struct {
	DS       *Dataset
	Err      error
	Panicked string // the panic value and stack, if it panicked
	Hung     bool   // still running after the timeout
	Alloc    uint64 // bytes allocated (the process's TotalAlloc delta)
}

// GuardedLoad loads spec in a goroutine under timeout, recovering a panic
// and measuring what the load allocated; check (if set) runs on a loaded
// dataset inside the guard, and its error counts as a panic. Exported for
// the mutant test of package shard_test too. Loads are meant to run one at
// a time, so that the TotalAlloc delta is the load's.
func GuardedLoad(spec LoadSpec, timeout time.Duration, check func(*Dataset) error) GuardedResult {
	done := make(chan GuardedResult, 1)
	go func() {
		var r GuardedResult
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		defer func() {
			if v := recover(); v != nil {
				buf := make([]byte, 1<<16)
				r.Panicked = fmt.Sprintf("%v\n%s", v, buf[:runtime.Stack(buf, false)])
			}
			runtime.ReadMemStats(&after)
			r.Alloc = after.TotalAlloc - before.TotalAlloc
			done <- r
		}()
		r.DS, r.Err = Load(spec)
		if r.Err == nil && check != nil {
			if err := check(r.DS); err != nil {
				r.Panicked = fmt.Sprintf("loaded an invalid dataset: %v", err)
			}
		}
	}()
	select {
	case r := <-done:
		return r
	case <-time.After(timeout):
		return GuardedResult{Hung: true}
	}
}

// loadBounded loads spec under GuardedLoad, failing the test on a hang
// (> 20 s) or a panic, and returns the error and the bytes allocated.
func loadBounded(t *testing.T, spec LoadSpec) (error, uint64) {
	t.Helper()
	r := GuardedLoad(spec, 20*time.Second, nil)
	switch {
	case r.Hung:
		t.Fatalf("Load of %s still running after 20 s", spec.Train)
	case r.Panicked != "":
		t.Fatalf("Load panicked: %s", r.Panicked)
	}
	return r.Err, r.Alloc
}

// writeST writes tensors as a safetensors file.
func writeST(t *testing.T, p string, ts map[string]safetensors.Tensor) string {
	t.Helper()
	if err := safetensors.Write(p, ts, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSafetensorsDimensionZero(t *testing.T) {
	dir := t.TempDir()
	ones := safetensors.FromFloat32([]int{5}, []float32{1, 1, 1, 1, 1})
	p := writeST(t, filepath.Join(dir, "d0.safetensors"), map[string]safetensors.Tensor{
		"X_train":        safetensors.FromFloat32([]int{5, 0}, nil),
		"y_train_binary": ones, "mask_train": ones,
	})
	err, _ := loadBounded(t, LoadSpec{Train: p, AllowEmptyVal: true, AllowNoTest: true})
	wantRowErr(t, err, p, -1, false, "X_train", ErrDimension, "x has dimension 0; need at least 1")

	// Any row count fits in no bytes: refused before anything is sized by it.
	hdr := `{"X_train":{"dtype":"F32","shape":[1099511627776,0],"data_offsets":[0,0]}}`
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	p = filepath.Join(dir, "huge.safetensors")
	os.WriteFile(p, append(b, hdr...), 0o644)
	err, alloc := loadBounded(t, LoadSpec{Train: p, AllowEmptyVal: true, AllowNoTest: true})
	wantRowErr(t, err, p, -1, false, "X_train", ErrDimension, "dimension 0")
	if alloc > 1<<20 {
		t.Fatalf("allocated %d bytes", alloc)
	}
}

func TestJSONLAndParquetDimensionZero(t *testing.T) {
	dir := t.TempDir()
	p := writeLines(t, dir, "d0.jsonl", []string{`{"id":"a","x":[],"o":1,"y":1}`, `{"id":"b","x":[],"o":1,"y":1}`})
	err, _ := loadBounded(t, LoadSpec{Train: p, AllowEmptyVal: true, AllowNoTest: true})
	wantRowErr(t, err, p, 1, true, "x", ErrDimension, "x has dimension 0; need at least 1")

	type row struct {
		ID string    `parquet:"id"`
		X  []float32 `parquet:"x,list"`
		O  int32     `parquet:"o"`
		Y  int32     `parquet:"y"`
	}
	p = filepath.Join(dir, "d0.parquet")
	if err := parquet.WriteFile(p, []row{{"a", nil, 1, 1}, {"b", []float32{}, 1, 0}}); err != nil {
		t.Fatal(err)
	}
	err, _ = loadBounded(t, LoadSpec{Train: p, AllowEmptyVal: true, AllowNoTest: true})
	wantRowErr(t, err, p, 0, false, "x", ErrDimension, "x has dimension 0; need at least 1")
}

// An empty val file takes the train dimension (it has none of its own).
func TestEmptyValFileTakesTrainDimension(t *testing.T) {
	dir := t.TempDir()
	tr := writeLines(t, dir, "tr.jsonl", validJSONL())
	va := filepath.Join(dir, "va.jsonl")
	os.WriteFile(va, nil, 0o644)
	ds, err := Load(LoadSpec{Train: tr, Val: va, AllowEmptyVal: true})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Val.N != 0 || ds.Val.D != ds.Train.D {
		t.Fatalf("val N=%d D=%d, train D=%d", ds.Val.N, ds.Val.D, ds.Train.D)
	}
}

func TestDirectoryIsNotAFile(t *testing.T) {
	for _, ext := range []string{".safetensors", ".parquet", ".jsonl", ".jsonl.gz"} {
		p := filepath.Join(t.TempDir(), "x"+ext)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		err, _ := loadBounded(t, LoadSpec{Train: p})
		wantRowErr(t, err, p, -1, false, "", ErrFormat, p+": is a directory")
	}
}

// stRoundTrip writes ds, lets edit change its tensors and writes them back.
func stRoundTrip(t *testing.T, ds *Dataset, edit func(ts map[string]safetensors.Tensor)) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "d.safetensors")
	if err := WriteSafetensors(p, ds); err != nil {
		t.Fatal(err)
	}
	ts, meta, err := safetensors.Read(p)
	if err != nil {
		t.Fatal(err)
	}
	edit(ts)
	if err := safetensors.Write(p, ts, meta); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSafetensorsBadIDOffsets(t *testing.T) {
	ds := genDataset(3, [3]int{4, 2, 2}, 3, genOpts{})
	cases := []struct {
		name string
		off  []int64 // id_train_offsets (train has 4 rows)
		row  int
		msg  string
	}{
		{"pastEnd", []int64{0, 1 << 40, 5, 9, -1}, 0, "outside [0,"},
		{"negative", []int64{0, -7, 5, 9, -1}, 0, "outside [0,"},
		{"decreasing", []int64{0, 6, 5, 9, -1}, 1, "offsets decrease"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := stRoundTrip(t, ds, func(ts map[string]safetensors.Tensor) {
				n := ts["id_train_bytes"].Shape[0]
				c.off[4] = int64(n)
				ts["id_train_offsets"] = safetensors.FromInt64([]int{5}, c.off)
			})
			err, _ := loadBounded(t, LoadSpec{Train: p})
			wantRowErr(t, err, p, c.row, false, "id_train_offsets", ErrFormat, c.msg)
		})
	}
}

func TestSafetensorsHeaderLimits(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		file []byte
		msg  string
	}{
		{"headerOverLimit", binary.LittleEndian.AppendUint64(nil, 1<<40), "exceeds the limit 104857600 (100 MiB)"},
		{"headerPastEnd", append(binary.LittleEndian.AppendUint64(nil, 50), "{}"...), "exceeds the file size"},
		{"tooManyTensors", func() []byte {
			var h strings.Builder
			h.WriteString("{")
			for i := range safetensors.MaxTensors + 1 {
				if i > 0 {
					h.WriteString(",")
				}
				fmt.Fprintf(&h, `"t%d":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}`, i)
			}
			h.WriteString("}")
			return append(binary.LittleEndian.AppendUint64(nil, uint64(h.Len())), h.String()...)
		}(), "more than the limit 4096"},
		{"shapeOverflow", func() []byte {
			h := `{"X_train":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}`
			return append(append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...), make([]byte, 16)...)
		}(), "invalid shape"},
		{"shapePastFile", func() []byte {
			h := `{"X_train":{"dtype":"F32","shape":[1073741824,4],"data_offsets":[0,16]}}`
			return append(append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...), make([]byte, 16)...)
		}(), "needs 17179869184"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name+".safetensors")
			os.WriteFile(p, c.file, 0o644)
			err, alloc := loadBounded(t, LoadSpec{Train: p})
			wantRowErr(t, err, p, -1, false, "", ErrFormat, c.msg)
			if alloc > 64<<20 {
				t.Fatalf("allocated %d bytes", alloc)
			}
		})
	}
}

// pqRewriteFooter rewrites the footer of Parquet file p through edit.
func pqRewriteFooter(t *testing.T, p string, edit func(md *format.FileMetaData)) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	n := int(binary.LittleEndian.Uint32(b[len(b)-8:]))
	var md format.FileMetaData
	if err := thrift.Unmarshal(&thrift.CompactProtocol{}, b[len(b)-8-n:len(b)-8], &md); err != nil {
		t.Fatal(err)
	}
	edit(&md)
	footer, err := thrift.Marshal(&thrift.CompactProtocol{}, &md)
	if err != nil {
		t.Fatal(err)
	}
	out := append(append([]byte(nil), b[:len(b)-8-n]...), footer...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(footer)))
	if err := os.WriteFile(p, append(out, "PAR1"...), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestParquetRowCountDisagrees(t *testing.T) {
	ds := genDataset(4, [3]int{6, 2, 3}, 3, genOpts{})
	cases := []struct {
		name  string
		edit  func(md *format.FileMetaData)
		field string
		msg   string
	}{
		// The split column (and every other) holds fewer values than the
		// rows announced: this indexed past the split labels.
		{"moreRows", func(md *format.FileMetaData) { md.NumRows++; md.RowGroups[0].NumRows++ }, "split", "column has 11 values for the 12 rows of row group 0"},
		{"fewerRows", func(md *format.FileMetaData) { md.NumRows--; md.RowGroups[0].NumRows-- }, "split", "more than its 10 rows"},
		{"footerVsGroups", func(md *format.FileMetaData) { md.NumRows += 5 }, "", "the footer announces 16 rows, its row groups 11"},
		{"hugeRows", func(md *format.FileMetaData) { md.NumRows = 1 << 40; md.RowGroups[0].NumRows = 1 << 40 }, "", "more than a file of"},
		{"chunkOutside", func(md *format.FileMetaData) { md.RowGroups[0].Columns[0].MetaData.TotalCompressedSize = 1 << 40 }, "id", "lies outside the data section"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "d.parquet")
			if err := WriteParquet(p, ds); err != nil {
				t.Fatal(err)
			}
			pqRewriteFooter(t, p, c.edit)
			err, alloc := loadBounded(t, LoadSpec{Train: p})
			wantRowErr(t, err, p, -1, false, c.field, ErrFormat, c.msg)
			if alloc > 64<<20 {
				t.Fatalf("allocated %d bytes", alloc)
			}
		})
	}
}

func TestParquetFooterLengthHuge(t *testing.T) {
	ds := genDataset(4, [3]int{6, 2, 3}, 3, genOpts{})
	p := filepath.Join(t.TempDir(), "d.parquet")
	if err := WriteParquet(p, ds); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	binary.LittleEndian.PutUint32(b[len(b)-8:], 0xfffffff0) // parquet-go allocated this much
	os.WriteFile(p, b, 0o644)
	err, alloc := loadBounded(t, LoadSpec{Train: p})
	wantRowErr(t, err, p, -1, false, "", ErrFormat, "footer length 4294967280 exceeds the file size")
	if alloc > 64<<20 {
		t.Fatalf("allocated %d bytes", alloc)
	}
}

// A library panic (or one of this reader on data it failed to check) is an
// error naming the file.
func TestParquetPanicRecovered(t *testing.T) {
	err := func() (err error) {
		defer pqRecover("f.parquet", &err)
		var s []int
		_ = s[3]
		return nil
	}()
	wantRowErr(t, err, "f.parquet", -1, false, "", ErrFormat, "corrupt Parquet file: runtime error: index out of range")
}

func TestThriftWalkerBounds(t *testing.T) {
	cases := []struct {
		name string
		b    []byte
		msg  string
	}{
		{"binaryHuge", []byte{0x18, 0xff, 0xff, 0xff, 0xff, 0x07, 0}, "truncated"},                   // field 1: binary of 2^31-1 bytes
		{"listHuge", []byte{0x19, 0xf5, 0xff, 0xff, 0xff, 0xff, 0x07, 0}, "2147483647 elements"},     // field 1: list<i32> of 2^31-1
		{"boolListHuge", []byte{0x19, 0xf1, 0xff, 0xff, 0xff, 0xff, 0x07, 0}, "2147483647 elements"}, // bools take a byte each in lists
		{"mapHuge", []byte{0x1b, 0xff, 0xff, 0xff, 0xff, 0x07, 0x55, 0}, "2147483647 elements"},
		{"deep", bytes.Repeat([]byte{0x1c}, 100), "nested too deeply"},
		{"badType", []byte{0x1e, 0}, "unknown thrift type 14"},
		{"varint", []byte{0x15, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0}, "overflows"},
	}
	for _, c := range cases {
		w := thriftWalker{b: c.b}
		err := w.structure(0)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.msg)
		}
	}
	ok := []byte{0x15, 0x04, 0x18, 0x02, 'h', 'i', 0x19, 0x25, 0x02, 0x04, 0x1c, 0x11, 0x00, 0x00}
	if w := (thriftWalker{b: ok}); w.structure(0) != nil || w.i != len(ok) {
		t.Errorf("valid struct refused")
	}
}

// A long first embedding must not size X for every row of the file: here
// 20000 rows of dimension 100000 would be 8 GB.
func TestLongFirstRowDoesNotSizeX(t *testing.T) {
	const d, n = 100000, 20000
	first := make([]float32, d)
	for i := range first {
		first[i] = float32(i%7) + 0.5
	}
	dir := t.TempDir()

	var b strings.Builder
	b.WriteString(`{"id":"r0","x":[`)
	for i, v := range first {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, v)
	}
	b.WriteString("],\"o\":1,\"y\":1}\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "{\"id\":\"r%d\",\"x\":[1],\"o\":1,\"y\":1}\n", i)
	}
	pj := filepath.Join(dir, "long.jsonl")
	os.WriteFile(pj, []byte(b.String()), 0o644)
	err, alloc := loadBounded(t, LoadSpec{Train: pj, AllowEmptyVal: true, AllowNoTest: true})
	wantRowErr(t, err, pj, 2, true, "x", ErrDimension, "expected 100000 values, got 1")
	if alloc > 64<<20 {
		t.Fatalf("jsonl: allocated %d bytes", alloc)
	}

	type row struct {
		ID string    `parquet:"id"`
		X  []float32 `parquet:"x,list"`
		O  int32     `parquet:"o"`
		Y  int32     `parquet:"y"`
	}
	rows := make([]row, n)
	for i := range rows {
		rows[i] = row{ID: fmt.Sprint("r", i), X: []float32{1}, O: 1, Y: 1}
	}
	rows[0].X = first
	pp := filepath.Join(dir, "long.parquet")
	if err := parquet.WriteFile(pp, rows); err != nil {
		t.Fatal(err)
	}
	err, alloc = loadBounded(t, LoadSpec{Train: pp, AllowEmptyVal: true, AllowNoTest: true})
	wantRowErr(t, err, pp, 1, false, "x", ErrDimension, "expected 100000 values, got 1")
	if alloc > 64<<20 {
		t.Fatalf("parquet: allocated %d bytes", alloc)
	}
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestJSONLLineLimit(t *testing.T) {
	defer func(m int) { maxLineBytes = m }(maxLineBytes)
	maxLineBytes = 1 << 10
	lines := validJSONL()
	long := strings.Repeat(" ", 2000)
	lines = append(lines, `{"id":"g","split":"test","x":[1,2,3,4],"o":1,"y":1,"pad":"`+long+`"}`)
	dir := t.TempDir()
	p := writeLines(t, dir, "long.jsonl", lines)
	err, _ := loadBounded(t, LoadSpec{Train: p})
	wantRowErr(t, err, p, -1, false, "", ErrFormat, "line 7 is longer than 1 KiB")

	raw, _ := os.ReadFile(p)
	pg := filepath.Join(dir, "long.jsonl.gz")
	os.WriteFile(pg, gzipBytes(t, raw), 0o644)
	err, _ = loadBounded(t, LoadSpec{Train: pg})
	wantRowErr(t, err, pg, -1, false, "", ErrFormat, "line 7 is longer than 1 KiB")

	// Exactly at the limit is fine.
	maxLineBytes = len(lines[6])
	p = writeLines(t, dir, "edge.jsonl", lines)
	if _, err := Load(LoadSpec{Train: p}); err != nil {
		t.Fatal(err)
	}
}

// The default limit, 64 MiB: a longer line is never read whole.
func TestJSONLLineLimitDefault(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 65 MiB file")
	}
	p := filepath.Join(t.TempDir(), "huge.jsonl")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(strings.Join(validJSONL(), "\n") + "\n" + `{"id":"z","pad":"`)
	chunk := bytes.Repeat([]byte("a"), 1<<20)
	for range 65 {
		f.Write(chunk)
	}
	f.WriteString("\"}\n")
	f.Close()
	err, alloc := loadBounded(t, LoadSpec{Train: p})
	wantRowErr(t, err, p, -1, false, "", ErrFormat, "line 7 is longer than 64 MiB")
	if alloc > 200<<20 {
		t.Fatalf("allocated %d bytes", alloc)
	}
}

func TestGzipBombRefused(t *testing.T) {
	// 32 MiB of blank lines in 32 KiB: 32 gzip members of 1 MiB each.
	member := gzipBytes(t, bytes.Repeat([]byte("\n"), 1<<20))
	p := filepath.Join(t.TempDir(), "bomb.jsonl.gz")
	os.WriteFile(p, bytes.Repeat(member, 32), 0o644)
	err, _ := loadBounded(t, LoadSpec{Train: p})
	wantRowErr(t, err, p, -1, false, "", ErrFormat, "refused as a likely decompression bomb")
	var re *RowError
	if !errors.As(err, &re) {
		t.Fatal(err)
	}
}

// Parquet files whose pages make parquet-go panic (a bad gzip header, a
// dictionary-encoded page without a dictionary, a negative value count, a
// schema with a negative child count), kept as FuzzParquet corpus entries:
// each load is an error naming the file.
func TestParquetLibraryPanicsAreErrors(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"libpanic-gzip-header", "libpanic-nil-dictionary", "libpanic-negative-count", "libpanic-schema-slice"} {
		raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzParquet", name))
		if err != nil {
			t.Fatal(err)
		}
		lit := strings.TrimSuffix(strings.TrimPrefix(string(raw), "go test fuzz v1\n[]byte("), ")\n")
		data, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		p := filepath.Join(dir, name+".parquet")
		os.WriteFile(p, []byte(data), 0o644)
		err, _ = loadBounded(t, LoadSpec{Train: p, AllowEmptyVal: true, AllowNoTest: true})
		var re *RowError
		if !errors.As(err, &re) || re.File != p || !errors.Is(err, ErrFormat) {
			t.Fatalf("%s: got %v, want a format error naming the file", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}

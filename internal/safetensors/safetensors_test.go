package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func sample() map[string]Tensor {
	return map[string]Tensor{
		"X":      FromFloat32([]int{2, 3}, []float32{1, -2.5, 3, 4, 5e-8, float32(math.Pi)}),
		"d":      FromFloat64([]int{3}, []float64{0.1, -1e300, 7}),
		"ids":    FromInt64([]int{2}, []int64{-5, 1 << 40}),
		"mask":   FromUint8([]int{4}, []uint8{0, 1, 1, 0}),
		"flags":  FromBool([]int{2}, []bool{true, false}),
		"empty":  FromFloat32([]int{0, 5}, nil),
		"scalar": FromFloat32(nil, []float32{42}),
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.safetensors")
	in := sample()
	meta := map[string]string{"format": "pt", "note": "q\"uote\n"}
	if err := Write(p, in, meta); err != nil {
		t.Fatal(err)
	}
	out, gotMeta, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotMeta, meta) {
		t.Fatalf("meta = %v, want %v", gotMeta, meta)
	}
	if len(out) != len(in) {
		t.Fatalf("got %d tensors, want %d", len(out), len(in))
	}
	for name, want := range in {
		got := out[name]
		if got.DType != want.DType || !bytes.Equal(got.Data, want.Data) || got.NumElements() != want.NumElements() {
			t.Errorf("%s: got %+v, want %+v", name, got, want)
		}
		if len(want.Shape) > 0 && !reflect.DeepEqual(got.Shape, want.Shape) {
			t.Errorf("%s: shape %v, want %v", name, got.Shape, want.Shape)
		}
	}
	x, err := out["X"].Float32s()
	if err != nil || !reflect.DeepEqual(x, []float32{1, -2.5, 3, 4, 5e-8, float32(math.Pi)}) {
		t.Fatalf("X = %v, %v", x, err)
	}
	d, err := out["d"].Float64s()
	if err != nil || !reflect.DeepEqual(d, []float64{0.1, -1e300, 7}) {
		t.Fatalf("d = %v, %v", d, err)
	}
	ids, err := out["ids"].Int64s()
	if err != nil || !reflect.DeepEqual(ids, []int64{-5, 1 << 40}) {
		t.Fatalf("ids = %v, %v", ids, err)
	}
	m, err := out["mask"].Uint8s()
	if err != nil || !reflect.DeepEqual(m, []uint8{0, 1, 1, 0}) {
		t.Fatalf("mask = %v, %v", m, err)
	}
	fl, err := out["flags"].Float32s()
	if err != nil || !reflect.DeepEqual(fl, []float32{1, 0}) {
		t.Fatalf("flags = %v, %v", fl, err)
	}

	// Random access through Open.
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !reflect.DeepEqual(f.Names(), []string{"X", "d", "empty", "flags", "ids", "mask", "scalar"}) {
		t.Fatalf("names %v", f.Names())
	}
	dst := make([]float32, 6)
	if err := f.ReadFloat32Into("X", dst); err != nil || !reflect.DeepEqual(dst, x) {
		t.Fatalf("ReadFloat32Into X = %v, %v", dst, err)
	}
	d32 := make([]float32, 3)
	if err := f.ReadFloat32Into("d", d32); err != nil || d32[0] != float32(0.1) || !math.IsInf(float64(d32[1]), -1) || d32[2] != 7 {
		t.Fatalf("ReadFloat32Into d = %v, %v", d32, err)
	}
	if err := f.ReadFloat32Into("X", make([]float32, 5)); err == nil {
		t.Fatal("length mismatch accepted")
	}
	tm, err := f.Tensor("mask")
	if err != nil || !bytes.Equal(tm.Data, []byte{0, 1, 1, 0}) {
		t.Fatalf("Tensor(mask) = %v, %v", tm, err)
	}
}

func TestReadFloat32IntoLarge(t *testing.T) {
	// Bigger than the conversion chunk, for F32 and a converted dtype.
	n := chunkBytes/2 + 12345
	v := make([]float32, n)
	h := make([]byte, 2*n)
	for i := range v {
		v[i] = float32(i%1000) - 500
		binary.LittleEndian.PutUint16(h[2*i:], Float32ToFloat16(v[i]))
	}
	p := filepath.Join(t.TempDir(), "big.safetensors")
	if err := Write(p, map[string]Tensor{
		"a": ViewFloat32([]int{n}, v),
		"h": {DType: "F16", Shape: []int{n}, Data: h},
	}, nil); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, name := range []string{"a", "h"} {
		got := make([]float32, n)
		if err := f.ReadFloat32Into(name, got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, v) {
			t.Fatalf("%s differs", name)
		}
	}
}

// The F16 conversions themselves are tested in internal/floatbits.
func TestDTypeConversions(t *testing.T) {
	if got, err := (Tensor{DType: "F16", Shape: []int{2}, Data: []byte{0x00, 0x3c, 0x00, 0xc0}}).Float32s(); err != nil || !reflect.DeepEqual(got, []float32{1, -2}) {
		t.Fatalf("F16 = %v, %v", got, err)
	}
	bf := Tensor{DType: "BF16", Shape: []int{2}, Data: []byte{0x80, 0x3f, 0x20, 0xc1}} // 1.0, -10.0
	got, err := bf.Float32s()
	if err != nil || !reflect.DeepEqual(got, []float32{1, -10}) {
		t.Fatalf("BF16 = %v, %v", got, err)
	}
	u, err := Tensor{DType: "F32", Shape: []int{2}, Data: FromFloat32([]int{2}, []float32{1, 0.5}).Data}.Uint8s()
	if err == nil {
		t.Fatalf("0.5 converted to uint8: %v", u)
	}
	if _, err := (Tensor{DType: "F8_E4M3", Shape: []int{1}, Data: []byte{1}}).Float32s(); !errors.Is(err, ErrDType) {
		t.Fatalf("F8 conversion: %v", err)
	}
}

func TestDeterministicBytes(t *testing.T) {
	dir := t.TempDir()
	var first []byte
	for i := 0; i < 20; i++ { // map iteration order varies between runs
		p := filepath.Join(dir, "d.safetensors")
		if err := Write(p, sample(), map[string]string{"b": "2", "a": "1", "c": "3"}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = b
		} else if !bytes.Equal(first, b) {
			t.Fatal("output differs between writes")
		}
	}
	hlen := binary.LittleEndian.Uint64(first)
	if (8+hlen)%8 != 0 {
		t.Fatalf("data section not 8-aligned: header %d", hlen)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("leftover files: %v", entries)
	}
	// Pinned layout of a tiny file.
	var buf bytes.Buffer
	if err := Encode(&buf, map[string]Tensor{
		"b": FromUint8([]int{1}, []uint8{7}),
		"a": FromFloat32([]int{1}, []float32{1}),
	}, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	wantHdr := `{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[1],"data_offsets":[4,5]}}`
	for (8+len(wantHdr))%8 != 0 {
		wantHdr += " "
	}
	want := binary.LittleEndian.AppendUint64(nil, uint64(len(wantHdr)))
	want = append(want, wantHdr...)
	want = append(want, 0, 0, 0x80, 0x3f, 7)
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("encoding\n got %q\nwant %q", buf.Bytes(), want)
	}
}

// A file as the reference (Python) implementation lays it out.
func TestReadReferenceLayout(t *testing.T) {
	hdr := `{"weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}`
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	b = append(b, hdr...)
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(1.5))
	b = binary.LittleEndian.AppendUint32(b, math.Float32bits(-2))
	ts, meta, err := Decode("ref", b)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := ts["weight"].Float32s()
	if !reflect.DeepEqual(v, []float32{1.5, -2}) || meta["format"] != "pt" {
		t.Fatalf("got %v %v", v, meta)
	}
}

func rawFile(hdr string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	b = append(b, hdr...)
	return append(b, data...)
}

func TestCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"short", []byte{1, 2, 3}, "too short"},
		{"hugeHeaderLen", binary.LittleEndian.AppendUint64(nil, 1<<40), "header length"},
		{"headerPastEnd", append(binary.LittleEndian.AppendUint64(nil, 100), `{}`...), "header length"},
		{"notJSON", rawFile(`{"a":`, nil), "not a JSON object"},
		{"array", rawFile(`[1,2]`, nil), "not a JSON object"},
		{"trailing", rawFile(`{} x`, nil), "trailing"},
		{"unknownDType", rawFile(`{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)), `tensor "a": unknown dtype`},
		{"missingOffsets", rawFile(`{"a":{"dtype":"F32","shape":[1]}}`, make([]byte, 4)), `tensor "a": header entry needs`},
		{"negativeShape", rawFile(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, make([]byte, 4)), `tensor "a": invalid shape`},
		{"offsetsOutOfRange", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 4)), `tensor "a": data_offsets [0, 8] out of range`},
		{"offsetsReversed", rawFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, make([]byte, 4)), `out of range`},
		{"sizeMismatch", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, make([]byte, 8)), `shape [2] of F32 needs 8`},
		{"overlap", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), `overlap`},
		{"badMeta", rawFile(`{"__metadata__":{"a":1}}`, nil), `__metadata__ must map strings`},
		{"headerOverLimit", binary.LittleEndian.AppendUint64(nil, MaxHeaderSize+1), "exceeds the limit"},
		{"headerPastEndMsg", append(binary.LittleEndian.AppendUint64(nil, 100), `{}`...), "exceeds the file size"},
		{"tooManyTensors", rawFile(manyTensors(MaxTensors+1), nil), "more than the limit 4096"},
		{"shapeOverflow", rawFile(`{"a":{"dtype":"F64","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}`, make([]byte, 8)), "overflows"},
		{"shapeHuge", rawFile(`{"a":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,8]}}`, make([]byte, 8)), "needs 4398046511104"},
		{"offsetHuge", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[9223372036854775807,9223372036854775807]}}`, make([]byte, 8)), "out of range"},
		{"offsetTooBig", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,9223372036854775808]}}`, make([]byte, 8)), "bad header entry"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name+".safetensors")
			if err := os.WriteFile(p, c.file, 0o644); err != nil {
				t.Fatal(err)
			}
			_, _, err := Read(p)
			if err == nil {
				t.Fatal("Read accepted a corrupt file")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %q should name the file and contain %q", err, c.want)
			}
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			if f, err2 := Open(p); err2 == nil {
				f.Close()
				t.Fatal("Open accepted a corrupt file")
			}
		})
	}
}

func TestWriteRejectsBadInputAtomically(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.safetensors")
	if err := Write(p, map[string]Tensor{"a": FromFloat32([]int{1}, []float32{1})}, nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p)
	bad := []map[string]Tensor{
		{"a": {DType: "F32", Shape: []int{2}, Data: make([]byte, 4)}},
		{"a": {DType: "Q4", Shape: []int{1}, Data: make([]byte, 1)}},
		{MetadataKey: FromFloat32([]int{1}, []float32{1})},
	}
	for _, ts := range bad {
		if err := Write(p, ts, nil); err == nil {
			t.Fatalf("Write accepted %v", ts)
		}
	}
	after, _ := os.ReadFile(p)
	if !bytes.Equal(before, after) {
		t.Fatal("failed write modified the existing file")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("leftover files: %v", entries)
	}
	// A failure half-way through a write is internal/atomicfile's test.
}

// manyTensors is a header of n empty tensors.
func manyTensors(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"t` + strconv.Itoa(i) + `":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`)
	}
	b.WriteByte('}')
	return b.String()
}

func TestTensorLimit(t *testing.T) {
	// MaxTensors tensors and metadata are fine.
	hdr := manyTensors(MaxTensors)
	hdr = `{"__metadata__":{"k":"v"},` + hdr[1:]
	if _, _, err := Decode("ok", rawFile(hdr, nil)); err != nil {
		t.Fatal(err)
	}
}

func TestNotARegularFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "x.safetensors")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, open := range map[string]func(string) error{
		"Open": func(p string) error { _, err := Open(p); return err },
		"Read": func(p string) error { _, _, err := Read(p); return err },
	} {
		err := open(dir)
		if err == nil || !strings.Contains(err.Error(), dir+": is a directory") {
			t.Fatalf("%s of a directory: %v, want \"is a directory\"", name, err)
		}
	}
}

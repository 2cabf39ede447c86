package shard_test

import (
	"bytes"
	"compress/gzip"
	"testing"
)

// Fuzz targets of the readers: any input loads as a dataset or fails with an
// error; it never panics, never takes longer than caseTimeout and never
// allocates more than allocBound (64 MiB plus 64 times its size). Each is
// seeded with a small real file of its format from the generator, so that
// the fuzzer starts from valid structure. Run one with e.g.
//
//	go test -run '^$' -fuzz '^FuzzParquet$' -fuzztime 60s -parallel 2 ./shard
//
// Inputs that failed are kept under testdata/fuzz/FuzzXxx/ and replayed by
// every plain go test.

func FuzzSafetensors(f *testing.F) { fuzzFormat(f, "safetensors") }
func FuzzParquet(f *testing.F)     { fuzzFormat(f, "parquet", "parquet-plain") }
func FuzzJSONL(f *testing.F)       { fuzzFormat(f, "jsonl") }

// FuzzJSONLGz fuzzes the decompressed text of a .jsonl.gz file (so that the
// fuzzer's edits reach the JSON rather than break the gzip checksum) and,
// through its flag, raw gzip bytes too.
func FuzzJSONLGz(f *testing.F) {
	files := realFiles(f)
	f.Add(files["jsonl"], true)
	f.Add(files["jsonl.gz"], false)
	f.Add([]byte("{\"x\":[1],\"o\":1,\"y\":1,\"id\":\"a\"}\n"), true)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, compress bool) {
		if compress {
			var b bytes.Buffer
			w := gzip.NewWriter(&b)
			w.Write(data)
			w.Close()
			data = b.Bytes()
		}
		checkInput(t, dir, "jsonl.gz", data)
	})
}

// fuzzFormat fuzzes the reader of the extension of formats[0], seeded with
// the generated file of each format.
func fuzzFormat(f *testing.F, formats ...string) {
	files := realFiles(f)
	for _, format := range formats {
		b := files[format]
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	ext := extOf(formats[0])
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) { checkInput(t, dir, ext, data) })
}

// checkInput loads data as a file of extension ext in dir (whole, and with
// KeepX for some inputs) and checks the invariant.
func checkInput(t *testing.T, dir, ext string, data []byte) {
	keep := len(data)%2 == 1
	o := loadInput(dir, ext, data, keep)
	switch {
	case o.hung:
		t.Fatalf("load of a %d-byte input still running after %v", len(data), caseTimeout)
	case o.panicked != "":
		t.Fatalf("panic: %s", o.panicked)
	case o.alloc > allocBound(len(data)):
		t.Fatalf("allocated %d bytes for an input of %d (bound %d)", o.alloc, len(data), allocBound(len(data)))
	}
}

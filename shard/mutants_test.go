package shard_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/sim"
)

// The readers must survive hostile input: any byte string given as a data
// file loads as a dataset or fails with an error, never panics, never hangs
// and never allocates more than allocBound of its size. TestMutants checks
// that on random byte mutants of real files from the generator; the fuzz
// targets of fuzz_test.go do the same guided by coverage.

// formats are the file kinds exercised: an extension, or for a second
// file of a format, the extension and a variant ("parquet-plain":
// uncompressed pages with dictionary, delta and byte-stream-split
// encodings, where the zstd-compressed pages of WriteParquet hide the
// encodings from byte edits).
var formats = []string{"safetensors", "parquet", "parquet-plain", "jsonl", "jsonl.gz"}

// extOf is the file extension of a format.
func extOf(format string) string {
	ext, _, _ := strings.Cut(format, "-")
	return ext
}

// plainRow is a Parquet row of the "parquet-plain" variant.
type plainRow struct {
	ID     string    `parquet:"id,dict"`
	Split  string    `parquet:"split,dict"`
	X      []float32 `parquet:"x,list"`
	O      int32     `parquet:"o,delta"`
	Y      *int32    `parquet:"y,optional"`
	R      *int32    `parquet:"r,optional"`
	P      *float32  `parquet:"p,split,optional"`
	Rating *float32  `parquet:"rating,optional,plain"`
}

func writePlainParquet(p string, ds *shard.Dataset) error {
	var rows []plainRow
	for _, sp := range []*shard.Split{ds.Train, ds.Val, ds.Test} {
		for i := 0; i < sp.N; i++ {
			r := plainRow{ID: sp.IDs[i], Split: sp.Name, X: sp.Row(i), O: int32(sp.O[i])}
			if sp.O[i] == 1 {
				y := int32(sp.Y[i])
				r.Y = &y
			}
			if sp.R != nil {
				v := int32(sp.R[i])
				r.R = &v
			}
			if sp.P != nil {
				r.P = &sp.P[i]
			}
			if sp.Rating != nil {
				r.Rating = &sp.Rating[i]
			}
			rows = append(rows, r)
		}
	}
	return parquet.WriteFile(p, rows)
}

// allocBound is the most a load of an input of n bytes may allocate (bytes,
// runtime.MemStats.TotalAlloc): 64 MiB plus 64 times the input.
func allocBound(n int) uint64 { return 64<<20 + 64*uint64(n) }

// caseTimeout is the longest one load may take.
const caseTimeout = 10 * time.Second

// realFiles writes a small generated dataset in every format and returns the
// bytes of each file by extension.
func realFiles(t testing.TB) map[string][]byte {
	t.Helper()
	cfg := sim.DefaultConfig()
	cfg.TrainRows, cfg.TestRows, cfg.Dim, cfg.Latent = 20, 6, 5, 3
	ds, err := sim.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := map[string][]byte{}
	for _, format := range formats {
		p := filepath.Join(dir, format+"."+extOf(format))
		switch format {
		case "safetensors":
			err = shard.WriteSafetensors(p, ds)
		case "parquet":
			err = shard.WriteParquet(p, ds)
		case "parquet-plain":
			err = writePlainParquet(p, ds)
		default:
			err = shard.WriteJSONL(p, ds)
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[format] = b
	}
	return out
}

// loadOutcome is what one load of an input did.
type loadOutcome struct {
	ok       bool   // loaded without error
	err      error  // the error, if any
	panicked string // the panic value and stack, if it panicked
	hung     bool   // still running after caseTimeout
	alloc    uint64 // bytes allocated (TotalAlloc delta)
}

// loadInput writes data to dir as a file of extension ext and loads it
// (alternately whole and with KeepX, to cover the partial readers), under a
// timeout and recovering panics. Loads are meant to run one at a time, so
// that the TotalAlloc delta is the load's.
func loadInput(dir, ext string, data []byte, keep bool) loadOutcome {
	p := filepath.Join(dir, "in."+ext)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return loadOutcome{err: err}
	}
	spec := shard.LoadSpec{Train: p, AllowEmptyVal: true, AllowNoTest: true}
	if keep {
		spec.KeepX = func(_ string, n int) []shard.Range {
			return []shard.Range{{Lo: 0, Hi: n / 3}, {Lo: n / 2, Hi: n}}
		}
	}
	r := shard.GuardedLoad(spec, caseTimeout, (*shard.Dataset).Validate)
	return loadOutcome{ok: r.Err == nil && r.Panicked == "", err: r.Err, panicked: r.Panicked, hung: r.Hung, alloc: r.Alloc}
}

// mutate returns a random mutant of b: one to three edits among bit flips,
// byte sets, insertions, deletions, duplications, truncation and huge
// numbers written over numeric fields (header lengths, offsets, shapes,
// counts, varints, decimal literals).
func mutate(rng *rand.Rand, b []byte) []byte {
	m := append([]byte(nil), b...)
	for range 1 + rng.IntN(3) {
		if len(m) == 0 {
			m = append(m, byte(rng.IntN(256)))
			continue
		}
		at := rng.IntN(len(m))
		switch rng.IntN(10) {
		case 0: // flip bits
			for range 1 + rng.IntN(4) {
				m[rng.IntN(len(m))] ^= 1 << rng.IntN(8)
			}
		case 1: // set bytes
			for range 1 + rng.IntN(4) {
				m[rng.IntN(len(m))] = byte(rng.IntN(256))
			}
		case 2: // insert random bytes
			ins := make([]byte, 1+rng.IntN(16))
			for i := range ins {
				ins[i] = byte(rng.IntN(256))
			}
			m = append(m[:at], append(ins, m[at:]...)...)
		case 3: // delete a range
			n := 1 + rng.IntN(min(64, len(m)-at))
			m = append(m[:at], m[at+n:]...)
		case 4: // duplicate a range
			n := 1 + rng.IntN(min(256, len(m)-at))
			dup := append([]byte(nil), m[at:at+n]...)
			to := rng.IntN(len(m) + 1)
			m = append(m[:to], append(dup, m[to:]...)...)
		case 5: // truncate
			m = m[:at]
		case 6: // a huge little-endian integer (header length, footer length, ...)
			w := []int{1, 2, 4, 8}[rng.IntN(4)]
			if at+w > len(m) {
				at = len(m) - w
			}
			if at < 0 {
				continue
			}
			var v [8]byte
			binary.LittleEndian.PutUint64(v[:], hugeUint(rng))
			copy(m[at:at+w], v[:w])
		case 7: // the 8-byte safetensors header length / the Parquet footer length
			if len(m) >= 8 && rng.IntN(2) == 0 {
				binary.LittleEndian.PutUint64(m[:8], hugeUint(rng))
			} else if len(m) >= 8 {
				binary.LittleEndian.PutUint32(m[len(m)-8:], uint32(hugeUint(rng)))
			}
		case 8: // a huge thrift varint
			v := binary.AppendUvarint(nil, hugeUint(rng))
			if rng.IntN(2) == 0 {
				m = append(m[:at], append(v, m[at:]...)...)
			} else {
				copy(m[at:], v)
			}
		case 9: // a decimal literal (JSON header shapes and offsets, JSONL values) made huge
			m = hugeDecimal(rng, m)
		}
	}
	return m
}

func hugeUint(rng *rand.Rand) uint64 {
	vals := []uint64{0, 1, 1 << 31, 1<<31 - 1, 1 << 32, 1<<32 - 1, 1 << 40, 1<<63 - 1, 1 << 63, 1<<64 - 1, 100 << 20, 1 << 27}
	return vals[rng.IntN(len(vals))] + uint64(rng.IntN(3))
}

// hugeDecimal replaces a random run of decimal digits of m by a huge or
// degenerate number.
func hugeDecimal(rng *rand.Rand, m []byte) []byte {
	var runs [][2]int
	for i := 0; i < len(m); {
		if m[i] >= '0' && m[i] <= '9' {
			j := i
			for j < len(m) && m[j] >= '0' && m[j] <= '9' {
				j++
			}
			runs = append(runs, [2]int{i, j})
			i = j
			continue
		}
		i++
	}
	if len(runs) == 0 {
		return m
	}
	r := runs[rng.IntN(len(runs))]
	reps := []string{"0", "-1", "4294967296", "9223372036854775807", "9223372036854775808", "18446744073709551615",
		"99999999999999999999999", "1e308", "2147483648", "104857600", "1099511627776", strconv.Itoa(rng.IntN(1 << 20))}
	rep := reps[rng.IntN(len(reps))]
	return append(m[:r[0]:r[0]], append([]byte(rep), m[r[1]:]...)...)
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

// TestMutants loads CAUSALRM_MUTANTS (default 200) random byte mutants of a
// real file of each format, drawn from CAUSALRM_MUTANT_SEED (default 1).
// Mutant i of a format is a pure function of (seed, format, i), so a failure
// can be replayed alone with CAUSALRM_MUTANT_ONLY=format:i. It fails on any
// panic, hang (> 10 s) or allocation above allocBound.
func TestMutants(t *testing.T) {
	n := envInt(t, "CAUSALRM_MUTANTS", 200)
	seed := uint64(envInt(t, "CAUSALRM_MUTANT_SEED", 1))
	onlyFmt, onlyIdx := "", -1
	if v := os.Getenv("CAUSALRM_MUTANT_ONLY"); v != "" {
		f, i, ok := strings.Cut(v, ":")
		k, err := strconv.Atoi(i)
		if !ok || err != nil {
			t.Fatalf("CAUSALRM_MUTANT_ONLY=%q: want format:index", v)
		}
		onlyFmt, onlyIdx = f, k
	}
	files := realFiles(t)
	dir := t.TempDir()
	start := time.Now()
	var loaded, failed, panics, hangs, overAlloc int
	var maxAlloc uint64
	for fi, format := range formats {
		if onlyFmt != "" && format != onlyFmt {
			continue
		}
		ext := extOf(format)
		for i := 0; i < n; i++ {
			if onlyIdx >= 0 && i != onlyIdx {
				continue
			}
			rng := rand.New(rand.NewPCG(seed, uint64(fi)<<32|uint64(i)))
			data := mutate(rng, files[format])
			o := loadInput(dir, ext, data, i%2 == 1)
			where := fmt.Sprintf("%s mutant %d (replay: CAUSALRM_MUTANT_SEED=%d CAUSALRM_MUTANT_ONLY=%s:%d)", format, i, seed, format, i)
			switch {
			case o.hung:
				hangs++
				t.Errorf("%s: still loading after %v", where, caseTimeout)
				if hangs >= 3 {
					t.Fatalf("giving up after %d hangs", hangs)
				}
				// The stuck load owns the file name: use a new one.
				dir = t.TempDir()
				continue
			case o.panicked != "":
				panics++
				t.Errorf("%s: panic: %s", where, o.panicked)
			case o.ok:
				loaded++
			default:
				failed++
			}
			if o.alloc > allocBound(len(data)) {
				overAlloc++
				t.Errorf("%s: allocated %d bytes for an input of %d (bound %d)", where, o.alloc, len(data), allocBound(len(data)))
			}
			maxAlloc = max(maxAlloc, o.alloc)
		}
	}
	t.Logf("seed %d, %d mutants per format: %d loaded, %d refused with an error, %d panics, %d hangs, %d over the allocation bound (largest allocation %.1f MiB) in %v",
		seed, n, loaded, failed, panics, hangs, overAlloc, float64(maxAlloc)/(1<<20), time.Since(start).Round(time.Millisecond))
}

// TestRealFilesLoad checks the generated files themselves load (the
// mutants start from valid files).
func TestRealFilesLoad(t *testing.T) {
	dir := t.TempDir()
	for format, b := range realFiles(t) {
		for _, keep := range []bool{false, true} {
			o := loadInput(dir, extOf(format), b, keep)
			if !o.ok {
				t.Fatalf("%s (keep %v): %v %s", format, keep, o.err, o.panicked)
			}
		}
	}
}

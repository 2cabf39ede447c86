package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/causalrm/causalrm/internal/floatbits"
	"github.com/causalrm/causalrm/internal/safetensors"
)

// The safetensors layout of the CausalRM authors, per split s:
//
//	X_s            [N, D] embeddings
//	y_s_binary     [N]    observed (noisy) label y, meaningful where mask = 1;
//	                      for s = test in the authors' files, the clean label r
//	mask_s         [N]    o; optional for the test split (fully observed)
//	propensity_s   [N]    optional known propensity
//	y_s            [N]    optional graded rating
//
// and our extensions:
//
//	r_s_binary     [N]    clean label r (train/val when known)
//	id_s_bytes     [B] U8 and id_s_offsets [N+1] I64: row ids, the UTF-8
//	                      bytes of id i being bytes[offsets[i]:offsets[i+1]]
//
// Without ids, rows are named "s:0", "s:1", ... after the slot they fill. A
// file with the unsuffixed keys X, y_binary, mask, ... holds one unlabelled
// split. Files written by WriteSafetensors carry the metadata
// layoutKey = "1"; in such files r_test_binary is the only source of the
// clean test label, while in other files a test split without r_test_binary
// takes its clean label from y_test_binary.
const layoutKey = "causalrm.layout"

type stSource struct {
	f      *safetensors.File
	path   string
	counts map[string]int    // canonical label -> rows
	suffix map[string]string // canonical label -> key suffix
	ours   bool

	// For reads of some rows of X (LoadSpec.KeepX): a second handle on the
	// file, the offset of its data section, and a conversion buffer.
	raw       *os.File
	dataStart int64
	scratch   []byte
}

func openSafetensorsSource(path string) (*stSource, error) {
	if err := checkRegular(path); err != nil {
		return nil, err
	}
	f, err := safetensors.Open(path)
	if err != nil {
		if errors.Is(err, safetensors.ErrFormat) {
			msg := strings.Replace(err.Error(), path+": ", "", 1)
			return nil, fileErr(path, "", "", ErrFormat, "%s", msg)
		}
		return nil, err
	}
	s := &stSource{f: f, path: path, counts: map[string]int{}, suffix: map[string]string{}}
	s.ours = f.Metadata()[layoutKey] != ""
	for _, name := range f.Names() {
		var sfx string
		switch {
		case name == "X":
			sfx = ""
		case strings.HasPrefix(name, "X_"):
			sfx = name[2:]
		default:
			continue
		}
		label := ""
		if sfx != "" {
			var ok bool
			if label, ok = CanonicalSplit(sfx); !ok {
				continue // not a split of ours
			}
		}
		if prev, dup := s.suffix[label]; dup {
			f.Close()
			return nil, fileErr(path, label, name, ErrFormat, "split %s is stored twice (X_%s and %s)", label, prev, name)
		}
		info, _ := f.Info(name)
		if len(info.Shape) != 2 {
			f.Close()
			return nil, fileErr(path, label, name, ErrShape, "expected a 2-D tensor [rows, dim], got shape %v", info.Shape)
		}
		// Dimension 0 would let a header announce any number of rows in
		// no bytes (and nothing can be learnt from empty embeddings).
		if info.Shape[1] < 1 {
			f.Close()
			return nil, fileErr(path, label, name, ErrDimension, "x has dimension 0; need at least 1 (shape %v)", info.Shape)
		}
		s.suffix[label] = sfx
		s.counts[label] = info.Shape[0]
	}
	if len(s.counts) == 0 {
		f.Close()
		return nil, fileErr(path, "", "X_train", ErrMissingField, "no embedding tensor (X_train, X_val, X_test or X)")
	}
	if _, ok := s.counts[""]; ok && len(s.counts) > 1 {
		f.Close()
		return nil, fileErr(path, "", "X", ErrFormat, "mixes the unsuffixed key X with per-split keys")
	}
	return s, nil
}

func (s *stSource) labels() map[string]int { return s.counts }
func (s *stSource) close() error {
	err := s.f.Close()
	if s.raw != nil {
		if e := s.raw.Close(); err == nil {
			err = e
		}
	}
	return err
}

// stKeys are the tensor names of one split.
type stKeys struct{ x, y, mask, prop, rating, r, idBytes, idOffsets string }

func keysFor(sfx string) stKeys {
	if sfx == "" {
		return stKeys{"X", "y_binary", "mask", "propensity", "y", "r_binary", "id_bytes", "id_offsets"}
	}
	return stKeys{"X_" + sfx, "y_" + sfx + "_binary", "mask_" + sfx, "propensity_" + sfx, "y_" + sfx,
		"r_" + sfx + "_binary", "id_" + sfx + "_bytes", "id_" + sfx + "_offsets"}
}

func (s *stSource) read(sel map[string]string, wantD int, keep func(string, int) []Range) (map[string]*part, error) {
	out := map[string]*part{}
	// Deterministic order, so the first error is always the same one.
	for _, label := range []string{"", SplitTrain, SplitVal, SplitTest} {
		slot, ok := sel[label]
		if !ok {
			continue
		}
		p, err := s.readSplit(label, slot, wantD, keep)
		if err != nil {
			return nil, err
		}
		if wantD == 0 {
			wantD = p.s.D
		}
		out[slot] = p
	}
	return out, nil
}

// stSplit is one split being read from a safetensors file: its tensor
// names, its row count and the slot its errors name.
type stSplit struct {
	s    *stSource
	slot string
	k    stKeys
	n    int
}

// bad is the error about row (-1: the whole tensor) of tensor field.
func (r *stSplit) bad(row int, field string, sentinel error, format string, args ...any) error {
	return &RowError{File: r.s.path, Split: r.slot, Row: row, Field: field, Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

// readSplit reads the split of label into a part for slot: embeddings
// first (of dimension wantD when > 0), then labels, scores and ids.
func (s *stSource) readSplit(label, slot string, wantD int, keep func(string, int) []Range) (*part, error) {
	k := keysFor(s.suffix[label])
	info, _ := s.f.Info(k.x)
	n, d := info.Shape[0], info.Shape[1]
	r := &stSplit{s: s, slot: slot, k: k, n: n}
	if wantD > 0 && d != wantD {
		row := 0
		if n == 0 {
			row = -1
		}
		return nil, r.bad(row, k.x, ErrDimension, "expected %d values, got %d", wantD, d)
	}
	sp := &Split{Name: slot, Source: s.path, N: n, D: d}
	if err := r.readX(sp, info, keep); err != nil {
		return nil, err
	}
	if err := r.readLabels(sp); err != nil {
		return nil, err
	}
	if err := r.readScores(sp); err != nil {
		return nil, err
	}
	if s.f.Has(k.idBytes) || s.f.Has(k.idOffsets) {
		var err error
		if sp.IDs, err = s.readIDs(k, n, r.bad); err != nil {
			return nil, err
		}
	} else {
		sp.IDs = make([]string, n)
		for i := range sp.IDs {
			sp.IDs[i] = slot + ":" + strconv.Itoa(i)
		}
	}
	return &part{s: sp}, nil
}

// readX reads the embeddings into sp.X, all of them or (with a KeepX plan)
// only the kept rows, and checks that the values read are finite.
func (r *stSplit) readX(sp *Split, info safetensors.Info, keep func(string, int) []Range) error {
	s, k, n, d := r.s, r.k, r.n, sp.D
	kp, err := planKeep(keep, r.slot, n)
	if err != nil {
		return err
	}
	if kp == nil {
		sp.X = make([]float32, n*d)
		if err := s.f.ReadFloat32Into(k.x, sp.X); err != nil {
			return r.bad(-1, k.x, ErrFormat, "%v", err)
		}
	} else {
		// Only the kept rows, one read per contiguous range, straight into
		// the packed X. The other rows are never read (nor checked).
		if _, err := (safetensors.Tensor{DType: info.DType, Shape: []int{0}}).Float32s(); err != nil {
			return r.bad(-1, k.x, ErrFormat, "%v", err)
		}
		sp.XIndex = kp.index
		sp.X = make([]float32, kp.kept*d)
		for j, rg := range kp.ranges {
			dst := sp.X[kp.starts[j]*d : (kp.starts[j]+rg.Len())*d]
			if err := s.readRows(info, d, rg.Lo, dst); err != nil {
				return r.bad(-1, k.x, ErrFormat, "%v", err)
			}
		}
	}
	if i := firstNonFinite(sp.X); i >= 0 {
		return r.bad(sp.rowOfX(i/d), k.x, ErrNonFinite, "x[%d] = %v", i%d, sp.X[i])
	}
	return nil
}

// readLabels reads o (all ones for a test split without a mask), y and the
// clean label r, which the authors' test files give as y_test_binary.
func (r *stSplit) readLabels(sp *Split) error {
	k := r.k
	mask, err := r.column(k.mask)
	if err != nil {
		return err
	}
	if done, err := r.unlabelled(sp, mask); done || err != nil {
		return err
	}
	if mask == nil {
		if r.slot != SplitTest {
			return r.bad(-1, k.mask, ErrMissingField, "missing tensor (the observation indicator o)")
		}
		sp.O = make([]uint8, r.n)
		for i := range sp.O {
			sp.O[i] = 1
		}
	} else if sp.O, err = r.binaryCol(k.mask, mask, nil); err != nil {
		return err
	}

	y, err := r.column(k.y)
	if err != nil {
		return err
	}
	if y == nil {
		return r.bad(-1, k.y, ErrMissingField, "missing tensor (the observed label y)")
	}
	if sp.Y, err = r.binaryCol(k.y, y, sp.O); err != nil {
		return err
	}

	clean, err := r.column(k.r)
	if err != nil {
		return err
	}
	switch {
	case clean != nil:
		if sp.R, err = r.binaryCol(k.r, clean, nil); err != nil {
			return err
		}
	case r.slot == SplitTest && !r.s.ours:
		// The authors' y_test_binary is the clean label of the test rows.
		if sp.R, err = r.binaryCol(k.y, y, nil); err != nil {
			return err
		}
	}
	return nil
}

// unlabelled handles a split without o, y and clean labels (rows to
// score): O and Y are 0 and the split records the error a training load
// reports. done is false when the split has some of them.
func (r *stSplit) unlabelled(sp *Split, mask []float64) (done bool, err error) {
	k := r.k
	if mask != nil || r.s.f.Has(k.y) || (k.r != "" && r.s.f.Has(k.r)) {
		return false, nil
	}
	sp.O, sp.Y = make([]uint8, r.n), make([]uint8, r.n)
	if r.slot == SplitTest {
		sp.unlabelled = r.bad(-1, k.y, ErrMissingField, "missing tensor (the observed label y)")
	} else {
		sp.unlabelled = r.bad(-1, k.mask, ErrMissingField, "missing tensor (the observation indicator o)")
	}
	return true, nil
}

// readScores reads the optional propensity and rating columns, checking
// each value as it is converted to float32.
func (r *stSplit) readScores(sp *Split) error {
	k, n := r.k, r.n
	if p, err := r.column(k.prop); err != nil {
		return err
	} else if p != nil {
		sp.P = make([]float32, n)
		for i, v := range p {
			f, ok := propensity32(v)
			if !ok {
				return r.bad(i, k.prop, ErrPropensity, "propensity %s outside (0,1]", fmtValue(v))
			}
			sp.P[i] = f
		}
	}
	if rt, err := r.column(k.rating); err != nil {
		return err
	} else if rt != nil {
		sp.Rating = make([]float32, n)
		for i, v := range rt {
			f, ok := rating32(v)
			if !ok {
				return r.bad(i, k.rating, ErrNonFinite, "rating %s is not a finite float32", fmtValue(v))
			}
			sp.Rating[i] = f
		}
	}
	return nil
}

// column reads a 1-column tensor of n values as float64 (nil if absent).
func (r *stSplit) column(name string) ([]float64, error) {
	s, n := r.s, r.n
	if !s.f.Has(name) {
		return nil, nil
	}
	info, _ := s.f.Info(name)
	if !(len(info.Shape) == 1 || (len(info.Shape) == 2 && info.Shape[1] == 1)) || info.Shape[0] != n {
		return nil, r.bad(-1, name, ErrShape, "expected shape [%d], got %v", n, info.Shape)
	}
	t, err := s.f.Tensor(name)
	if err != nil {
		return nil, r.bad(-1, name, ErrFormat, "%v", err)
	}
	v, err := t.Float64s()
	if err != nil {
		return nil, r.bad(-1, name, ErrFormat, "%v", err)
	}
	return v, nil
}

// binaryCol converts a column to 0/1 labels, checking only the rows where
// where is 1 (every row when where is nil); the others stay 0.
func (r *stSplit) binaryCol(name string, v []float64, where []uint8) ([]uint8, error) {
	out := make([]uint8, r.n)
	for i, x := range v {
		if where != nil && where[i] == 0 {
			continue
		}
		b, ok := binary01(x)
		if !ok {
			return nil, r.bad(i, name, ErrNotBinary, "value %s not in {0,1}", fmtValue(x))
		}
		out[i] = b
	}
	return out, nil
}

// nativeLittle reports a little-endian host, where F32 file bytes are the
// in-memory float32s.
var nativeLittle = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// stChunkBytes bounds the buffer converting non-F32 embeddings (a variable
// so that tests can exercise several chunks).
var stChunkBytes = 1 << 20

// readRows reads len(dst)/d rows of the [N, d] tensor described by info,
// from row lo on, into dst: F32 data on a little-endian host with one ReadAt
// into dst's memory, other dtypes converted through a bounded buffer.
func (s *stSource) readRows(info safetensors.Info, d, lo int, dst []float32) error {
	if s.raw == nil {
		f, err := openRegular(s.path)
		if err != nil {
			return err
		}
		s.raw, s.dataStart = f, s.f.DataStart()
	}
	size := safetensors.DTypeSize(info.DType)
	if size == 0 || d < 1 || lo < 0 || len(dst)%d != 0 || int64(lo+len(dst)/d)*int64(d)*int64(size) > info.End-info.Begin {
		return fmt.Errorf("rows [%d, %d) outside the tensor of shape %v", lo, lo+len(dst)/max(d, 1), info.Shape)
	}
	off := s.dataStart + info.Begin + int64(lo)*int64(d)*int64(size)
	if info.DType == "F32" && nativeLittle {
		if _, err := s.raw.ReadAt(floatbits.Float32Bytes(dst), off); err != nil {
			return fmt.Errorf("reading rows from %d: %w", lo, err)
		}
		return nil
	}
	per := max(1, stChunkBytes/size)
	if need := min(per, len(dst)) * size; len(s.scratch) < need {
		s.scratch = make([]byte, need)
	}
	for k := 0; k < len(dst); k += per {
		m := min(per, len(dst)-k)
		b := s.scratch[:m*size]
		if _, err := s.raw.ReadAt(b, off+int64(k)*int64(size)); err != nil {
			return fmt.Errorf("reading rows from %d: %w", lo, err)
		}
		v, err := safetensors.Tensor{DType: info.DType, Shape: []int{m}, Data: b}.Float32s()
		if err != nil {
			return err
		}
		copy(dst[k:k+m], v)
	}
	return nil
}

func (s *stSource) readIDs(k stKeys, n int, bad func(int, string, error, string, ...any) error) ([]string, error) {
	if !s.f.Has(k.idBytes) || !s.f.Has(k.idOffsets) {
		return nil, bad(-1, k.idBytes, ErrMissingField, "ids need both %s and %s", k.idBytes, k.idOffsets)
	}
	bt, err := s.f.Tensor(k.idBytes)
	if err != nil {
		return nil, bad(-1, k.idBytes, ErrFormat, "%v", err)
	}
	if bt.DType != "U8" || len(bt.Shape) != 1 {
		return nil, bad(-1, k.idBytes, ErrFormat, "expected a 1-D U8 tensor, got %s %v", bt.DType, bt.Shape)
	}
	ot, err := s.f.Tensor(k.idOffsets)
	if err != nil {
		return nil, bad(-1, k.idOffsets, ErrFormat, "%v", err)
	}
	if len(ot.Shape) != 1 || ot.Shape[0] != n+1 {
		return nil, bad(-1, k.idOffsets, ErrShape, "expected shape [%d], got %v", n+1, ot.Shape)
	}
	off, err := ot.Int64s()
	if err != nil {
		return nil, bad(-1, k.idOffsets, ErrFormat, "%v", err)
	}
	if len(off) != n+1 || off[0] != 0 || off[n] != int64(len(bt.Data)) {
		return nil, bad(-1, k.idOffsets, ErrFormat, "offsets must run from 0 to %d", len(bt.Data))
	}
	// Every offset within [0, len(bytes)] and non-decreasing, before any
	// slicing: offsets[0] and offsets[n] alone say nothing of the others.
	for i := 0; i < n; i++ {
		if o := off[i+1]; o < 0 || o > int64(len(bt.Data)) {
			return nil, bad(i, k.idOffsets, ErrFormat, "offset %d = %d outside [0, %d]", i+1, o, len(bt.Data))
		}
		if off[i+1] < off[i] {
			return nil, bad(i, k.idOffsets, ErrFormat, "offsets decrease")
		}
	}
	ids := make([]string, n)
	all := string(bt.Data) // one allocation; the ids share it
	for i := range ids {
		if off[i+1] == off[i] {
			return nil, bad(i, k.idBytes, ErrMissingField, "empty id")
		}
		ids[i] = all[off[i]:off[i+1]]
	}
	return ids, nil
}

// WriteSafetensors writes ds in the authors' layout (see the layoutKey
// comment) plus r_s_binary and ids where they carry information, atomically
// and deterministically. Load of the file gives back ds (Source aside).
// Labels are written as F32 0/1, embeddings as F32.
func WriteSafetensors(path string, ds *Dataset) error {
	if err := ds.validateFull(); err != nil {
		return err
	}
	ts := map[string]safetensors.Tensor{}
	for _, e := range ds.slots() {
		sp, name := e.s, e.name
		if sp == nil {
			continue
		}
		k := keysFor(name)
		n := sp.N
		ts[k.x] = safetensors.ViewFloat32([]int{n, sp.D}, sp.X)
		ts[k.y] = safetensors.FromFloat32([]int{n}, u8ToF32(sp.Y))
		ts[k.mask] = safetensors.FromFloat32([]int{n}, u8ToF32(sp.O))
		if sp.R != nil {
			ts[k.r] = safetensors.FromFloat32([]int{n}, u8ToF32(sp.R))
		}
		if sp.P != nil {
			ts[k.prop] = safetensors.FromFloat32([]int{n}, sp.P)
		}
		if sp.Rating != nil {
			ts[k.rating] = safetensors.FromFloat32([]int{n}, sp.Rating)
		}
		synth := true
		for i, id := range sp.IDs {
			if id != name+":"+strconv.Itoa(i) {
				synth = false
				break
			}
		}
		if !synth {
			var b []byte
			off := make([]int64, n+1)
			for i, id := range sp.IDs {
				b = append(b, id...)
				off[i+1] = int64(len(b))
			}
			ts[k.idBytes] = safetensors.FromUint8([]int{len(b)}, b)
			ts[k.idOffsets] = safetensors.FromInt64([]int{n + 1}, off)
		}
	}
	return safetensors.Write(path, ts, map[string]string{layoutKey: "1"})
}

func u8ToF32(v []uint8) []float32 {
	out := make([]float32, len(v))
	for i, b := range v {
		out[i] = float32(b)
	}
	return out
}

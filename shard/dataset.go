// Package shard is the data layer: the row schema, readers for the supported
// file formats, validation, virtual shards and the seeded epoch plan.
package shard

import (
	"fmt"
	"math"
	"sort"
)

// Split holds one split (train, val or test) of observational feedback rows in
// columnar form. X is row-major N x D. Optional columns are nil when absent.
type Split struct {
	Name   string    // "train", "val" or "test"
	Source string    // file the rows came from (for error messages)
	N, D   int       // rows and embedding dimension
	IDs    []string  // stable row identity, unique within the dataset
	X      []float32 // N*D embeddings, row-major; with XIndex, only the loaded rows (packed in row order)
	O      []uint8   // 1 if feedback was observed
	Y      []uint8   // observed (noisy) label; forced to 0 where O == 0
	P      []float32 // known propensity in (0,1], or nil
	R      []uint8   // clean binary label, or nil
	Rating []float32 // graded rating, or nil

	// XIndex is nil when X holds every row. Otherwise (a load with
	// LoadSpec.KeepX) it has N entries: XIndex[i] is the row of the packed X
	// holding row i's embedding, or -1 when row i's embedding was not loaded.
	// The loaded rows are packed in row order: the non-negative entries are
	// 0, 1, 2, ... in increasing i. Every other column stays full length.
	XIndex []int32

	// NoFeedback marks a fully labelled split read without o and y columns
	// (every row has a rating): the input of the semi-synthetic protocol
	// (sim.Apply), not something to train on. O is 1 and Y is 0 there.
	NoFeedback bool

	// unlabelled, when set, is why the split cannot be trained on: it has
	// neither o nor y (nor clean labels) anywhere, rows to score only. O and
	// Y are 0 there. Load returns it unless LoadSpec.AllowUnlabelled.
	unlabelled error
}

// Unlabelled reports whether the split has no feedback columns at all
// (rows to score only: LoadSpec.AllowUnlabelled).
func (s *Split) Unlabelled() bool { return s.unlabelled != nil }

// Row returns row i's embedding (a view into X, not a copy). With XIndex it
// is the packed row XIndex[i]; it panics when row i's embedding was not
// loaded.
func (s *Split) Row(i int) []float32 {
	if s.XIndex != nil {
		k := s.XIndex[i]
		if k < 0 {
			s.notLoaded(i)
		}
		i = int(k)
	}
	return s.X[i*s.D : (i+1)*s.D]
}

// HasX reports whether row i's embedding is in X.
func (s *Split) HasX(i int) bool { return s.XIndex == nil || s.XIndex[i] >= 0 }

// XRows translates split rows into rows of X: it sets dst to rows with each
// row i replaced by XIndex[i] (a plain copy when XIndex is nil), reusing
// dst's storage, and returns it. Use the result to index X (e.g. a gather
// for a forward pass). It panics when a row's embedding was not loaded.
func (s *Split) XRows(rows []int32, dst []int32) []int32 {
	dst = append(dst[:0], rows...)
	if s.XIndex == nil {
		return dst
	}
	for k, r := range dst {
		x := s.XIndex[r]
		if x < 0 {
			s.notLoaded(int(r))
		}
		dst[k] = x
	}
	return dst
}

func (s *Split) notLoaded(i int) {
	panic(fmt.Sprintf("shard: %s row %d: embedding not loaded (outside the rows kept by LoadSpec.KeepX)", s.Name, i))
}

// loadedRows is the number of rows held in X.
func (s *Split) loadedRows() int {
	if s.XIndex == nil {
		return s.N
	}
	m := 0
	for _, k := range s.XIndex {
		if k >= 0 {
			m++
		}
	}
	return m
}

// rowOfX maps a row of X back to its split row.
func (s *Split) rowOfX(k int) int {
	if s.XIndex == nil {
		return k
	}
	for i, x := range s.XIndex {
		if int(x) == k {
			return i
		}
	}
	return -1
}

// Dataset is the three splits of one job. Test is usually clean (R set, O all 1).
type Dataset struct {
	Train, Val, Test *Split
}

// keepPlan is the set of rows of one split whose embeddings are loaded.
type keepPlan struct {
	ranges []Range // sorted, disjoint, non-empty, adjacent ones merged
	index  []int32 // the split's XIndex
	kept   int     // rows kept
	starts []int   // starts[j]: packed row of ranges[j].Lo
}

// planKeep asks keep for the rows of a split of n rows (slot is its name)
// and checks the answer. keep == nil: every row (a nil plan).
func planKeep(keep func(split string, n int) []Range, slot string, n int) (*keepPlan, error) {
	if keep == nil {
		return nil, nil
	}
	if n > math.MaxInt32 {
		return nil, fmt.Errorf("shard: LoadSpec.KeepX: the %s split has %d rows, more than an int32 index allows", slot, n)
	}
	got := keep(slot, n)
	rs := make([]Range, 0, len(got))
	for _, r := range got {
		if r.Lo < 0 || r.Hi < r.Lo || r.Hi > n {
			return nil, fmt.Errorf("shard: LoadSpec.KeepX(%q, %d) returned the invalid range [%d, %d)", slot, n, r.Lo, r.Hi)
		}
		if r.Len() > 0 {
			rs = append(rs, r)
		}
	}
	sort.Slice(rs, func(a, b int) bool { return rs[a].Lo < rs[b].Lo })
	p := &keepPlan{index: make([]int32, n)}
	for i := range p.index {
		p.index[i] = -1
	}
	for _, r := range rs {
		if k := len(p.ranges); k > 0 && r.Lo < p.ranges[k-1].Hi {
			last := p.ranges[k-1]
			return nil, fmt.Errorf("shard: LoadSpec.KeepX(%q, %d) returned overlapping ranges [%d, %d) and [%d, %d)", slot, n, last.Lo, last.Hi, r.Lo, r.Hi)
		}
		if k := len(p.ranges); k > 0 && r.Lo == p.ranges[k-1].Hi {
			p.ranges[k-1].Hi = r.Hi
		} else {
			p.ranges = append(p.ranges, r)
			p.starts = append(p.starts, p.kept)
		}
		for i := r.Lo; i < r.Hi; i++ {
			p.index[i] = int32(p.kept)
			p.kept++
		}
	}
	return p, nil
}

package shard

import "fmt"

type slotSplit struct {
	name string
	s    *Split
}

func (d *Dataset) slots() []slotSplit {
	return []slotSplit{{SplitTrain, d.Train}, {SplitVal, d.Val}, {SplitTest, d.Test}}
}

// Validate checks the in-memory invariants of every non-nil split: column
// lengths, a common dimension, finite X, O/Y/R in {0,1}, Y = 0 where O = 0,
// P in (0,1], finite ratings, non-empty ids unique across the dataset. A
// split with XIndex (some embeddings loaded) must have N entries there,
// numbering the loaded rows 0, 1, ... in row order, and X of their size. It
// does not require any split to be non-empty (Load does). Errors are
// *RowError with File = Split.Source (or the split name when Source is "").
func (d *Dataset) Validate() error {
	dim := -1
	var parts []*part
	for _, e := range d.slots() {
		sp := e.s
		if sp == nil {
			continue
		}
		file := sp.Source
		if file == "" {
			file = "(" + e.name + ")"
		}
		at := func(i int) loc { return loc{file: file, row: i} }
		whole := func(field string, sentinel error, format string, args ...any) error {
			return fileErr(file, e.name, field, sentinel, format, args...)
		}
		if sp.N < 0 || sp.D < 0 {
			return whole("", ErrShape, "negative size N=%d D=%d", sp.N, sp.D)
		}
		if sp.N > 0 {
			if dim >= 0 && sp.D != dim {
				return at(0).err(e.name, "x", ErrDimension, "expected %d values, got %d", dim, sp.D)
			}
			dim = sp.D
		}
		n := sp.N
		if sp.XIndex != nil {
			if len(sp.XIndex) != n {
				return whole("x", ErrShape, "XIndex has %d entries, want %d", len(sp.XIndex), n)
			}
			next := int32(0)
			for i, k := range sp.XIndex {
				if k >= 0 {
					if k != next {
						return at(i).err(e.name, "x", ErrShape, "XIndex = %d, want -1 or %d (loaded rows packed in row order)", k, next)
					}
					next++
				}
			}
		}
		for _, c := range []struct {
			field string
			got   int
			want  int
			opt   bool
		}{
			{"id", len(sp.IDs), n, false}, {"x", len(sp.X), sp.loadedRows() * sp.D, false},
			{"o", len(sp.O), n, false}, {"y", len(sp.Y), n, false},
			{"p", len(sp.P), n, sp.P == nil}, {"r", len(sp.R), n, sp.R == nil},
			{"rating", len(sp.Rating), n, sp.Rating == nil},
		} {
			if !c.opt && c.got != c.want {
				return whole(c.field, ErrShape, "has %d values, want %d", c.got, c.want)
			}
		}
		if i := firstNonFinite(sp.X); i >= 0 {
			return at(sp.rowOfX(i/sp.D)).err(e.name, "x", ErrNonFinite, "x[%d] = %v", i%sp.D, sp.X[i])
		}
		for i := 0; i < n; i++ {
			if sp.IDs[i] == "" {
				return at(i).err(e.name, "id", ErrMissingField, "empty id")
			}
			if sp.O[i] > 1 {
				return at(i).err(e.name, "o", ErrNotBinary, "value %d not in {0,1}", sp.O[i])
			}
			if sp.Y[i] > 1 {
				return at(i).err(e.name, "y", ErrNotBinary, "value %d not in {0,1}", sp.Y[i])
			}
			if sp.O[i] == 0 && sp.Y[i] != 0 {
				return at(i).err(e.name, "y", ErrNotBinary, "y = 1 on an unobserved row (must be 0 where o = 0)")
			}
			if sp.R != nil && sp.R[i] > 1 {
				return at(i).err(e.name, "r", ErrNotBinary, "value %d not in {0,1}", sp.R[i])
			}
			if sp.P != nil && !(sp.P[i] > 0 && sp.P[i] <= 1) {
				return at(i).err(e.name, "p", ErrPropensity, "propensity %v outside (0,1]", sp.P[i])
			}
			if sp.Rating != nil && !finite32(sp.Rating[i]) {
				return at(i).err(e.name, "rating", ErrNonFinite, "rating %v", sp.Rating[i])
			}
		}
		// A copy with the file name used above, for duplicate reports.
		cp := *sp
		cp.Source, cp.Name = file, e.name
		parts = append(parts, &part{s: &cp})
	}
	return checkDuplicates(parts)
}

// validateFull is Validate for the writers, which also need every
// embedding: a split loaded with some rows only (LoadSpec.KeepX) is refused.
func (d *Dataset) validateFull() error {
	if err := d.Validate(); err != nil {
		return err
	}
	for _, e := range d.slots() {
		if sp := e.s; sp != nil {
			if m := sp.loadedRows(); m != sp.N {
				file := sp.Source
				if file == "" {
					file = "(" + e.name + ")"
				}
				return fileErr(file, e.name, "x", ErrShape, "only %d of %d embeddings are loaded (LoadSpec.KeepX); cannot write the split", m, sp.N)
			}
		}
	}
	return nil
}

// CleanLabels returns the clean labels of the split: R when known, else Y
// when every row is observed (a clean, fully observed test split), else nil.
func (s *Split) CleanLabels() []uint8 {
	if s.R != nil {
		return s.R
	}
	for _, o := range s.O {
		if o != 1 {
			return nil
		}
	}
	return s.Y
}

// SelectRows returns, in increasing order, the rows i of split for which
// pred(i) holds.
func SelectRows(split *Split, pred func(i int) bool) []int32 {
	var out []int32
	for i := 0; i < split.N; i++ {
		if pred(i) {
			out = append(out, int32(i))
		}
	}
	return out
}

// ObservedRows returns the rows with O = 1.
func ObservedRows(split *Split) []int32 {
	return SelectRows(split, func(i int) bool { return split.O[i] == 1 })
}

// Observed counts the rows with O = 1.
func (s *Split) Observed() int {
	n := 0
	for _, o := range s.O {
		n += int(o)
	}
	return n
}

// String summarises the split, e.g. "train: 1000 rows x 256 (observed 312) from a.parquet".
func (s *Split) String() string {
	return fmt.Sprintf("%s: %d rows x %d (observed %d) from %s", s.Name, s.N, s.D, s.Observed(), s.Source)
}

package shard

import (
	"math"
)

// missing8 marks an unset value in the uint8 columns while a split is built.
const missing8 = 255

// slotBuilder assembles one split from a row-oriented or column-oriented
// reader. Values are checked as they arrive (errors located at the row);
// missing values are left marked and resolved by finish, which knows the
// defaults (o = 1 on test rows, y ignored where o = 0, optional columns all
// or none).
type slotBuilder struct {
	slot string
	file string
	line bool
	s    *Split
	rows []int32 // file row / line of each split row
	// noX: the file cannot hold the embeddings of all the split's rows at
	// dimension s.D, so X is not allocated; rows are parsed and checked
	// only, and one of them must have a wrong dimension (see setDims).
	noX bool
}

func newSlotBuilder(slot, file string, line bool, n int) *slotBuilder {
	s := &Split{Name: slot, Source: file, N: n, IDs: make([]string, n), O: make([]uint8, n), Y: make([]uint8, n)}
	for i := range s.O {
		s.O[i], s.Y[i] = missing8, missing8
	}
	return &slotBuilder{slot: slot, file: file, line: line, s: s, rows: make([]int32, 0, n)}
}

func (b *slotBuilder) loc(i int) loc { return loc{file: b.file, row: int(b.rows[i]), line: b.line} }

func (b *slotBuilder) err(i int, field string, sentinel error, format string, args ...any) error {
	return b.loc(i).err(b.slot, field, sentinel, format, args...)
}

// keepX restricts X to the rows of p (nil: every row); call before setD.
func (b *slotBuilder) keepX(p *keepPlan) {
	if p != nil {
		b.s.XIndex = p.index
	}
}

// setD fixes the dimension and allocates X (for the kept rows only).
func (b *slotBuilder) setD(d int) {
	b.s.D = d
	b.s.X = make([]float32, b.s.loadedRows()*d)
}

// setDims fixes the dimension d of every builder of out. X is allocated
// only when capacity, the most embedding values the file can hold, covers
// every row of them at dimension d: a file announcing many rows must not get
// rows*d floats from a long first row. Otherwise the rows are only checked
// (and some row must have a wrong dimension, which the reader reports).
func setDims(out map[string]*slotBuilder, d int, capacity int64) {
	var rows int64
	for _, b := range out {
		rows += int64(b.s.N)
	}
	fits := d <= 0 || rows <= capacity/int64(d)
	for _, b := range out {
		if fits {
			b.setD(d)
		} else {
			b.s.D, b.s.X, b.noX = d, nil, true
		}
	}
}

// xRow is the storage of row i's embedding, or nil when it is not kept
// (its values are then checked but not stored).
func (b *slotBuilder) xRow(i int) []float32 {
	if b.noX {
		return nil
	}
	if b.s.XIndex != nil {
		k := b.s.XIndex[i]
		if k < 0 {
			return nil
		}
		i = int(k)
	}
	return b.s.X[i*b.s.D : (i+1)*b.s.D]
}

// checkX validates the embedding row of split row i (read whether kept or not).
func (b *slotBuilder) checkX(i int, row []float32) error {
	if j := firstNonFinite(row); j >= 0 {
		return b.err(i, "x", ErrNonFinite, "x[%d] = %v", j, row[j])
	}
	return nil
}

func (b *slotBuilder) setID(i int, id string) error {
	if id == "" {
		return b.err(i, "id", ErrMissingField, "empty id")
	}
	b.s.IDs[i] = id
	return nil
}

func (b *slotBuilder) setO(i int, v float64) error {
	u, ok := binary01(v)
	if !ok {
		return b.err(i, "o", ErrNotBinary, "value %s not in {0,1}", fmtValue(v))
	}
	b.s.O[i] = u
	return nil
}

// setY must follow setO for the row: a label on an unobserved row is ignored.
func (b *slotBuilder) setY(i int, v float64) error {
	if b.s.O[i] == 0 {
		return nil
	}
	u, ok := binary01(v)
	if !ok {
		return b.err(i, "y", ErrNotBinary, "value %s not in {0,1}", fmtValue(v))
	}
	b.s.Y[i] = u
	return nil
}

func (b *slotBuilder) setR(i int, v float64) error {
	u, ok := binary01(v)
	if !ok {
		return b.err(i, "r", ErrNotBinary, "value %s not in {0,1}", fmtValue(v))
	}
	if b.s.R == nil {
		b.s.R = make([]uint8, b.s.N)
		for k := range b.s.R {
			b.s.R[k] = missing8
		}
	}
	b.s.R[i] = u
	return nil
}

func nanColumn(n int) []float32 {
	c := make([]float32, n)
	nan := float32(math.NaN())
	for k := range c {
		c[k] = nan
	}
	return c
}

func (b *slotBuilder) setP(i int, v float64) error {
	f, ok := propensity32(v)
	if !ok {
		return b.err(i, "p", ErrPropensity, "propensity %s outside (0,1]", fmtValue(v))
	}
	if b.s.P == nil {
		b.s.P = nanColumn(b.s.N)
	}
	b.s.P[i] = f
	return nil
}

func (b *slotBuilder) setRating(i int, v float64) error {
	f, ok := rating32(v)
	if !ok {
		return b.err(i, "rating", ErrNonFinite, "rating %s is not a finite float32", fmtValue(v))
	}
	if b.s.Rating == nil {
		b.s.Rating = nanColumn(b.s.N)
	}
	b.s.Rating[i] = f
	return nil
}

const partialMsg = "missing value (other rows of the %s split have one)"

// finish resolves missing values and returns the split.
func (b *slotBuilder) finish() (*part, error) {
	s := b.s
	if len(b.rows) != s.N { // the file changed between the counting pass and this one
		return nil, fileErr(b.file, b.slot, "", ErrFormat, "read %d rows of the %s split, %d when counted: the file changed while it was read", len(b.rows), b.slot, s.N)
	}
	if b.noX && s.N > 0 { // unreachable: some row has a wrong dimension
		return nil, fileErr(b.file, b.slot, "x", ErrDimension, "the file cannot hold %d rows of %d values", s.N, s.D)
	}
	for i, id := range s.IDs {
		if id == "" {
			return nil, b.err(i, "id", ErrMissingField, "missing")
		}
	}
	if b.unlabelled() {
		// Neither o nor y nor a clean label on any row: rows to score.
		// The error is the one a training load reports (Load).
		if b.slot == SplitTest {
			s.unlabelled = b.err(0, "y", ErrMissingField, "missing on an observed row (o = 1)")
		} else {
			s.unlabelled = b.err(0, "o", ErrMissingField, "missing")
		}
		for i := range s.O {
			s.O[i], s.Y[i] = 0, 0
		}
	}
	if b.noFeedback() {
		for i := range s.O {
			s.O[i], s.Y[i] = 1, 0
		}
		s.NoFeedback = true
	}
	for i, o := range s.O {
		if o == missing8 {
			if b.slot != SplitTest {
				return nil, b.err(i, "o", ErrMissingField, "missing")
			}
			s.O[i] = 1 // the test split is fully observed unless it says otherwise
		}
	}
	if s.R != nil {
		for i, r := range s.R {
			if r == missing8 {
				return nil, b.err(i, "r", ErrMissingField, partialMsg, b.slot)
			}
		}
	}
	for i, y := range s.Y {
		switch {
		case s.O[i] == 0:
			s.Y[i] = 0
		case y != missing8:
		case b.slot == SplitTest && s.R != nil:
			s.Y[i] = s.R[i] // clean test row given only its clean label
		default:
			return nil, b.err(i, "y", ErrMissingField, "missing on an observed row (o = 1)")
		}
	}
	for _, c := range []struct {
		name string
		v    []float32
	}{{"p", s.P}, {"rating", s.Rating}} {
		for i, v := range c.v {
			if v != v {
				return nil, b.err(i, c.name, ErrMissingField, partialMsg, b.slot)
			}
		}
	}
	rows := b.rows
	// Drop the locations when they are the identity (saves memory).
	ident := true
	for i, r := range rows {
		if int(r) != i {
			ident = false
			break
		}
	}
	if ident && !b.line {
		rows = nil
	}
	return &part{s: s, rows: rows, line: b.line}, nil
}

// noFeedback reports a rated split with no o and no y on any row: a fully
// labelled file, the input of the semi-synthetic protocol.
// unlabelled reports a split without o, y, rating or clean label on any
// row (a file of rows to score).
func (b *slotBuilder) unlabelled() bool {
	s := b.s
	if s.R != nil || s.Rating != nil || s.N == 0 {
		return false
	}
	for i := range s.O {
		if s.O[i] != missing8 || s.Y[i] != missing8 {
			return false
		}
	}
	return true
}

func (b *slotBuilder) noFeedback() bool {
	s := b.s
	if s.Rating == nil {
		return false
	}
	for i := range s.O {
		if s.O[i] != missing8 || s.Y[i] != missing8 || s.Rating[i] != s.Rating[i] {
			return false
		}
	}
	return true
}

// newBuilders makes one builder per selected split label of a row-oriented
// file (sel maps a file label, "" for unlabelled rows, to a dataset slot),
// indexed train, val, test, unlabelled, with its KeepX plan. Labels are
// visited in a fixed order so KeepX calls and errors are deterministic.
func newBuilders(sel map[string]string, path string, line bool, counts map[string]int, keep func(string, int) []Range) ([4]*slotBuilder, map[string]*slotBuilder, error) {
	var byLabel [4]*slotBuilder
	out := map[string]*slotBuilder{}
	for _, label := range []string{"", SplitTrain, SplitVal, SplitTest} {
		slot, ok := sel[label]
		if !ok {
			continue
		}
		idx := 3
		if label != "" {
			idx = int(labelIndex(label))
		}
		b := newSlotBuilder(slot, path, line, counts[label])
		kp, err := planKeep(keep, slot, b.s.N)
		if err != nil {
			return byLabel, nil, err
		}
		b.keepX(kp)
		byLabel[idx] = b
		out[slot] = b
	}
	return byLabel, out, nil
}

// finishBuilders finishes the builders of a row-oriented reader into one
// part per slot, in a fixed order so that the first error is deterministic.
// A builder that never saw a row gets dimension 0 (an empty X).
func finishBuilders(out map[string]*slotBuilder) (map[string]*part, error) {
	parts := map[string]*part{}
	for _, slot := range labelNames {
		b, ok := out[slot]
		if !ok {
			continue
		}
		if b.s.X == nil {
			b.setD(0) // no rows at all
		}
		p, err := b.finish()
		if err != nil {
			return nil, err
		}
		parts[slot] = p
	}
	return parts, nil
}

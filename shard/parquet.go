package shard

import (
	"errors"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"

	"github.com/causalrm/causalrm/internal/atomicfile"
)

// Parquet layout: one row per example with columns
//
//	id      string, or int32/int64 (unsigned ones too)      required
//	x       list<float|double> (LIST, or a repeated leaf)     required
//	o       int or bool                                       required (test: defaults to 1)
//	y       int or bool, nullable                             required where o = 1
//	p       float or double, nullable                         optional
//	r       int or bool, nullable                             optional (clean label)
//	rating  float or double, nullable                         optional
//	split   string: train / val / test                        optional
//
// Integers and booleans are accepted for the 0/1 columns, floats for
// p and rating. Row numbers in errors are 0-based rows of the file.

type pqSource struct {
	path    string
	f       *os.File
	pf      *parquet.File
	cols    map[string]*parquet.Column // present columns by field name (x: its leaf)
	label   []int8                     // per file row: labelIndex of its split; nil if unlabelled
	counts  map[string]int
	rows    int   // rows of the file (checked against the row groups)
	xValues int64 // values (elements and nulls) the x pages announce
}

// pqRecover turns a panic of the Parquet library (or of this reader on data
// it failed to check) into an error naming the file. Deferred by every
// method that calls into parquet-go.
func pqRecover(path string, err *error) {
	if p := recover(); p != nil {
		*err = fileErr(path, "", "", ErrFormat, "corrupt Parquet file: %v", p)
	}
}

var labelNames = [3]string{SplitTrain, SplitVal, SplitTest}

func labelIndex(l string) int8 {
	for i, n := range labelNames {
		if n == l {
			return int8(i)
		}
	}
	return -1
}

func openParquetSource(path string) (s *pqSource, err error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	defer pqRecover(path, &err)
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	footerLen, err := pqCheckFooter(path, f, size)
	if err != nil {
		return nil, err
	}
	pf, err := parquet.OpenFile(f, size, parquet.SkipBloomFilters(true), parquet.SkipPageIndex(true))
	if err != nil {
		return nil, fileErr(path, "", "", ErrFormat, "not a readable Parquet file: %v", err)
	}
	s = &pqSource{path: path, f: f, pf: pf, cols: map[string]*parquet.Column{}}
	if err := s.bindColumns(); err != nil {
		return nil, err
	}
	// The row count, checked before anything is sized by it.
	md := pf.Metadata()
	if s.rows, err = pqCountRows(path, md, len(pf.RowGroups()), size); err != nil {
		return nil, err
	}
	if err := s.checkPages(size, footerLen, md); err != nil {
		return nil, err
	}
	if err := s.readLabels(); err != nil {
		return nil, err
	}
	return s, nil
}

// bindColumns finds the columns of the layout in the file's schema,
// checking their shape and physical type (x: its leaf, a list of floats).
func (s *pqSource) bindColumns() error {
	root := s.pf.Root()
	bad := func(field, format string, args ...any) error {
		return fileErr(s.path, "", field, ErrFormat, format, args...)
	}
	for _, name := range []string{"id", "o", "y", "p", "r", "rating", "split"} {
		c := root.Column(name)
		if c == nil {
			continue
		}
		if !c.Leaf() || c.MaxRepetitionLevel() != 0 {
			return bad(name, "expected a scalar column, got %s", c)
		}
		if !pqKindOK(name, c.Type().Kind()) {
			return bad(name, "unsupported physical type %s", c.Type().Kind())
		}
		s.cols[name] = c
	}
	x := root.Column("x")
	if x == nil {
		return fileErr(s.path, "", "x", ErrMissingField, "no x column")
	}
	leaf := x
	for !leaf.Leaf() {
		ch := leaf.Columns()
		if len(ch) != 1 {
			return bad("x", "expected a list of floats, got %s", x)
		}
		leaf = ch[0]
	}
	if leaf.MaxRepetitionLevel() != 1 {
		return bad("x", "expected a list of floats (one level of repetition), got %s", x)
	}
	if k := leaf.Type().Kind(); k != parquet.Float && k != parquet.Double {
		return bad("x", "expected float or double elements, got %s", k)
	}
	s.cols["x"] = leaf
	return nil
}

// pqKindOK reports whether the scalar column name may have physical type k.
func pqKindOK(name string, k parquet.Kind) bool {
	switch name {
	case "id":
		return k == parquet.ByteArray || k == parquet.FixedLenByteArray || k == parquet.Int32 || k == parquet.Int64
	case "o", "y", "r":
		return k == parquet.Boolean || k == parquet.Int32 || k == parquet.Int64 || k == parquet.Float || k == parquet.Double
	case "p", "rating":
		return k == parquet.Float || k == parquet.Double || k == parquet.Int32 || k == parquet.Int64
	case "split":
		return k == parquet.ByteArray || k == parquet.FixedLenByteArray
	}
	return false
}

// checkPages checks the pages of every column read, before parquet-go
// reads them, and keeps the count of values the x pages announce.
func (s *pqSource) checkPages(size, footerLen int64, md *format.FileMetaData) error {
	for _, name := range []string{"split", "id", "o", "y", "r", "p", "rating", "x"} { // fixed order: deterministic errors
		c, ok := s.cols[name]
		if !ok {
			continue
		}
		k := c.Type().Kind()
		lim := pqPageLimits{scalar: name != "x", values: maxDecoded(size) / 4,
			dict8: k == parquet.Boolean || (k == parquet.FixedLenByteArray && c.Type().Length() < 4)}
		nv, err := pqCheckPages(s.path, name, s.f, size, footerLen, md, c.Index(), lim)
		if err != nil {
			return err
		}
		if name == "x" {
			s.xValues = nv
		}
	}
	return nil
}

// readLabels counts the rows of each split, reading the split column into
// s.label; a file without one is one unlabelled split.
func (s *pqSource) readLabels() error {
	n := s.rows
	s.counts = map[string]int{}
	if _, ok := s.cols["split"]; !ok {
		s.counts[""] = n
		return nil
	}
	s.label = make([]int8, 0, n)
	err := s.scan("split", func(row int, v parquet.Value) error {
		if v.IsNull() {
			return loc{file: s.path, row: row}.err("", "split", ErrMissingField, "missing")
		}
		raw := string(v.ByteArray())
		l, ok := CanonicalSplit(raw)
		if !ok {
			return loc{file: s.path, row: row}.err("", "split", ErrSplitName, "unknown split %q (want train, val or test)", raw)
		}
		s.label = append(s.label, labelIndex(l))
		s.counts[l]++
		return nil
	})
	if err != nil {
		return err
	}
	if len(s.label) != n {
		return fileErr(s.path, "", "split", ErrFormat, "column has %d values for the file's %d rows", len(s.label), n)
	}
	return nil
}

func (s *pqSource) labels() map[string]int { return s.counts }
func (s *pqSource) close() error           { return s.f.Close() }

// scan calls fn for every value of a scalar column, with its file row.
func (s *pqSource) scan(name string, fn func(row int, v parquet.Value) error) error {
	row := 0
	return s.scanValues(name, func(vals []parquet.Value) error {
		for _, v := range vals {
			if row >= s.rows {
				return fileErr(s.path, "", name, ErrFormat, "column has more values than the file has rows")
			}
			if err := fn(row, v); err != nil {
				return err
			}
			row++
		}
		return nil
	})
}

// scanValues calls fn with batches of the values of the leaf column of
// field name, in file order across row groups, checking that each row group
// holds as many rows of the column as it announces. Byte-array values are
// only valid during fn.
func (s *pqSource) scanValues(name string, fn func(vals []parquet.Value) error) (err error) {
	defer pqRecover(s.path, &err)
	c := s.cols[name]
	repeated := c.MaxRepetitionLevel() > 0
	buf := make([]parquet.Value, 4096)
	for g, rg := range s.pf.RowGroups() {
		chunks := rg.ColumnChunks()
		if c.Index() >= len(chunks) {
			return fileErr(s.path, "", name, ErrFormat, "corrupt Parquet file: row group %d has no column %d", g, c.Index())
		}
		want, got := rg.NumRows(), int64(0)
		r := parquet.NewColumnChunkValueReader(chunks[c.Index()])
		for {
			n, err := r.ReadValues(buf)
			if n > 0 {
				for _, v := range buf[:n] {
					if !repeated || v.RepetitionLevel() == 0 {
						got++
					}
				}
				if got > want {
					r.Close()
					return fileErr(s.path, "", name, ErrFormat, "column has more values than the %d rows of row group %d", want, g)
				}
				if ferr := fn(buf[:n]); ferr != nil {
					r.Close()
					return ferr
				}
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				r.Close()
				return fileErr(s.path, "", name, ErrFormat, "reading column: %v", err)
			}
		}
		r.Close()
		if got != want {
			return fileErr(s.path, "", name, ErrFormat, "column has %d values for the %d rows of row group %d", got, want, g)
		}
	}
	return nil
}

func isUnsigned(c *parquet.Column) bool {
	lt := c.Type().LogicalType()
	if lt == nil {
		return false
	}
	it, ok := lt.Value.(*format.IntType)
	return ok && !it.IsSigned
}

// number converts a non-null numeric value of column c to float64.
func number(c *parquet.Column, v parquet.Value) float64 {
	switch v.Kind() {
	case parquet.Boolean:
		if v.Boolean() {
			return 1
		}
		return 0
	case parquet.Int32:
		if isUnsigned(c) {
			return float64(uint32(v.Int32()))
		}
		return float64(v.Int32())
	case parquet.Int64:
		if isUnsigned(c) {
			return float64(uint64(v.Int64()))
		}
		return float64(v.Int64())
	case parquet.Float:
		return float64(v.Float())
	case parquet.Double:
		return v.Double()
	}
	return math.NaN()
}

func (s *pqSource) read(sel map[string]string, wantD int, keep func(string, int) []Range) (_ map[string]*part, err error) {
	defer pqRecover(s.path, &err)
	n := s.rows
	if s.label != nil && len(s.label) != n {
		return nil, fileErr(s.path, "", "split", ErrFormat, "column has %d values for the file's %d rows", len(s.label), n)
	}
	// Route every file row to a builder and its row there.
	byLabel, out, err := newBuilders(sel, s.path, false, s.counts, keep)
	if err != nil {
		return nil, err
	}
	dest := make([]*slotBuilder, n)
	at := make([]int32, n)
	for row := 0; row < n; row++ {
		idx := 3
		if s.label != nil {
			idx = int(s.label[row])
		}
		if b := byLabel[idx]; b != nil {
			dest[row] = b
			at[row] = int32(len(b.rows))
			b.rows = append(b.rows, int32(row))
		}
	}
	if wantD > 0 {
		setDims(out, wantD, s.xValues)
	}
	if err := s.readX(dest, at, out, wantD); err != nil {
		return nil, err
	}

	if c, ok := s.cols["id"]; ok {
		unsigned := isUnsigned(c)
		err := s.scan("id", func(row int, v parquet.Value) error {
			b := dest[row]
			if b == nil || v.IsNull() {
				return nil
			}
			var id string
			switch v.Kind() {
			case parquet.Int32:
				if unsigned {
					id = strconv.FormatUint(uint64(uint32(v.Int32())), 10)
				} else {
					id = strconv.FormatInt(int64(v.Int32()), 10)
				}
			case parquet.Int64:
				if unsigned {
					id = strconv.FormatUint(uint64(v.Int64()), 10)
				} else {
					id = strconv.FormatInt(v.Int64(), 10)
				}
			default:
				id = string(v.ByteArray())
			}
			return b.setID(int(at[row]), id)
		})
		if err != nil {
			return nil, err
		}
	}
	setters := []struct {
		name string
		set  func(b *slotBuilder, i int, v float64) error
	}{
		{"o", (*slotBuilder).setO}, {"r", (*slotBuilder).setR}, {"y", (*slotBuilder).setY},
		{"p", (*slotBuilder).setP}, {"rating", (*slotBuilder).setRating},
	}
	for _, st := range setters {
		c, ok := s.cols[st.name]
		if !ok {
			continue
		}
		err := s.scan(st.name, func(row int, v parquet.Value) error {
			b := dest[row]
			if b == nil || v.IsNull() {
				return nil
			}
			return st.set(b, int(at[row]), number(c, v))
		})
		if err != nil {
			return nil, err
		}
	}
	return finishBuilders(out)
}

// readX streams the x column into the builders' X, checking every row's
// length and finiteness. The first selected row fixes D when wantD is 0.
// Rows a builder does not keep are checked the same way but not stored.
func (s *pqSource) readX(dest []*slotBuilder, at []int32, out map[string]*slotBuilder, wantD int) error {
	c := s.cols["x"]
	maxDef := c.MaxDefinitionLevel()
	nullElemDef := -1
	if c.Optional() {
		nullElemDef = maxDef - 1
	}
	isDouble := c.Type().Kind() == parquet.Double
	d := wantD
	var first []float32 // the first selected row while D is unknown
	row := -1
	var b *slotBuilder
	var dst []float32 // the row's storage; nil while D is unknown or the row is not kept
	count := 0
	var rowErr error
	bad, badAt := float32(0), -1 // first non-finite value of a row not stored

	endRow := func() error {
		if row < 0 || b == nil {
			return nil
		}
		i := int(at[row])
		if rowErr != nil {
			return rowErr
		}
		if d == 0 {
			if len(first) == 0 {
				return b.err(i, "x", ErrDimension, "x has dimension 0; need at least 1")
			}
			d = len(first)
			setDims(out, d, s.xValues)
			copy(b.xRow(i), first) // a no-op when the row is not kept
			x := first
			first = nil
			return b.checkX(i, x)
		}
		if count != d {
			return b.err(i, "x", ErrDimension, "expected %d values, got %d", d, count)
		}
		if dst == nil {
			if badAt >= 0 {
				return b.err(i, "x", ErrNonFinite, "x[%d] = %v", badAt, bad)
			}
			return nil
		}
		return b.checkX(i, dst)
	}
	err := s.scanValues("x", func(vals []parquet.Value) error {
		for _, v := range vals {
			if v.RepetitionLevel() == 0 {
				if err := endRow(); err != nil {
					return err
				}
				row++
				if row >= len(dest) {
					return fileErr(s.path, "", "x", ErrFormat, "column has more rows than the file")
				}
				b = dest[row]
				count, rowErr, badAt, dst = 0, nil, -1, nil
				if b != nil && d > 0 {
					dst = b.xRow(int(at[row]))
				}
			}
			if b == nil || rowErr != nil {
				continue
			}
			def := v.DefinitionLevel()
			if def < maxDef {
				if def == nullElemDef {
					rowErr = b.err(int(at[row]), "x", ErrMissingField, "null element at index %d", count)
				}
				continue // otherwise a null or empty list: no elements
			}
			var f float32
			if isDouble {
				f = float32(v.Double())
			} else {
				f = v.Float()
			}
			switch {
			case d == 0:
				first = append(first, f)
			case count >= d:
			case dst != nil:
				dst[count] = f
			case badAt < 0 && !finite32(f):
				bad, badAt = f, count
			}
			count++
		}
		return nil
	})
	if err != nil {
		return err
	}
	return endRow()
}

// ---------------------------------------------------------------------------
// Writing

type pqRow struct {
	ID     string    `parquet:"id"`
	Split  string    `parquet:"split"`
	X      []float32 `parquet:"x,list"`
	O      int32     `parquet:"o"`
	Y      *int32    `parquet:"y,optional"`
	P      *float32  `parquet:"p,optional"`
	R      *int32    `parquet:"r,optional"`
	Rating *float32  `parquet:"rating,optional"`
}

// WriteParquet writes every non-nil split of ds to one Parquet file with a
// split column (layout above), atomically. y is written as null where o = 0;
// absent optional columns are all null. Embedding rows are not copied.
func WriteParquet(path string, ds *Dataset) error {
	if err := ds.validateFull(); err != nil {
		return err
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		pw := parquet.NewGenericWriter[pqRow](w, parquet.Compression(&parquet.Zstd))
		const batch = 256
		rows := make([]pqRow, 0, batch)
		ints := make([]int32, 2*batch)
		floats := make([]float32, 2*batch)
		flush := func() error {
			if len(rows) == 0 {
				return nil
			}
			_, err := pw.Write(rows)
			rows = rows[:0]
			return err
		}
		for _, e := range ds.slots() {
			sp := e.s
			if sp == nil {
				continue
			}
			for i := 0; i < sp.N; i++ {
				k := len(rows)
				r := pqRow{ID: sp.IDs[i], Split: e.name, X: sp.Row(i), O: int32(sp.O[i])}
				if sp.O[i] == 1 {
					ints[2*k] = int32(sp.Y[i])
					r.Y = &ints[2*k]
				}
				if sp.R != nil {
					ints[2*k+1] = int32(sp.R[i])
					r.R = &ints[2*k+1]
				}
				if sp.P != nil {
					floats[2*k] = sp.P[i]
					r.P = &floats[2*k]
				}
				if sp.Rating != nil {
					floats[2*k+1] = sp.Rating[i]
					r.Rating = &floats[2*k+1]
				}
				rows = append(rows, r)
				if len(rows) == batch {
					if err := flush(); err != nil {
						return err
					}
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
		return pw.Close()
	})
}

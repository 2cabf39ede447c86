package shard

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/causalrm/causalrm/internal/atomicfile"
)

// JSONL layout: one JSON object per line with the fields of the Parquet
// layout (id, x, o, y, p, r, rating, split). id is a string or an integer;
// x an array of numbers; o, y, r are 0/1 or booleans; null means absent.
// The non-standard tokens NaN, Infinity and -Infinity (as Python's json
// writes them) are parsed so that they can be reported as non-finite values.
// Blank lines are skipped; line numbers in errors are 1-based.
// A ".gz" suffix means gzip compression.

type jsonlSource struct {
	path   string
	counts map[string]int
	bytes  int64 // bytes of the non-blank lines (decompressed)
}

// maxLineBytes bounds a line (decompressed); a variable for tests.
var maxLineBytes = 64 << 20

// fmtBytes formats a byte count that is a whole number of KiB, MiB or GiB
// briefly ("64 MiB").
func fmtBytes(n int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + " " + u.name
		}
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// capReader fails once more than limit bytes have been read from r.
type capReader struct {
	r     io.Reader
	n     int64
	limit int64
	err   error
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.n > c.limit {
		return 0, c.err
	}
	p = p[:min(int64(len(p)), c.limit-c.n+1)]
	k, err := c.r.Read(p)
	c.n += int64(k)
	if c.n > c.limit {
		return k, c.err
	}
	return k, err
}

func openJSONLSource(path string) (*jsonlSource, error) {
	s := &jsonlSource{path: path, counts: map[string]int{}}
	firstWithout, with, rows := 0, 0, 0
	err := s.eachLine(func(line int, b []byte) error {
		rows++
		s.bytes += int64(len(b))
		var split []byte
		err := parseObject(b, func(key string, val []byte) error {
			if key == "split" {
				split = val
			}
			return nil
		})
		if err != nil {
			return loc{file: path, row: line, line: true}.err("", "", ErrFormat, "invalid JSON object: %v", err)
		}
		if split == nil || string(split) == "null" {
			if firstWithout == 0 {
				firstWithout = line
			}
			return nil
		}
		raw, ok := jsonString(split)
		if !ok {
			return loc{file: path, row: line, line: true}.err("", "split", ErrFormat, "expected a string, got %s", clip(split))
		}
		l, ok := CanonicalSplit(raw)
		if !ok {
			return loc{file: path, row: line, line: true}.err("", "split", ErrSplitName, "unknown split %q (want train, val or test)", raw)
		}
		s.counts[l]++
		with++
		return nil
	})
	if err != nil {
		return nil, err
	}
	if with > 0 && firstWithout > 0 {
		return nil, loc{file: path, row: firstWithout, line: true}.err("", "split", ErrMissingField, "missing (other lines have one)")
	}
	if with == 0 {
		s.counts[""] = rows
	}
	return s, nil
}

func (s *jsonlSource) labels() map[string]int { return s.counts }
func (s *jsonlSource) close() error           { return nil }

// eachLine calls fn with every non-blank line (without its newline) and its
// 1-based number. b is only valid during fn.
//
// A line longer than maxLineBytes is an error (never read whole). A
// gzipped file may decompress to maxDecoded of its size at most.
func (s *jsonlSource) eachLine(fn func(line int, b []byte) error) error {
	f, err := openRegular(s.path)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(strings.ToLower(s.path), ".gz") {
		st, err := f.Stat()
		if err != nil {
			return err
		}
		gz, err := gzip.NewReader(f)
		if err != nil {
			return fileErr(s.path, "", "", ErrFormat, "gzip: %v", err)
		}
		defer gz.Close()
		limit := maxDecoded(st.Size())
		r = &capReader{r: gz, limit: limit, err: fileErr(s.path, "", "", ErrFormat,
			"gzip: decompresses to more than %d bytes (%s plus %d times its %d bytes): refused as a likely decompression bomb",
			limit, fmtBytes(decodeFloor), maxExpansion, st.Size())}
	}
	br := bufio.NewReaderSize(r, 1<<16)
	var long []byte
	tooLong := func(line int) error {
		return fileErr(s.path, "", "", ErrFormat, "line %d is longer than %s", line, fmtBytes(int64(maxLineBytes)))
	}
	for line := 1; ; line++ {
		if line > math.MaxInt32 { // rows are located by int32 line numbers
			return fileErr(s.path, "", "", ErrFormat, "more than %d lines", math.MaxInt32)
		}
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = appendDoubling(long[:0], b)
			for errors.Is(err, bufio.ErrBufferFull) {
				if len(long) > maxLineBytes {
					return tooLong(line)
				}
				b, err = br.ReadSlice('\n')
				long = appendDoubling(long, b)
			}
			b = long
		}
		if n := len(b); n > maxLineBytes && (n > maxLineBytes+1 || b[n-1] != '\n') {
			return tooLong(line)
		}
		var re *RowError
		if errors.As(err, &re) {
			return err
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fileErr(s.path, "", "", ErrFormat, "line %d: %v", line, err)
		}
		if line == 1 {
			b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
		}
		if t := bytes.TrimSpace(b); len(t) > 0 {
			if ferr := fn(line, t); ferr != nil {
				return ferr
			}
		}
		if err != nil { // io.EOF
			return nil
		}
	}
}

// appendDoubling is append that doubles the capacity when it grows (up to
// what the line length limit lets a line reach), so that building a line of
// n bytes allocates 2n at most (append grows large slices by 1.25 and
// allocates five times the final size).
func appendDoubling(b, add []byte) []byte {
	if len(b)+len(add) > cap(b) {
		c := min(2*cap(b), maxLineBytes+1<<16+1)
		nb := make([]byte, len(b), max(c, len(b)+len(add)))
		copy(nb, b)
		b = nb
	}
	return append(b, add...)
}

// jsonlRow holds the raw values of the fields of one line (nil: absent).
type jsonlRow struct {
	id, x, o, y, p, r, rating, split []byte
}

// jsonlRead is the state of read's pass over the lines: where each split's
// rows go and the embedding dimension, which the first row fixes when the
// caller asks for none.
type jsonlRead struct {
	s        *jsonlSource
	byLabel  [4]*slotBuilder
	out      map[string]*slotBuilder
	capacity int64     // the most embedding values the file can hold
	d        int       // the dimension; 0 until the first row gives it
	first    []float32 // the first row's x, parsed before d is known
	skip     []float32 // the x of a row not kept: parsed and checked, not stored
}

func (s *jsonlSource) read(sel map[string]string, wantD int, keep func(string, int) []Range) (map[string]*part, error) {
	byLabel, out, err := newBuilders(sel, s.path, true, s.counts, keep)
	if err != nil {
		return nil, err
	}
	// Each embedding value takes two bytes of text at least ("0," or "0]").
	r := &jsonlRead{s: s, byLabel: byLabel, out: out, capacity: s.bytes / 2, d: wantD}
	if wantD > 0 {
		setDims(out, wantD, r.capacity)
	}
	if err := s.eachLine(r.line); err != nil {
		return nil, err
	}
	return finishBuilders(out)
}

// line reads one line into the builder of its split (a line of a split not
// selected is skipped unchecked).
func (r *jsonlRead) line(line int, text []byte) error {
	row, err := parseJSONLRow(text)
	if err != nil {
		return loc{file: r.s.path, row: line, line: true}.err("", "", ErrFormat, "invalid JSON object: %v", err)
	}
	b, i, err := r.route(line, row.split)
	if b == nil || err != nil {
		return err
	}
	if v := row.id; isPresent(v) {
		id, err := parseID(v)
		if err != nil {
			return b.err(i, "id", ErrFormat, "%v", err)
		}
		if err := b.setID(i, id); err != nil {
			return err
		}
	}
	if !isPresent(row.x) {
		return b.err(i, "x", ErrMissingField, "missing")
	}
	if err := r.readX(b, i, row.x); err != nil {
		return err
	}
	return setJSONLLabels(b, i, &row)
}

// parseJSONLRow picks the fields of the layout out of one line's object
// (other fields are skipped).
func parseJSONLRow(text []byte) (jsonlRow, error) {
	var row jsonlRow
	err := parseObject(text, func(key string, val []byte) error {
		switch key {
		case "id":
			row.id = val
		case "x":
			row.x = val
		case "o":
			row.o = val
		case "y":
			row.y = val
		case "p":
			row.p = val
		case "r":
			row.r = val
		case "rating":
			row.rating = val
		case "split":
			row.split = val
		}
		return nil
	})
	return row, err
}

// route finds the builder of the line's split and appends the line to its
// rows, returning the builder (nil when the split is not read) and the
// line's row in it. The first pass checked the split names, so a name it did
// not count means the file changed in between.
func (r *jsonlRead) route(line int, split []byte) (*slotBuilder, int, error) {
	idx := 3
	if split != nil && string(split) != "null" {
		raw, _ := jsonString(split)
		l, _ := CanonicalSplit(raw)
		idx = int(labelIndex(l))
	}
	if idx < 0 {
		return nil, 0, loc{file: r.s.path, row: line, line: true}.err("", "split", ErrFormat, "the file changed while it was read")
	}
	b := r.byLabel[idx]
	if b == nil {
		return nil, 0, nil
	}
	i := len(b.rows)
	if i >= b.s.N { // more rows than the first pass counted
		return nil, 0, loc{file: r.s.path, row: line, line: true}.err(b.slot, "", ErrFormat, "the file changed while it was read")
	}
	b.rows = append(b.rows, int32(line))
	return b, i, nil
}

// readX parses row i's embedding v straight into its storage (into a
// scratch row when the row is not kept) and checks its length and values.
func (r *jsonlRead) readX(b *slotBuilder, i int, v []byte) error {
	if r.d == 0 {
		return r.readFirstX(b, i, v)
	}
	d := r.d
	dst := b.xRow(i)
	if dst == nil {
		if cap(r.skip) < d {
			r.skip = make([]float32, 0, d)
		}
		dst = r.skip[:d]
	}
	_, got, err := parseFloatArray(v, dst[:0], d)
	if err != nil {
		return b.err(i, "x", ErrFormat, "%v", err)
	}
	if got != d {
		return b.err(i, "x", ErrDimension, "expected %d values, got %d", d, got)
	}
	return b.checkX(i, dst)
}

// readFirstX parses the first row's embedding, whose length fixes the
// dimension, and only then sizes the builders' X (see setDims).
func (r *jsonlRead) readFirstX(b *slotBuilder, i int, v []byte) error {
	var err error
	if r.first, _, err = parseFloatArray(v, r.first[:0], -1); err != nil {
		return b.err(i, "x", ErrFormat, "%v", err)
	}
	if len(r.first) == 0 {
		return b.err(i, "x", ErrDimension, "x has dimension 0; need at least 1")
	}
	r.d = len(r.first)
	setDims(r.out, r.d, r.capacity)
	copy(b.xRow(i), r.first) // a no-op when the row is not kept
	return b.checkX(i, r.first)
}

// setJSONLLabels sets row i's o, r, y, p and rating from their JSON values,
// o before y (setY reads it). A y that is not 0/1 on an unobserved row is
// ignored, as its value would be.
func setJSONLLabels(b *slotBuilder, i int, row *jsonlRow) error {
	for _, f := range []struct {
		name string
		v    []byte
		flag bool
		set  func(b *slotBuilder, i int, v float64) error
	}{
		{"o", row.o, true, (*slotBuilder).setO}, {"r", row.r, true, (*slotBuilder).setR},
		{"y", row.y, true, (*slotBuilder).setY}, {"p", row.p, false, (*slotBuilder).setP},
		{"rating", row.rating, false, (*slotBuilder).setRating},
	} {
		if !isPresent(f.v) {
			continue
		}
		v, err := parseNumber(f.v, f.flag)
		if err != nil {
			if f.flag && !(f.name == "y" && b.s.O[i] == 0) {
				return b.err(i, f.name, ErrNotBinary, "value %s not in {0,1}", clip(f.v))
			}
			if !f.flag {
				return b.err(i, f.name, ErrFormat, "expected a number, got %s", clip(f.v))
			}
			continue // a label on an unobserved row is ignored
		}
		if err := f.set(b, i, v); err != nil {
			return err
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Writing

// WriteJSONL writes every non-nil split of ds as JSON lines with a "split"
// field, atomically; a ".gz" suffix gzips the output. Floats are written in
// their shortest float32 form, so reading back gives identical bits.
func WriteJSONL(path string, ds *Dataset) error {
	if err := ds.validateFull(); err != nil {
		return err
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		var gz *gzip.Writer
		if strings.HasSuffix(strings.ToLower(path), ".gz") {
			gz = gzip.NewWriter(w)
			w = gz
		}
		var buf []byte
		for _, e := range ds.slots() {
			sp := e.s
			if sp == nil {
				continue
			}
			for i := 0; i < sp.N; i++ {
				buf = append(buf[:0], `{"id":`...)
				id, _ := json.Marshal(sp.IDs[i])
				buf = append(buf, id...)
				buf = append(buf, `,"split":"`...)
				buf = append(buf, e.name...)
				buf = append(buf, `","x":[`...)
				for k, v := range sp.Row(i) {
					if k > 0 {
						buf = append(buf, ',')
					}
					buf = strconv.AppendFloat(buf, float64(v), 'g', -1, 32)
				}
				buf = append(buf, `],"o":`...)
				buf = strconv.AppendUint(buf, uint64(sp.O[i]), 10)
				if sp.O[i] == 1 {
					buf = append(buf, `,"y":`...)
					buf = strconv.AppendUint(buf, uint64(sp.Y[i]), 10)
				}
				if sp.R != nil {
					buf = append(buf, `,"r":`...)
					buf = strconv.AppendUint(buf, uint64(sp.R[i]), 10)
				}
				if sp.P != nil {
					buf = append(buf, `,"p":`...)
					buf = strconv.AppendFloat(buf, float64(sp.P[i]), 'g', -1, 32)
				}
				if sp.Rating != nil {
					buf = append(buf, `,"rating":`...)
					buf = strconv.AppendFloat(buf, float64(sp.Rating[i]), 'g', -1, 32)
				}
				buf = append(buf, "}\n"...)
				if _, err := w.Write(buf); err != nil {
					return err
				}
			}
		}
		if gz != nil {
			return gz.Close()
		}
		return nil
	})
}

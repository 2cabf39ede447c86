package shard

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
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

type jsonlRow struct {
	id, x, o, y, p, r, rating, split []byte
}

func (s *jsonlSource) read(sel map[string]string, wantD int, keep func(string, int) []Range) (map[string]*part, error) {
	byLabel, out, err := newBuilders(sel, s.path, true, s.counts, keep)
	if err != nil {
		return nil, err
	}
	// Each embedding value takes two bytes of text at least ("0," or "0]").
	capacity := s.bytes / 2
	if wantD > 0 {
		setDims(out, wantD, capacity)
	}
	d := wantD
	var first []float32
	var skip []float32 // the x of a row not kept: parsed and checked, not stored
	err = s.eachLine(func(line int, text []byte) error {
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
		if err != nil {
			return loc{file: s.path, row: line, line: true}.err("", "", ErrFormat, "invalid JSON object: %v", err)
		}
		idx := 3
		if row.split != nil && string(row.split) != "null" {
			raw, _ := jsonString(row.split)
			l, _ := CanonicalSplit(raw)
			idx = int(labelIndex(l))
		}
		if idx < 0 {
			return loc{file: s.path, row: line, line: true}.err("", "split", ErrFormat, "the file changed while it was read")
		}
		b := byLabel[idx]
		if b == nil {
			return nil
		}
		i := len(b.rows)
		if i >= b.s.N { // more rows than the first pass counted
			return loc{file: s.path, row: line, line: true}.err(b.slot, "", ErrFormat, "the file changed while it was read")
		}
		b.rows = append(b.rows, int32(line))
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
		if d == 0 {
			var err error
			if first, _, err = parseFloatArray(row.x, first[:0], -1); err != nil {
				return b.err(i, "x", ErrFormat, "%v", err)
			}
			if len(first) == 0 {
				return b.err(i, "x", ErrDimension, "x has dimension 0; need at least 1")
			}
			d = len(first)
			setDims(out, d, capacity)
			copy(b.xRow(i), first) // a no-op when the row is not kept
			if err := b.checkX(i, first); err != nil {
				return err
			}
		} else {
			dst := b.xRow(i)
			if dst == nil {
				if cap(skip) < d {
					skip = make([]float32, 0, d)
				}
				dst = skip[:d]
			}
			_, got, err := parseFloatArray(row.x, dst[:0], d)
			if err != nil {
				return b.err(i, "x", ErrFormat, "%v", err)
			}
			if got != d {
				return b.err(i, "x", ErrDimension, "expected %d values, got %d", d, got)
			}
			if err := b.checkX(i, dst); err != nil {
				return err
			}
		}
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
	})
	if err != nil {
		return nil, err
	}
	parts := map[string]*part{}
	for _, slot := range labelNames {
		b, ok := out[slot]
		if !ok {
			continue
		}
		if b.s.X == nil {
			b.setD(0)
		}
		p, err := b.finish()
		if err != nil {
			return nil, err
		}
		parts[slot] = p
	}
	return parts, nil
}

func isPresent(v []byte) bool { return v != nil && string(v) != "null" }

func clip(v []byte) string {
	if len(v) > 40 {
		return string(v[:37]) + "..."
	}
	return string(v)
}

// ---------------------------------------------------------------------------
// A small JSON scanner for flat objects. It accepts the non-standard number
// tokens NaN, Infinity and -Infinity, and skips nested values of fields it
// does not use.

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// parseObject calls fn for every key of the object in b with the raw bytes of
// its value.
func parseObject(b []byte, fn func(key string, val []byte) error) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errors.New("expected '{'")
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			if i >= len(b) || b[i] != '"' {
				return fmt.Errorf("expected a key at byte %d", i)
			}
			end, err := skipString(b, i)
			if err != nil {
				return err
			}
			key, ok := jsonString(b[i:end])
			if !ok {
				return fmt.Errorf("bad key at byte %d", i)
			}
			i = skipWS(b, end)
			if i >= len(b) || b[i] != ':' {
				return fmt.Errorf("expected ':' at byte %d", i)
			}
			i = skipWS(b, i+1)
			vend, err := skipValue(b, i)
			if err != nil {
				return fmt.Errorf("field %q: %v", key, err)
			}
			if err := fn(key, b[i:vend]); err != nil {
				return err
			}
			i = skipWS(b, vend)
			if i < len(b) && b[i] == ',' {
				i = skipWS(b, i+1)
				continue
			}
			if i < len(b) && b[i] == '}' {
				i++
				break
			}
			return fmt.Errorf("expected ',' or '}' at byte %d", i)
		}
	}
	if i = skipWS(b, i); i != len(b) {
		return fmt.Errorf("trailing data at byte %d", i)
	}
	return nil
}

// skipString returns the index just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errors.New("unterminated string")
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("missing value")
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := skipString(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errors.New("unterminated array or object")
	}
	j := i
	for j < len(b) && !isDelim(b[j]) {
		j++
	}
	tok := string(b[i:j])
	switch tok {
	case "":
		return 0, fmt.Errorf("unexpected %q", b[i])
	case "true", "false", "null", "NaN", "Infinity", "-Infinity":
		return j, nil
	}
	if _, err := strconv.ParseFloat(tok, 64); err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("invalid token %q", clip(b[i:j]))
	}
	return j, nil
}

func isDelim(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\r', '\n', ':', '"', '{', '[':
		return true
	}
	return false
}

// jsonString decodes a JSON string literal.
func jsonString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), true
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}

// parseID accepts a string or an integer literal (kept as written).
func parseID(v []byte) (string, error) {
	if v[0] == '"' {
		s, ok := jsonString(v)
		if !ok {
			return "", fmt.Errorf("invalid string %s", clip(v))
		}
		return s, nil
	}
	s := string(v)
	t := strings.TrimPrefix(s, "-")
	if t == "" || strings.Trim(t, "0123456789") != "" {
		return "", fmt.Errorf("expected a string or an integer, got %s", clip(v))
	}
	return s, nil
}

// parseNumber parses a number token (NaN and ±Infinity included); booleans
// are accepted as 0/1 when flag is set.
func parseNumber(v []byte, flag bool) (float64, error) {
	switch string(v) {
	case "true":
		if flag {
			return 1, nil
		}
	case "false":
		if flag {
			return 0, nil
		}
	case "NaN":
		return math.NaN(), nil
	case "Infinity":
		return math.Inf(1), nil
	case "-Infinity":
		return math.Inf(-1), nil
	}
	if len(v) == 0 || v[0] == '"' || v[0] == '[' || v[0] == '{' || v[0] == 't' || v[0] == 'f' {
		return 0, errors.New("not a number")
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, err
	}
	return f, nil
}

// parseFloatArray appends the numbers of the JSON array v to dst as float32
// (correctly rounded) and returns the element count. With limit >= 0 at most
// limit values are appended; the rest are only counted.
func parseFloatArray(v []byte, dst []float32, limit int) ([]float32, int, error) {
	if len(v) == 0 || v[0] != '[' {
		return dst, 0, fmt.Errorf("expected an array, got %s", clip(v))
	}
	i := skipWS(v, 1)
	if i < len(v) && v[i] == ']' {
		return dst, 0, nil
	}
	n := 0
	for {
		j := i
		for j < len(v) && !isDelim(v[j]) {
			j++
		}
		tok := v[i:j]
		var f float32
		switch string(tok) {
		case "NaN":
			f = float32(math.NaN())
		case "Infinity":
			f = float32(math.Inf(1))
		case "-Infinity":
			f = float32(math.Inf(-1))
		case "":
			return dst, 0, fmt.Errorf("element %d: expected a number", n)
		case "null":
			return dst, 0, fmt.Errorf("element %d is null", n)
		default:
			g, err := strconv.ParseFloat(string(tok), 32)
			if err != nil && !errors.Is(err, strconv.ErrRange) {
				return dst, 0, fmt.Errorf("element %d: invalid number %q", n, clip(tok))
			}
			f = float32(g)
		}
		if limit < 0 || n < limit {
			dst = append(dst, f)
		}
		n++
		i = skipWS(v, j)
		if i < len(v) && v[i] == ',' {
			i = skipWS(v, i+1)
			continue
		}
		if i < len(v) && v[i] == ']' {
			break
		}
		return dst, 0, fmt.Errorf("element %d: expected ',' or ']'", n-1)
	}
	return dst, n, nil
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

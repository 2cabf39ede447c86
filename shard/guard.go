package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/parquet-go/parquet-go/format"

	"github.com/causalrm/causalrm/internal/safetensors"
)

// Defences of the readers against hostile files: only regular files are
// opened, and nothing is allocated from a size or count found in a file
// before checking that the file can hold what it announces. Compressed data
// (Parquet pages, gzip) may decode to more than the file's size, but only up
// to decodeFloor + maxExpansion times the compressed size.

const (
	decodeFloor  = 16 << 20 // bytes any file may decode to
	maxExpansion = 64       // ... plus this many times its (compressed) size
	// minRowBytes: a Parquet file may hold rowFloor rows plus one per
	// minRowBytes bytes (a row carries an id and an embedding: far more in
	// any real file).
	minRowBytes = 4
	rowFloor    = 4096
)

// maxDecoded is the most a file (or page) of size compressed bytes may
// decode to.
func maxDecoded(size int64) int64 { return decodeFloor + maxExpansion*max(size, 0) }

// checkRegular refuses, without opening it, a path that is not a regular
// file (a directory, FIFO, socket or device): reading a FIFO or a terminal
// can block forever. A missing file gives the os error.
func checkRegular(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fileErr(path, "", "", ErrFormat, "%s", safetensors.NotRegular(st.Mode()))
	}
	return nil
}

// openRegular opens a regular file for reading (see checkRegular), checking
// again on the open file in case path was replaced in between.
func openRegular(path string) (*os.File, error) {
	if err := checkRegular(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fileErr(path, "", "", ErrFormat, "%s", safetensors.NotRegular(st.Mode()))
	}
	return f, nil
}

// ---------------------------------------------------------------------------
// Thrift compact protocol, as used by Parquet metadata. parquet-go allocates
// from the lengths and counts it decodes (a 5-byte varint can ask for 2 GiB),
// so every structure is walked here first: each length and count must fit in
// the bytes that remain, nesting is bounded, every value takes a byte at
// least (so the walk is linear in the input).

var errThriftShort = errors.New("truncated structure")

type thriftWalker struct {
	b     []byte
	i     int
	depth int
	// rec, when set, receives every integer field of the first two levels
	// of structs: outer is the field id of the enclosing level-1 struct
	// (0 for the top level).
	rec func(outer, id int16, v int64)
}

const thriftMaxDepth = 64

func (w *thriftWalker) uvarint() (uint64, error) {
	var x uint64
	for s := uint(0); s < 64; s += 7 {
		if w.i >= len(w.b) {
			return 0, errThriftShort
		}
		c := w.b[w.i]
		w.i++
		if s == 63 && c > 1 {
			break
		}
		x |= uint64(c&0x7f) << s
		if c < 0x80 {
			return x, nil
		}
	}
	return 0, errors.New("varint overflows 64 bits")
}

func (w *thriftWalker) skip(n uint64) error {
	if n > uint64(len(w.b)-w.i) {
		return errThriftShort
	}
	w.i += int(n)
	return nil
}

func zigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// structure walks a struct whose field header comes next.
func (w *thriftWalker) structure(outer int16) error {
	if w.depth++; w.depth > thriftMaxDepth {
		return errors.New("nested too deeply")
	}
	defer func() { w.depth-- }()
	var last int16
	for {
		if w.i >= len(w.b) {
			return errThriftShort
		}
		h := w.b[w.i]
		w.i++
		if h == 0 {
			return nil
		}
		id := last + int16(h>>4)
		if h>>4 == 0 {
			u, err := w.uvarint()
			if err != nil {
				return err
			}
			id = int16(zigzag(u))
		}
		last = id
		if err := w.value(h&0x0f, true, outer, id); err != nil {
			return err
		}
	}
}

// value walks one value of compact type typ; field: a struct field (whose
// booleans live in the type nibble) rather than a list, set or map element.
func (w *thriftWalker) value(typ byte, field bool, outer, id int16) error {
	switch typ {
	case 1, 2: // bool
		if field {
			return nil
		}
		return w.skip(1)
	case 3: // byte
		return w.skip(1)
	case 4, 5, 6: // i16, i32, i64
		u, err := w.uvarint()
		if err == nil && field && w.rec != nil && w.depth <= 2 {
			w.rec(outer, id, zigzag(u))
		}
		return err
	case 7: // double
		return w.skip(8)
	case 8: // binary
		n, err := w.uvarint()
		if err != nil {
			return err
		}
		return w.skip(n)
	case 9, 10, 11: // list, set, map
		if w.depth++; w.depth > thriftMaxDepth {
			return errors.New("nested too deeply")
		}
		defer func() { w.depth-- }()
		var n uint64
		var kt, et byte
		if typ == 11 {
			var err error
			if n, err = w.uvarint(); err != nil || n == 0 {
				return err
			}
			if w.i >= len(w.b) {
				return errThriftShort
			}
			kt, et = w.b[w.i]>>4, w.b[w.i]&0x0f
			w.i++
		} else {
			if w.i >= len(w.b) {
				return errThriftShort
			}
			h := w.b[w.i]
			w.i++
			n, et = uint64(h>>4), h&0x0f
			if n == 15 {
				var err error
				if n, err = w.uvarint(); err != nil {
					return err
				}
			}
		}
		if n > uint64(len(w.b)-w.i) { // every element takes a byte at least
			return fmt.Errorf("a collection of %d elements in %d bytes", n, len(w.b)-w.i)
		}
		for range n {
			if typ == 11 {
				if err := w.value(kt, false, 0, 0); err != nil {
					return err
				}
			}
			if err := w.value(et, false, 0, 0); err != nil {
				return err
			}
		}
		return nil
	case 12: // struct
		if w.depth == 1 && field {
			outer = id
		} else {
			outer = -1
		}
		return w.structure(outer)
	}
	return fmt.Errorf("unknown thrift type %d", typ)
}

// ---------------------------------------------------------------------------
// Parquet structure checks, before parquet-go reads anything.

// pqCheckFooter checks the magic bytes and the footer of a Parquet file of
// size bytes and returns the footer's length.
func pqCheckFooter(path string, r io.ReaderAt, size int64) (int64, error) {
	bad := func(format string, args ...any) (int64, error) {
		return 0, fileErr(path, "", "", ErrFormat, "not a readable Parquet file: "+format, args...)
	}
	if size < 12 {
		return bad("%d bytes is too short", size)
	}
	var head [4]byte
	var tail [8]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return bad("%v", err)
	}
	if _, err := r.ReadAt(tail[:], size-8); err != nil {
		return bad("%v", err)
	}
	if string(tail[4:]) == "PARE" {
		return bad("encrypted files are not supported")
	}
	if string(head[:]) != "PAR1" || string(tail[4:]) != "PAR1" {
		return bad("no PAR1 magic at both ends (not Parquet, or truncated)")
	}
	n := int64(binary.LittleEndian.Uint32(tail[:4]))
	if n > size-12 {
		return bad("footer length %d exceeds the file size %d", n, size)
	}
	footer := make([]byte, n)
	if _, err := r.ReadAt(footer, size-8-n); err != nil {
		return bad("%v", err)
	}
	w := thriftWalker{b: footer}
	if err := w.structure(0); err != nil {
		return 0, fileErr(path, "", "", ErrFormat, "corrupt Parquet file: footer: %v", err)
	}
	return n, nil
}

// pqCountRows is the row count of a Parquet file of size bytes whose footer
// is md (opened: the row groups parquet-go opened), refused when the row
// groups disagree with the footer or announce more rows than the file can
// hold (see minRowBytes).
func pqCountRows(path string, md *format.FileMetaData, opened int, size int64) (int, error) {
	if len(md.RowGroups) != opened {
		return 0, fileErr(path, "", "", ErrFormat, "corrupt Parquet file: %d row groups in the footer, %d opened", len(md.RowGroups), opened)
	}
	maxRows := min(int64(rowFloor)+size/minRowBytes, math.MaxInt32) // rows are located by int32 indices
	var rows int64
	for g, rg := range md.RowGroups {
		if rg.NumRows < 0 || rg.NumRows > maxRows-rows {
			return 0, fileErr(path, "", "", ErrFormat, "row group %d announces %d rows: more than a file of %d bytes can hold (%d)", g, rg.NumRows, size, maxRows)
		}
		rows += rg.NumRows
	}
	if md.NumRows != rows {
		return 0, fileErr(path, "", "", ErrFormat, "corrupt Parquet file: the footer announces %d rows, its row groups %d", md.NumRows, rows)
	}
	return int(rows), nil
}

// pqPageLimits bounds what the pages of one column may announce.
type pqPageLimits struct {
	scalar bool  // one value per row (else the repeated x leaf)
	values int64 // most values the column may hold in all (repeated column)
	dict8  bool  // dictionary values may be smaller than 4 bytes (booleans, short fixed-length)
}

// pqCheckPages walks the page headers of every column chunk of leaf column
// col (its field name is field) and checks them against the file: each page
// lies inside its chunk, which lies inside the data section; a page decodes
// to at most maxDecoded of its compressed size; a scalar column holds at most
// one value per row of each row group, the x leaf at most lim.values values
// in all. It returns the number of values the pages announce.
func pqCheckPages(path, field string, r io.ReaderAt, size, footerLen int64, md *format.FileMetaData, col int, lim pqPageLimits) (int64, error) {
	bad := func(format string, args ...any) (int64, error) {
		return 0, fileErr(path, "", field, ErrFormat, "corrupt Parquet file: "+format, args...)
	}
	dataEnd := size - 8 - footerLen
	var total int64
	var buf []byte
	for g, rg := range md.RowGroups {
		if col >= len(rg.Columns) {
			return bad("row group %d has %d columns, want more than %d", g, len(rg.Columns), col)
		}
		cm := &rg.Columns[col].MetaData
		base := cm.DataPageOffset
		if cm.DictionaryPageOffset != 0 {
			base = cm.DictionaryPageOffset
		}
		end := base + cm.TotalCompressedSize
		if base < 4 || cm.TotalCompressedSize < 0 || base > dataEnd || cm.TotalCompressedSize > dataEnd-base {
			return bad("row group %d: column chunk at [%d, +%d) lies outside the data section [4, %d)", g, base, cm.TotalCompressedSize, dataEnd)
		}
		var chunkValues int64
		for pos := base; pos < end; {
			// Read the page header, widening the window until it fits.
			var typ, unc, comp, nv, rep, def int64 = -1, -1, -1, -1, 0, 0
			hlen := 0
			for window := min(end-pos, 512); ; window = min(end-pos, 8*window) {
				if int64(cap(buf)) < window {
					buf = make([]byte, window)
				}
				b := buf[:window]
				if _, err := r.ReadAt(b, pos); err != nil {
					return bad("row group %d: reading the page at %d: %v", g, pos, err)
				}
				w := thriftWalker{b: b, rec: func(outer, id int16, v int64) {
					switch {
					case outer == 0 && id == 1:
						typ = v
					case outer == 0 && id == 2:
						unc = v
					case outer == 0 && id == 3:
						comp = v
					case (outer == 5 || outer == 7 || outer == 8) && id == 1:
						nv = v
					case outer == 8 && id == 5:
						def = v
					case outer == 8 && id == 6:
						rep = v
					}
				}}
				err := w.structure(0)
				if err == nil {
					hlen = w.i
					break
				}
				if errors.Is(err, errThriftShort) && window < end-pos && window < 16<<20 {
					continue
				}
				return bad("row group %d: page header at %d: %v", g, pos, err)
			}
			pos += int64(hlen)
			switch {
			case comp < 0 || comp > end-pos:
				return bad("row group %d: a page of %d bytes at %d runs past the end of its column chunk (%d)", g, comp, pos, end)
			case unc < 0 || unc > maxDecoded(comp):
				return bad("row group %d: a page of %d bytes at %d announces %d bytes decoded (limit %d)", g, comp, pos, unc, maxDecoded(comp))
			case rep < 0 || def < 0 || rep+def > comp:
				return bad("row group %d: page at %d: level lengths %d + %d exceed the page's %d bytes", g, pos, rep, def, comp)
			}
			switch format.PageType(typ) {
			case format.DictionaryPage:
				limit := unc / 4
				if lim.dict8 {
					limit = 8 * unc
				}
				if nv < 0 || nv > limit {
					return bad("row group %d: dictionary page at %d announces %d values in %d bytes", g, pos, nv, unc)
				}
			case format.DataPage, format.DataPageV2:
				if nv < 0 {
					return bad("row group %d: data page at %d has no value count", g, pos)
				}
				chunkValues += nv
				total += nv
				if lim.scalar && chunkValues > rg.NumRows {
					return bad("row group %d: the pages announce more than its %d rows", g, rg.NumRows)
				}
				if !lim.scalar && total > lim.values {
					return bad("the x pages announce more than %d values (limit for a file of %d bytes)", lim.values, size)
				}
			}
			pos += comp
		}
	}
	return total, nil
}

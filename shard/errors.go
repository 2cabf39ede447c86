package shard

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors; every *RowError wraps one of them (errors.Is works).
var (
	ErrFormat       = errors.New("unreadable or unsupported file") // bad syntax, wrong column types, unknown extension
	ErrMissingField = errors.New("missing required field")
	ErrDimension    = errors.New("wrong embedding dimension")
	ErrShape        = errors.New("column length does not match the row count")
	ErrNonFinite    = errors.New("non-finite value")
	ErrNotBinary    = errors.New("value not in {0,1}")
	ErrPropensity   = errors.New("propensity outside (0,1]")
	ErrEmptySplit   = errors.New("empty split")
	ErrDuplicateID  = errors.New("duplicate id")
	ErrSplitName    = errors.New("unknown split name")
)

// RowError reports invalid input data, located as precisely as the format
// allows.
type RowError struct {
	File  string // the file holding the row
	Split string // split (slot) the row was read for, when known
	// Row locates the row: a 0-based row index in the file (Parquet: row of
	// the file; safetensors: row of the split's tensors) or, when Line is
	// set, a 1-based line number (JSONL). Row < 0: not about a single row.
	Row   int
	Line  bool
	Field string // column / JSON field / tensor name; "" when not about one
	Msg   string
	Err   error // sentinel, one of the Err* variables above
}

func (e *RowError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	switch {
	case e.Row < 0:
	case e.Line:
		fmt.Fprintf(&b, ": line %d", e.Row)
	default:
		fmt.Fprintf(&b, ": row %d", e.Row)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, ": field %q", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

func (e *RowError) Unwrap() error { return e.Err }

// loc is where a row came from, for error messages.
type loc struct {
	file string
	row  int
	line bool
}

func (l loc) String() string {
	if l.line {
		return fmt.Sprintf("%s line %d", l.file, l.row)
	}
	return fmt.Sprintf("%s row %d", l.file, l.row)
}

func (l loc) err(split, field string, sentinel error, format string, args ...any) *RowError {
	return &RowError{File: l.file, Split: split, Row: l.row, Line: l.line, Field: field, Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

func fileErr(file, split, field string, sentinel error, format string, args ...any) *RowError {
	return &RowError{File: file, Split: split, Row: -1, Field: field, Msg: fmt.Sprintf(format, args...), Err: sentinel}
}

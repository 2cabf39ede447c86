package job

import (
	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/trainer"
)

// Wire is which codec carries which sums between worker processes: the
// one place that decides it from a job's codec name and reduction mode.
type Wire struct {
	// Exact carries the integer sums of exact mode and the state a joining
	// worker receives: always lossless.
	Exact collective.Codec
	// Lossy, when set, carries fast mode's float32 sums (with error
	// feedback); empty: they travel as float32 under Exact.
	Lossy collective.Codec
}

// DefaultCodec is the codec of a job that names none: s2 compresses the
// integer sums' mostly-zero high bytes at a few GB/s.
const DefaultCodec = collective.CodecS2

// CodecChoices is the message that lists the codecs.
const CodecChoices = "want none, s2, zstd (exact), or fp16, int8 (lossy, with reduce fast)"

// ParseWire checks a codec name against the reduction mode: an unknown
// name, or a lossy codec without reduce fast, is a *trainer.FieldError for
// the key "codec".
func ParseWire(name, reduce string) (Wire, error) {
	if name == "" {
		return Wire{Exact: DefaultCodec}, nil
	}
	c := collective.Codec(name)
	switch {
	case c.Lossless():
		return Wire{Exact: c}, nil
	case !c.Lossy():
		return Wire{}, &trainer.FieldError{Field: "codec", Value: name, Want: CodecChoices}
	case reduce != "fast":
		return Wire{}, &trainer.FieldError{Field: "codec", Value: name, Want: "a lossy codec needs reduce fast"}
	}
	return Wire{Exact: DefaultCodec, Lossy: c}, nil
}

// Wire is the job's codec decision (Validate has checked it).
func (j *Job) Wire() Wire {
	w, err := ParseWire(j.Codec, j.Reduce)
	if err != nil {
		return Wire{Exact: DefaultCodec}
	}
	return w
}

// Static is the one codec of a static ring (train --workers with reduce
// fast): the lossy codec when the job names one, else the exact one.
func (w Wire) Static() collective.Codec {
	if w.Lossy != "" {
		return w.Lossy
	}
	return w.Exact
}

// Package job is a training job as users write it and as the coordinators
// carry it: the schema of a job file (data, output directory, wire codec and
// every training setting), its strict decoding, its validation, the
// decision of which codec carries which sums, its encoding inside a
// coordinator job spec, and the schema of what a finished job writes
// (metrics.json).
//
// It sits between the command line (which parses flags over a Job) and the
// runtimes (the trainer, the static and the elastic workers), so that every
// place that reads a job reads it the same way.
package job

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/internal/strictyaml"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/trainer"
)

// Job is a job file (causalrm train --config job.yaml, causalrm submit):
// the data, the output directory and every training setting.
type Job struct {
	Data DataSpec `yaml:"data"`
	Out  string   `yaml:"out"`
	// Codec is the all-reduce wire codec between worker processes (see
	// Wire); empty: the default.
	Codec          string `yaml:"codec,omitempty"`
	trainer.Config `yaml:",inline"`
}

// DataSpec names the data files; one file may hold every split.
type DataSpec struct {
	Train string `yaml:"train"`
	Val   string `yaml:"val"`
	Test  string `yaml:"test"`
}

// Default is a job with every setting at its default and no data.
func Default() *Job { return &Job{Config: trainer.DefaultConfig()} }

// MaxFileSize bounds a job file's size (and a job spec's config): settings,
// not data.
const MaxFileSize = 1 << 20

// yamlOptions is how job text is decoded: strictly (unknown or repeated
// keys and a 1.5 where an integer goes are refused), flip_rates with both
// of its keys, and each key's line recorded in lines.
func yamlOptions(lines map[string]int) strictyaml.Options {
	return strictyaml.Options{
		Required: map[reflect.Type][]string{reflect.TypeFor[causal.Rates](): {"rho01", "rho10"}},
		Lines:    lines,
	}
}

// Decode decodes a job file's text over j (which holds the defaults),
// recording each key's line in lines (nil: not recorded). Errors name the
// file (name), the line and the key.
func Decode(name string, raw []byte, j *Job, lines map[string]int) error {
	if len(raw) > MaxFileSize {
		return fmt.Errorf("%s: %d bytes, more than the limit of %d for a job file", name, len(raw), MaxFileSize)
	}
	if lines == nil {
		lines = map[string]int{}
	}
	return strictyaml.Decode(name, raw, j, yamlOptions(lines))
}

// ReadFile reads a job file of at most MaxFileSize bytes; a FIFO, a
// directory or a device is refused, not read.
func ReadFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if fi.Size() > MaxFileSize {
		return nil, fmt.Errorf("%s: %d bytes, more than the limit of %d for a job file", path, fi.Size(), MaxFileSize)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, MaxFileSize+1))
}

// Validate checks the training settings (trainer.Config.Validate: ranges
// and the sizes a run allocates) and the codec against the reduction
// mode. Errors are *trainer.FieldError naming the job key.
func (j *Job) Validate() error {
	if _, err := ParseWire(j.Codec, j.Reduce); err != nil {
		return err
	}
	return j.Config.Validate()
}

// Load reads the job's data, checking every row, and checks the model's
// size for the data's embedding dimension.
func (j *Job) Load() (*shard.Dataset, error) {
	ds, err := shard.Load(shard.LoadSpec{Train: j.Data.Train, Val: j.Data.Val, Test: j.Data.Test})
	if err != nil {
		return nil, LoadError(err)
	}
	if err := j.Config.ValidateFor(ds.Train.D); err != nil {
		return nil, fmt.Errorf("%s (d=%d): %w", j.Data.Train, ds.Train.D, err)
	}
	return ds, nil
}

// LoadError says what to do about a missing validation or test split in a
// user's terms (flags and job keys; the loader's message names its Go
// options).
func LoadError(err error) error {
	var re *shard.RowError
	if !errors.As(err, &re) || !errors.Is(err, shard.ErrEmptySplit) || re.Field != "" {
		return err
	}
	e := *re
	switch re.Split {
	case shard.SplitVal:
		e.Msg = "no validation rows: give a validation file with --val (data.val in a job file), or rows of split val in this file"
	case shard.SplitTest:
		e.Msg = "no test rows: give a clean test file with --test (data.test in a job file), or rows of split test in this file"
	default:
		return err
	}
	return &e
}

// Inputs are the job's data files.
func (j *Job) Inputs() []string {
	var in []string
	for _, p := range []string{j.Data.Train, j.Data.Val, j.Data.Test} {
		if p != "" {
			in = append(in, p)
		}
	}
	return in
}

// Package shard is the data layer: the row schema, readers for the supported
// file formats, validation, virtual shards and the seeded epoch plan.
package shard

// Split holds one split (train, val or test) of observational feedback rows in
// columnar form. X is row-major N x D. Optional columns are nil when absent.
type Split struct {
	Name   string    // "train", "val" or "test"
	Source string    // file the rows came from (for error messages)
	N, D   int       // rows and embedding dimension
	IDs    []string  // stable row identity, unique within the dataset
	X      []float32 // N*D embeddings, row-major
	O      []uint8   // 1 if feedback was observed
	Y      []uint8   // observed (noisy) label; forced to 0 where O == 0
	P      []float32 // known propensity in (0,1], or nil
	R      []uint8   // clean binary label, or nil
	Rating []float32 // graded rating, or nil

	// NoFeedback marks a fully labelled split read without o and y columns
	// (every row has a rating): the input of the semi-synthetic protocol
	// (sim.Apply), not something to train on. O is 1 and Y is 0 there.
	NoFeedback bool
}

// Row returns row i of X (a view, not a copy).
func (s *Split) Row(i int) []float32 { return s.X[i*s.D : (i+1)*s.D] }

// Dataset is the three splits of one job. Test is usually clean (R set, O all 1).
type Dataset struct {
	Train, Val, Test *Split
}

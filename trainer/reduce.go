package trainer

import "context"

// Reducer sums and maxes vectors over everyone holding rows of the current
// batch, in place. Implementations must give every caller the same bits.
type Reducer interface {
	MaxFloat64(ctx context.Context, v []float64) error
	SumInt64(ctx context.Context, v []int64) error
	SumFloat32(ctx context.Context, v []float32) error
}

// Local is the reducer of a single process holding every shard: the
// virtual shards' integer partials are already summed by the exact GEMM,
// so there is nothing left to do.
type Local struct{}

func (Local) MaxFloat64(context.Context, []float64) error { return nil }
func (Local) SumInt64(context.Context, []int64) error     { return nil }
func (Local) SumFloat32(context.Context, []float32) error { return nil }

package trainer

import (
	"context"
	"errors"
)

// Reducer sums and maxes vectors over everyone holding rows of the current
// batch, in place. Implementations must give every caller the same bits.
//
// Any call may return an error wrapping ErrRedo: the membership changed and
// Own may have been called (synchronously, from inside the call, on the
// trainer's goroutine) with a new shard set; the trainer then recomputes
// the call's input from the rows it now owns and calls again. A call may
// also return nil with the result computed by others filled in (and Own
// called); the trainer then computes the next call's input under the new
// ownership.
type Reducer interface {
	MaxFloat64(ctx context.Context, v []float64) error
	SumInt64(ctx context.Context, v []int64) error
	SumFloat32(ctx context.Context, v []float32) error
}

// ErrRedo, wrapped in a Reducer's error, asks the trainer to recompute the
// call's input under the current ownership and to make the call again.
var ErrRedo = errors.New("trainer: membership changed: redo the reduction")

// Local is the reducer of a single process holding every shard: the
// virtual shards' integer partials are already summed by the exact GEMM,
// so there is nothing left to do.
type Local struct{}

func (Local) MaxFloat64(context.Context, []float64) error { return nil }
func (Local) SumInt64(context.Context, []int64) error     { return nil }
func (Local) SumFloat32(context.Context, []float32) error { return nil }

// reduce is every reduction site's loop: compute the input from the rows
// owned now, make the call, and on ErrRedo do both again. Nothing outside
// input changes between the input and the call's successful result.
func reduce(ctx context.Context, input func() error, call func() error) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := input(); err != nil {
			return err
		}
		err := call()
		if err == nil || !errors.Is(err, ErrRedo) {
			return err
		}
	}
}

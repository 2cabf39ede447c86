// Package worker is the runtime of one training worker: it owns some
// virtual shards, loads the embeddings of their rows only, joins the ring
// all-reduce, and agrees with its peers on everything that must be global
// (the embeddings' fixed-point grid) before training starts. The training
// itself is the trainer's stage loop over the ring (docs/design.md, "One
// trainer, two reducers").
package worker

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/shard"
)

// ErrConfig reports an invalid worker configuration.
var ErrConfig = errors.New("worker: invalid config")

// Config is one worker of a static membership.
type Config struct {
	Rank       int
	Peers      []string // host:port of every worker's collective, in ring order
	Generation uint64
	Codec      collective.Codec // exact codec; a lossy one needs FastReduce
	FastReduce bool             // the job uses --reduce fast
	Shards     int              // virtual shards of the job
	Listener   net.Listener     // where this worker serves; nil: Peers[Rank]
}

// Validate checks the membership and the codec.
func (c Config) Validate() error {
	switch {
	case len(c.Peers) == 0:
		return fmt.Errorf("%w: no peers", ErrConfig)
	case c.Rank < 0 || c.Rank >= len(c.Peers):
		return fmt.Errorf("%w: rank %d outside the %d peers", ErrConfig, c.Rank, len(c.Peers))
	case c.Shards < len(c.Peers):
		return fmt.Errorf("%w: %d workers but only %d virtual shards", ErrConfig, len(c.Peers), c.Shards)
	case c.Codec.Lossy() && !c.FastReduce:
		return fmt.Errorf("%w: codec %s is lossy: it needs --reduce fast", ErrConfig, c.Codec)
	}
	return nil
}

// OwnedShards gives rank r of n a contiguous block of the s virtual shards,
// so that it reads its rows with few contiguous reads.
func OwnedShards(rank, n, s int) []int {
	var out []int
	for id := rank * s / n; id < (rank+1)*s/n; id++ {
		out = append(out, id)
	}
	return out
}

// Worker is a started worker: its rows, its ring and the agreed grid.
type Worker struct {
	Ring *collective.Ring
	Own  []int          // the virtual shards it computes
	Data *shard.Dataset // full-length labels, embeddings of Own only
	XExp []int          // the embeddings' grid, the same on every worker
}

// Start loads the embeddings of this worker's shards, joins the ring and
// max-reduces the per-column maxima so every worker quantizes on one grid.
func Start(ctx context.Context, cfg Config, spec shard.LoadSpec) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, err
	}
	own := OwnedShards(cfg.Rank, len(cfg.Peers), cfg.Shards)
	spec.KeepX = func(_ string, n int) []shard.Range {
		all := shard.Shards(n, cfg.Shards)
		out := make([]shard.Range, 0, len(own))
		for _, id := range own {
			out = append(out, all[id])
		}
		return out
	}
	ds, err := shard.Load(spec)
	if err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, err
	}
	rc := collective.DefaultConfig()
	rc.Rank, rc.Peers, rc.Generation, rc.Codec = cfg.Rank, cfg.Peers, cfg.Generation, cfg.Codec
	if cfg.Codec.Lossy() {
		// Lossy codecs carry only the float32 sums of --reduce fast, with
		// error feedback; the integer and max reductions stay exact.
		rc.Codec, rc.LossyCodec = collective.CodecNone, cfg.Codec
	}
	ring, err := collective.New(rc, cfg.Listener)
	if err != nil {
		return nil, err
	}
	xs := [][]float32{ds.Train.X, ds.Val.X}
	if ds.Test != nil {
		xs = append(xs, ds.Test.X)
	}
	maxima := nn.ColumnMaxAbs(ds.Train.D, xs...)
	if err := ring.MaxFloat64(ctx, maxima); err != nil {
		ring.Close()
		return nil, err
	}
	return &Worker{Ring: ring, Own: own, Data: ds, XExp: nn.ExpsFromMax(maxima)}, nil
}

// Close leaves the ring, after flushing what the successor still needs.
func (w *Worker) Close() error { return w.Ring.Close() }

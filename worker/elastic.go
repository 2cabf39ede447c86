package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/trainer"
)

// Errors of the elastic runtime.
var (
	// ErrLeft ends a worker that left the job at a step boundary (a
	// graceful leave): not a failure.
	ErrLeft = errors.New("worker: left the job")
	// ErrRemoved ends a worker that a newer generation no longer lists
	// (the coordinator declared it dead); it must register again to rejoin.
	ErrRemoved = errors.New("worker: removed from the job")
)

// Coordinator is what the elastic runtime needs of the coordinator
// (coordinator.Client implements it).
type Coordinator interface {
	WatchGenerations(ctx context.Context, after uint64) (<-chan state.Generation, <-chan error)
	ReportProgress(ctx context.Context, p state.Progress) error
	PutCheckpoint(ctx context.Context, rec state.CheckpointRecord, data []byte) error
	Activated(ctx context.Context, id string, generation uint64) error
	LinkFailed(ctx context.Context, id string, generation uint64, why string) error
}

// ElasticConfig configures one elastic worker.
type ElasticConfig struct {
	ID     string // the worker's id, as registered
	RingID string // the job id: every ring of the job carries it
	Host   *collective.Host
	Coord  Coordinator
	Codec  collective.Codec // lossless: the integer sums and maxima
	// LossyCodec (fp16, int8), if set, carries the float32 sums of a job
	// with --reduce fast, with error feedback: a worker's residual moves
	// with it from ring to ring, and a leaving worker's goes to a survivor.
	LossyCodec collective.Codec
	Shards     int
	// ProgressEvery: report progress every this many global steps.
	ProgressEvery int
	// CheckpointEvery: checkpoint every this many global steps (rounded
	// up to a multiple of ProgressEvery; 0: never).
	CheckpointEvery int
	// CheckpointSeconds also checkpoints, at a progress report, when this
	// long has passed since the last checkpoint (0: off).
	CheckpointSeconds float64
	// OpTimeout bounds one collective call; a call that runs out breaks
	// the ring and starts a reconciliation.
	OpTimeout time.Duration
	// ReconfigureTimeout bounds the wait for a new generation after a
	// failed call; past it the call's error is returned.
	ReconfigureTimeout time.Duration
	// StepDelay sleeps at every step boundary: a knob for tests and demos
	// that need training slow enough to change membership mid-stage.
	StepDelay time.Duration
	Logger    *slog.Logger
	// Metrics, if not nil, get the runtime's Prometheus metrics
	// (worker/metrics.go).
	Metrics *Metrics
}

// Validate checks the config.
func (c *ElasticConfig) Validate() error {
	switch {
	case c.ID == "" || c.RingID == "":
		return fmt.Errorf("%w: elastic worker needs an id and a job id", ErrConfig)
	case c.Host == nil || c.Coord == nil:
		return fmt.Errorf("%w: elastic worker needs a collective host and a coordinator", ErrConfig)
	case c.Codec.Lossy():
		return fmt.Errorf("%w: the integer sums need a lossless codec, not %s", ErrConfig, c.Codec)
	case c.LossyCodec != "" && !c.LossyCodec.Lossy():
		return fmt.Errorf("%w: %s is not a lossy codec (fp16, int8)", ErrConfig, c.LossyCodec)
	case c.Shards < 1:
		return fmt.Errorf("%w: shards %d", ErrConfig, c.Shards)
	}
	if c.ProgressEvery < 1 {
		c.ProgressEvery = 10
	}
	if c.CheckpointEvery > 0 && c.CheckpointEvery%c.ProgressEvery != 0 {
		c.CheckpointEvery += c.ProgressEvery - c.CheckpointEvery%c.ProgressEvery
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 2 * time.Minute
	}
	if c.ReconfigureTimeout <= 0 {
		c.ReconfigureTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Elastic is the reducer of an elastic worker (trainer.Reducer) and its
// step-boundary hook: it runs the trainer's collective calls on the ring of
// the current generation, reconciles after failures and switches
// generations at step boundaries (docs/elastic.md).
type Elastic struct {
	cfg ElasticConfig
	log *slog.Logger
	tr  *trainer.Trainer

	gens *generations // the coordinators' generations, watched

	ring    *collective.Ring
	gen     state.Generation // the generation of ring
	changes uint64           // ring changes so far (a call that saw one skips a planned switch)

	done uint64  // collective calls completed
	last []int64 // the result of call number done, as int64 bits

	progress  progress     // steps run and reported
	ckpt      checkpointer // checkpoints of the member of rank 0
	bg        sync.WaitGroup
	skipAgree int64     // a boundary whose agreement was done before the snapshot
	disturbed time.Time // when a generation change began (zero: none pending)
	handed    []float32 // the residual the next ring starts with (own + leavers')
	// testHandover, if set, sees a leaver's residual as it hands it over,
	// and a donor's before and after it takes the leavers'.
	testHandover func(role string, before, after []float32)
	Activation   func(gen state.Generation) // tests: called on each ring change
}

// NewElastic starts watching the coordinator's generations. Attach the
// trainer, then Begin before training.
func NewElastic(cfg ElasticConfig) (*Elastic, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Elastic{cfg: cfg, log: cfg.Logger.With("worker", cfg.ID), skipAgree: -1}
	e.progress = progress{coord: cfg.Coord, id: cfg.ID, log: e.log, bg: &e.bg}
	e.ckpt = checkpointer{coord: cfg.Coord, log: e.log, metrics: cfg.Metrics, bg: &e.bg,
		every: cfg.CheckpointEvery, seconds: cfg.CheckpointSeconds, busy: make(chan struct{}, 1)}
	e.gens = watchGenerations(cfg.Coord)
	return e, nil
}

// Attach wires the trainer: its reducer must be e, and e becomes its step
// and stage hook.
func (e *Elastic) Attach(tr *trainer.Trainer) {
	e.tr = tr
	tr.SetStepHook(e.onStep)
	tr.SetStageHook(e.onStage)
}

// openRing makes the ring of generation g on this worker's host and takes
// g's shards.
func (e *Elastic) openRing(g state.Generation) error {
	var residual []float32 // this worker's error feedback goes with it
	if e.ring != nil {
		residual = e.ring.Residual()
		if reconciles(g) || isStart(g) {
			// A member crashed out of the old ring (or a link of it broke): what it queued belongs
			// to a call that will not complete, and its successor may be
			// the dead member. Do not wait to flush it.
			e.ring.Abort()
		} else {
			e.ring.Close()
		}
		e.ring = nil
	}
	if e.handed != nil {
		residual, e.handed = e.handed, nil
	}
	rank := g.Index(e.cfg.ID)
	if rank < 0 {
		return fmt.Errorf("%w: generation %d", ErrRemoved, g.Number)
	}
	peers := make([]string, len(g.Members))
	for i, m := range g.Members {
		peers[i] = m.Addr
	}
	rc := collective.DefaultConfig()
	rc.RingID, rc.Rank, rc.Peers, rc.Generation, rc.Codec = e.cfg.RingID, rank, peers, 2*g.Number+1, e.cfg.Codec
	rc.LossyCodec = e.cfg.LossyCodec
	rc.Timeout = e.cfg.OpTimeout
	rc.Logger = e.log
	r, err := e.cfg.Host.Ring(rc)
	if err != nil {
		return err
	}
	if residual != nil {
		r.SetResidual(residual)
	}
	e.ring, e.gen = r, g
	e.gens.ringIs(g.Number)
	e.cfg.Metrics.ringOpened(r, g, e.cfg.Codec)
	e.changes++
	if e.tr != nil {
		if err := e.tr.Own(g.ShardsOf(e.cfg.ID)); err != nil {
			return err
		}
	}
	e.log.Info("ring", "generation", g.Number, "cause", g.Cause, "rank", rank, "members", len(g.Members),
		"shards", len(g.ShardsOf(e.cfg.ID)))
	if e.Activation != nil {
		e.Activation(g)
	}
	e.bg.Add(1)
	go func() { // best effort: lets the leader base crash generations on it
		defer e.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.cfg.Coord.Activated(ctx, e.cfg.ID, g.Number)
	}()
	return nil
}

// Close stops the watch, waits for a checkpoint upload and leaves the ring.
func (e *Elastic) Close() error {
	e.gens.stop()
	e.bg.Wait()
	e.cfg.Metrics.stopped("the elastic runtime closed")
	if e.ring != nil {
		e.ring.Close()
	}
	return nil
}

// Ring is the current ring (nil before Start).
func (e *Elastic) Ring() *collective.Ring { return e.ring }

// Generation is the current ring's generation.
func (e *Elastic) Generation() state.Generation { return e.gen }

// elem is the element types of the trainer's collective calls; toBits and
// fromBits convert between a call's vector and the int64 words it is kept
// and shared as.
type elem interface{ int64 | float64 | float32 }

func toBits[T elem](v []T, dst []int64) []int64 {
	dst = slices.Grow(dst[:0], len(v))[:len(v)]
	switch x := any(v).(type) {
	case []int64:
		copy(dst, x)
	case []float64:
		for i, f := range x {
			dst[i] = int64(math.Float64bits(f))
		}
	case []float32:
		for i, f := range x {
			dst[i] = int64(math.Float32bits(f))
		}
	}
	return dst
}

func fromBits[T elem](b []int64, v []T) {
	switch x := any(v).(type) {
	case []int64:
		copy(x, b)
	case []float64:
		for i := range x {
			x[i] = math.Float64frombits(uint64(b[i]))
		}
	case []float32:
		for i := range x {
			x[i] = math.Float32frombits(uint32(b[i]))
		}
	}
}

package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
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

	watchCancel context.CancelFunc
	watchDone   chan struct{}

	mu       sync.Mutex
	gens     map[uint64]state.Generation
	latest   uint64
	newGen   chan struct{} // closed and replaced when a generation arrives
	watchErr error
	abort    context.CancelFunc // cancels the call in flight (crash generations)

	ring    *collective.Ring
	gen     state.Generation // the generation of ring
	changes uint64           // ring changes so far (a call that saw one skips a planned switch)

	done uint64  // collective calls completed
	last []int64 // the result of call number done, as int64 bits

	// progress accounting
	prev      *trainer.Boundary // the step that ran last (not yet accounted)
	pending   []state.StepRange // steps not yet in a report that went out
	reported  uint64            // the global step of the last report the coordinators took
	sent      uint64            // ... of the last report sent (maybe still travelling)
	sentAt    time.Time
	inflight  *sending // the report travelling, not yet collected
	skipAgree int64    // a boundary whose agreement was done before the snapshot
	ckptBusy  chan struct{}
	bg        sync.WaitGroup
	lastCkpt  time.Time // when this worker last took a checkpoint
	disturbed time.Time // when a generation change began (zero: none pending)
	handed    []float32 // the residual the next ring starts with (own + leavers')
	// testHandover, if set, sees a leaver's residual as it hands it over,
	// and a donor's before and after it takes the leavers'.
	testHandover func(role string, before, after []float32)
	Activation   func(gen state.Generation) // tests: called on each ring change
}

// joinBlob is the state a joining worker takes from a live peer and a
// checkpoint holds: the runtime's counters and the trainer's snapshot.
type joinBlob struct {
	Done      uint64            `json:"done"`
	Last      []int64           `json:"-"`
	Pending   []state.StepRange `json:"pending"`
	Reported  uint64            `json:"reported"`
	Agreed    bool              `json:"agreed"`
	Snapshot  []byte            `json:"-"`
	GlobalKey uint64            `json:"global_step"`
}

// NewElastic starts watching the coordinator's generations. Attach the
// trainer, then Join (or Start) before training.
func NewElastic(cfg ElasticConfig) (*Elastic, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Elastic{cfg: cfg, log: cfg.Logger.With("worker", cfg.ID), gens: map[uint64]state.Generation{},
		newGen: make(chan struct{}), watchCancel: cancel, watchDone: make(chan struct{}), skipAgree: -1,
		ckptBusy: make(chan struct{}, 1)}
	go e.watch(ctx)
	return e, nil
}

// Attach wires the trainer: its reducer must be e, and e becomes its step
// and stage hook.
func (e *Elastic) Attach(tr *trainer.Trainer) {
	e.tr = tr
	tr.SetStepHook(e.onStep)
	tr.SetStageHook(e.onStage)
}

func (e *Elastic) watch(ctx context.Context) {
	defer close(e.watchDone)
	gens, errs := e.cfg.Coord.WatchGenerations(ctx, 0)
	for {
		select {
		case g, ok := <-gens:
			if !ok {
				return
			}
			e.mu.Lock()
			e.gens[g.Number] = g
			e.latest = max(e.latest, g.Number)
			close(e.newGen)
			e.newGen = make(chan struct{})
			// A crash generation ends the call in flight: it would wait
			// for the dead member until its timeout.
			if g.Number > e.gen.Number && isCrash(g) && e.abort != nil {
				e.abort()
			}
			e.mu.Unlock()
		case err := <-errs:
			e.mu.Lock()
			e.watchErr = err
			close(e.newGen)
			e.newGen = make(chan struct{})
			if e.abort != nil {
				e.abort()
			}
			e.mu.Unlock()
			return
		case <-ctx.Done():
			return
		}
	}
}

// waitGen returns the newest generation for which ok holds, waiting for
// one up to timeout.
func (e *Elastic) waitGen(ctx context.Context, timeout time.Duration, ok func(state.Generation) bool) (state.Generation, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		e.mu.Lock()
		for n := e.latest; n > 0; n-- {
			if g, found := e.gens[n]; found && ok(g) {
				e.mu.Unlock()
				return g, nil
			}
		}
		ch, werr := e.newGen, e.watchErr
		e.mu.Unlock()
		if werr != nil {
			return state.Generation{}, fmt.Errorf("watching generations: %w", werr)
		}
		select {
		case <-ch:
		case <-t.C:
			return state.Generation{}, errors.New("no new generation")
		case <-ctx.Done():
			return state.Generation{}, ctx.Err()
		}
	}
}

func (e *Elastic) latestNumber() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.latest
}

// openRing makes the ring of generation g on this worker's host and takes
// g's shards.
func (e *Elastic) openRing(g state.Generation) error {
	var residual []float32 // this worker's error feedback goes with it
	if e.ring != nil {
		residual = e.ring.Residual()
		e.ring.Close()
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
	e.mu.Lock() // the watch reads gen
	e.ring, e.gen = r, g
	e.mu.Unlock()
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
	e.watchCancel()
	<-e.watchDone
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

// bits converts between a call's vector and the int64 words it is kept
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

// call runs one collective call of the trainer's sequence. On a failure it
// reconciles with the survivors (docs/elastic.md): either the call's result
// comes from a survivor that completed it (nil), or the caller must
// recompute its input under the new ownership (trainer.ErrRedo).
func call[T elem](e *Elastic, ctx context.Context, v []T, run func(*collective.Ring, context.Context, []T) error) error {
	if e.ring == nil {
		return fmt.Errorf("%w: no ring yet", ErrConfig)
	}
	cctx, cancel := context.WithCancel(ctx)
	e.mu.Lock()
	e.abort = cancel
	e.mu.Unlock()
	err := run(e.ring, cctx, v)
	e.mu.Lock()
	e.abort = nil
	e.mu.Unlock()
	cancel()
	if err == nil {
		e.done++
		e.last = toBits(v, e.last)
		e.settled()
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if e.disturbed.IsZero() {
		e.disturbed = time.Now()
	}
	e.log.Warn("collective call failed; reconciling", "call", e.done+1, "generation", e.gen.Number, "err", err)
	res, rerr := e.reconcile(ctx, len(v), err)
	if rerr != nil {
		return rerr
	}
	e.cfg.Metrics.reconciledCall()
	if res != nil {
		fromBits(res, v)
		e.done++
		e.last = append(e.last[:0], res...)
		return nil
	}
	return fmt.Errorf("%w: generation %d", trainer.ErrRedo, e.gen.Number)
}

// settled logs how long the training stood still for a generation change:
// from the failure (or the boundary's decision) to the first call that
// completed on the new ring.
func (e *Elastic) settled() {
	if e.disturbed.IsZero() {
		return
	}
	e.log.Info("generation change pause", "generation", e.gen.Number, "cause", e.gen.Cause,
		"pause", time.Since(e.disturbed).Round(time.Millisecond))
	e.disturbed = time.Time{}
}

// MaxFloat64 implements trainer.Reducer.
func (e *Elastic) MaxFloat64(ctx context.Context, v []float64) error {
	return call(e, ctx, v, (*collective.Ring).MaxFloat64)
}

// SumInt64 implements trainer.Reducer.
func (e *Elastic) SumInt64(ctx context.Context, v []int64) error {
	return call(e, ctx, v, (*collective.Ring).SumInt64)
}

// SumFloat32 implements trainer.Reducer.
func (e *Elastic) SumFloat32(ctx context.Context, v []float32) error {
	return call(e, ctx, v, (*collective.Ring).SumFloat32)
}

// reconcile forms the ring of the newest crash (or start) generation with
// the other survivors and settles the call that failed: it returns the
// call's result if a survivor completed it, nil if every survivor must
// redo it.
func (e *Elastic) reconcile(ctx context.Context, n int, cause error) ([]int64, error) {
	for {
		g, err := e.waitGen(ctx, e.cfg.ReconfigureTimeout, func(g state.Generation) bool {
			return g.Number > e.gen.Number && (isCrash(g) || isStart(g))
		})
		if err != nil {
			return nil, fmt.Errorf("%w (and then: %v)", cause, err)
		}
		if g.Index(e.cfg.ID) < 0 {
			return nil, fmt.Errorf("%w: generation %d", ErrRemoved, g.Number)
		}
		if err := e.openRing(g); err != nil {
			return nil, err
		}
		res, err := e.settle(ctx, n)
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		cause = err
		e.log.Warn("reconciliation failed; waiting for a newer generation", "generation", g.Number, "err", err)
	}
}

// settle agrees on the survivors' progress: if some completed the pending
// call, the lowest-ranked of them sends its result to all.
func (e *Elastic) settle(ctx context.Context, n int) ([]int64, error) {
	r := e.ring
	d := float64(e.done)
	v := []float64{d, -d}
	if err := r.MaxFloat64(ctx, v); err != nil {
		return nil, err
	}
	hi, lo := uint64(v[0]), uint64(-v[1])
	if hi == lo {
		return nil, nil
	}
	if hi-lo > 1 {
		return nil, fmt.Errorf("worker: survivors %d calls apart (at most 1 is possible)", hi-lo)
	}
	src := []float64{-1e18} // finite: the ring refuses non-finite values
	if e.done == hi {
		src[0] = -float64(r.Rank())
	}
	if err := r.MaxFloat64(ctx, src); err != nil {
		return nil, err
	}
	if e.done == hi {
		n = len(e.last) // the laggards' pending call is the one this worker completed
	}
	out := make([]int64, n)
	if e.done == hi && -src[0] == float64(r.Rank()) {
		copy(out, e.last)
	}
	if err := r.SumInt64(ctx, out); err != nil {
		return nil, err
	}
	if e.done == lo {
		return out, nil // finish the call with it
	}
	return nil, nil // ahead: redo the pending call
}

// isCrash reports a generation that removes members the coordinator found
// dead: it ends the calls in flight and is what survivors reconcile on.
func isCrash(g state.Generation) bool { return strings.Contains(g.Cause, "crash:") }

// isStart reports a generation whose members all begin together (the first,
// or a restart after every worker was lost).
func isStart(g state.Generation) bool {
	return g.Cause == "start" || strings.HasPrefix(g.Cause, "restart")
}

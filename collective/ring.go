package collective

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// Ring is one rank of a ring all-reduce. Its collective calls must be made
// in the same order on every rank (as trainer.Reducer's are) and not
// concurrently. After a call fails the Ring is broken: every later call
// returns ErrBroken; make a new Ring (a new generation) to go on.
type Ring struct {
	cfg              Config
	log              *slog.Logger
	n, rank          int
	succ, pred       int
	host             *Host // serves the ring's streams and barriers
	owner            bool  // host is New's private one: Close stops it
	detached         bool  // guarded by host.mu: no more handlers routed here
	handlers         sync.WaitGroup
	ctx              context.Context // cancelled by Close
	cancel           context.CancelFunc
	senderDone       chan struct{}
	inbox            chan inItem
	out              *sendQueue
	closing          chan struct{}
	closeOnce        sync.Once
	brokenMu         sync.Mutex
	brokenErr        error
	broken           chan struct{}
	opMu             sync.Mutex // one collective call at a time
	seq              uint64
	coder            *coder
	residual         []float32
	barrierMu        sync.Mutex // one barrier at a time
	barrierSeq       uint64
	barriers         barriers
	connMu           sync.Mutex
	conns            map[string]*grpc.ClientConn
	stats            statCounters
	testHookOutgoing func(*pb.Segment) // tests: corrupt what this rank sends
}

// inItem is what the stream handlers hand to the op goroutine.
type inItem struct {
	in  *inSegment
	err error
}

// New starts rank cfg.Rank of a ring: it serves the Collective service on
// lis (or, if lis is nil, on a listener it opens at cfg.Peers[cfg.Rank])
// and connects lazily to its successor. Close stops everything it started.
// (It is a private Host with this one ring, which receives every stream and
// barrier sent to lis; see NewHost for a server that outlives its rings.)
func New(cfg Config, lis net.Listener) (*Ring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", cfg.Peers[cfg.Rank]); err != nil {
			return nil, fmt.Errorf("collective: listen on %s: %w", cfg.Peers[cfg.Rank], err)
		}
	}
	h := newHost(HostConfig{MaxMessageBytes: cfg.MaxMessageBytes, Logger: cfg.Logger}, lis)
	r, err := newRing(cfg, h, true)
	if err != nil {
		lis.Close()
		return nil, err
	}
	h.log = r.log
	h.solo = r
	h.start()
	return r, nil
}

// newRing makes the ring and starts its sender; host serves it.
func newRing(cfg Config, h *Host, owner bool) (*Ring, error) {
	cd, err := newCoder(cfg.MaxMessageBytes)
	if err != nil {
		return nil, fmt.Errorf("collective: codecs: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	n := len(cfg.Peers)
	ctx, cancel := context.WithCancel(context.Background())
	r := &Ring{
		cfg:        cfg,
		log:        log.With("ring", cfg.RingID, "rank", cfg.Rank, "generation", cfg.Generation),
		n:          n,
		rank:       cfg.Rank,
		succ:       (cfg.Rank + 1) % n,
		pred:       (cfg.Rank + n - 1) % n,
		host:       h,
		owner:      owner,
		ctx:        ctx,
		cancel:     cancel,
		senderDone: make(chan struct{}),
		inbox:      make(chan inItem, cfg.InboxSegments),
		out:        newSendQueue(),
		closing:    make(chan struct{}),
		broken:     make(chan struct{}),
		coder:      cd,
		conns:      map[string]*grpc.ClientConn{},
	}
	r.barriers.m = map[uint64]*barrierEntry{}
	go r.sendLoop()
	return r, nil
}

// Addr is the address the Ring serves on.
func (r *Ring) Addr() string { return r.host.Addr() }

// Host is the host that serves the Ring (for a Ring made by New, its
// private one, which Close stops).
func (r *Ring) Host() *Host { return r.host }

// Rank is this ring member's rank; Size the number of ranks.
func (r *Ring) Rank() int { return r.rank }

// Size is the number of ranks of the ring.
func (r *Ring) Size() int { return r.n }

// Generation is the membership generation the Ring was made for.
func (r *Ring) Generation() uint64 { return r.cfg.Generation }

// Seq is the number of collective calls made so far.
func (r *Ring) Seq() uint64 {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	return r.seq
}

// Close flushes what is queued for the successor (at most CloseTimeout),
// then stops the sender and every connection, and waits for the handlers
// serving this ring to end. A Ring made by New stops its server too; one
// made by Host.Ring leaves the host serving. It is safe to call more than
// once; calls in flight return ErrClosed.
func (r *Ring) Close() error { return r.close(r.cfg.CloseTimeout) }

// Abort is Close without the flush: for a ring a member crashed out of,
// whose queued segments belong to a call that will not complete (and
// whose successor may be the dead member, which a flush would wait for
// until CloseTimeout).
func (r *Ring) Abort() error { return r.close(0) }

func (r *Ring) close(flush time.Duration) error {
	r.closeOnce.Do(func() {
		r.host.forget(r)
		close(r.closing)
		r.out.close()
		if flush > 0 {
			t := time.NewTimer(flush)
			select {
			case <-r.senderDone:
			case <-t.C:
				r.log.Warn("collective: close: flush to successor timed out")
			}
			t.Stop()
		}
		r.cancel()
		<-r.senderDone
		if r.owner {
			// Let answers in flight (a barrier that just completed) go out.
			r.host.stop(r.cfg.CloseTimeout)
		}
		r.handlers.Wait() // they end on r.closing
		r.connMu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.conns = nil
		r.connMu.Unlock()
		// The op goroutine may still be leaving a call; it holds opMu.
		r.opMu.Lock()
		r.coder.close()
		r.opMu.Unlock()
	})
	return nil
}

// sendLoop owns the stream to the successor: it sends the queued segments
// in order and, on Close, flushes the queue and closes the stream (over the
// raw data plane, sendRaw, or a gRPC stream, sendGRPC).
func (r *Ring) sendLoop() {
	defer close(r.senderDone)
	addr := r.cfg.Peers[r.succ]
	fail := func(err error) {
		r.breakWith(fmt.Errorf("%w: stream to rank %d (%s): %w", ErrPeer, r.succ, addr, err))
		r.out.abandon()
	}
	if r.cfg.Transport != TransportGRPC {
		r.sendRaw(addr, fail)
		return
	}
	r.sendGRPC(addr, fail)
}

// breakWith records the first failure; later calls return ErrBroken.
func (r *Ring) breakWith(err error) {
	r.brokenMu.Lock()
	defer r.brokenMu.Unlock()
	if r.brokenErr == nil {
		r.brokenErr = err
		close(r.broken)
		select {
		case <-r.closing: // peers going away at shutdown is no news
		default:
			r.log.Warn("collective: ring broken", "err", err)
		}
	}
}

// Err is the failure that broke the Ring, or nil.
func (r *Ring) Err() error {
	r.brokenMu.Lock()
	defer r.brokenMu.Unlock()
	return r.brokenErr
}

func (r *Ring) usable() error {
	select {
	case <-r.closing:
		return ErrClosed
	default:
	}
	if err := r.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrBroken, err)
	}
	return nil
}

// deliver hands a received segment to the op goroutine; false once the
// ring is broken or closing.
func (r *Ring) deliver(it inItem) bool {
	select {
	case r.inbox <- it:
		return true
	case <-r.broken:
		return false
	case <-r.closing:
		return false
	}
}

// SumInt64 sums v over the ring in place: exact integer addition, so every
// rank gets the sequential sum whatever the ring size (wrapping on
// overflow, which the trainer's grids rule out).
func (r *Ring) SumInt64(ctx context.Context, v []int64) error {
	return allReduce(r, ctx, "SumInt64", v, pb.ReduceOp_REDUCE_SUM, r.cfg.Codec, sumInto[int64])
}

// MaxFloat64 takes the element-wise maximum of v over the ring in place.
// Every value must be finite.
func (r *Ring) MaxFloat64(ctx context.Context, v []float64) error {
	return allReduce(r, ctx, "MaxFloat64", v, pb.ReduceOp_REDUCE_MAX, r.cfg.Codec, maxInto)
}

// SumFloat32 sums v over the ring in place in float32, each part added in
// ring order; every rank gets the owner's bits. With a LossyCodec the sum is
// approximate, with error feedback (see Residual).
func (r *Ring) SumFloat32(ctx context.Context, v []float32) error {
	codec := r.cfg.Codec
	if r.cfg.LossyCodec != "" {
		codec = r.cfg.LossyCodec
	}
	return allReduce(r, ctx, "SumFloat32", v, pb.ReduceOp_REDUCE_SUM, codec, sumInto[float32])
}

// Residual returns a copy of this rank's error-feedback residual: what the
// lossy codec dropped and will add back on the next SumFloat32 call (nil if
// none). The sum of the residuals over the ranks is what the running sum of
// the outputs still owes the running sum of the inputs.
func (r *Ring) Residual() []float32 {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if r.residual == nil {
		return nil
	}
	return append([]float32(nil), r.residual...)
}

// SetResidual replaces the residual (a copy is kept). A survivor taking over
// a leaving rank's residual sets the element-wise sum of its own and the
// leaver's, so nothing the codec dropped is lost. A residual whose length
// differs from the next SumFloat32 vector is dropped there.
func (r *Ring) SetResidual(res []float32) {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if res == nil {
		r.residual = nil
		return
	}
	r.residual = append([]float32(nil), res...)
}

// PublishState makes snapshot (the parameters and Adam moments, encoded by
// the owner; opaque here) the state served by StateTransfer, tagged with
// the step it was taken at: the state of the Ring's host (Host.PublishState),
// which every ring of the host serves. The host keeps the slice: the caller
// must not modify it afterwards (publish a new one instead).
func (r *Ring) PublishState(step uint64, snapshot []byte) { r.host.PublishState(step, snapshot) }

// Stats returns the counters so far.
func (r *Ring) Stats() Stats {
	c := &r.stats
	s := Stats{
		BytesSent: c.sentBytes.Load(), BytesRecv: c.recvBytes.Load(), RawBytesSent: c.raw.Load(),
		SegmentsSent: c.sentSegs.Load(), SegmentsRecv: c.recvSegs.Load(),
		Ops: c.ops.Load(), Seconds: time.Duration(c.nanos.Load()).Seconds(),
		ByCodec: map[Codec]CodecStats{},
	}
	for i := 1; i < len(c.byCodec); i++ {
		if n := c.byCodec[i].segs.Load(); n > 0 {
			s.ByCodec[codecNames[i]] = CodecStats{
				BytesSent: c.byCodec[i].bytes.Load(), RawBytesSent: c.byCodec[i].raw.Load(), Segments: n,
			}
		}
	}
	return s
}

// waitWritten blocks until the sender has written the segment of push
// number seq, or has stopped.
func (r *Ring) waitWritten(ctx context.Context, seq uint64) error {
	for r.out.written.Load() < seq {
		select {
		case <-r.out.wrote:
		case <-r.senderDone:
			return nil // nothing reads the vector any more
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// withTimeout bounds one collective call or barrier by Config.Timeout.
func (r *Ring) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.cfg.Timeout > 0 {
		return context.WithTimeout(ctx, r.cfg.Timeout)
	}
	return ctx, func() {}
}

// Package collective is the worker-to-worker collective layer: a ring
// all-reduce (reduce-scatter then all-gather, each part streamed in
// pipelined chunks) that implements trainer.Reducer, with lossless codecs for
// the exact int64 sums and opt-in lossy float32 codecs with error feedback,
// a barrier, and the state transfer a joining worker takes its replica from.
//
// New makes a Ring that owns its server. An elastic worker instead makes one
// Host (NewHost) for its whole life, on one address, and a Ring per
// membership generation with Host.Ring: the host routes each incoming
// stream and barrier to the ring of its (ring id, generation), holds those
// of a generation it has not made yet until it does (HostConfig.WaitForRing)
// and rejects those of a generation it has had with ErrStaleGeneration. The
// host also serves the published state snapshot, with or without a ring,
// and optionally requires mTLS and a bearer token on every call.
//
// Segments go to the successor over the raw data plane by default
// (Config.Transport): one persistent TCP (or TLS) connection carrying
// length-prefixed binary frames, which the host tells from gRPC by its first
// bytes on the same listener, with the same token, TLS, routing and fencing;
// barriers and state transfer are gRPC. Transport "grpc" sends the segments
// on a gRPC stream instead. A host receives both.
//
// Every rank of a ring ends a call with the same bits: int64 sums are
// integer additions (associative, so the result is the sequential sum
// whatever the ring size), and in the all-gather every rank receives the
// bytes the owner of a part encoded, so float results agree too.
package collective

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/protobuf/proto"

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

// windowBytes is the HTTP/2 flow-control window of the ring streams: large
// enough to keep a loopback or LAN link busy without relying on gRPC's
// bandwidth-delay estimate.
const windowBytes = 4 << 20

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
func (r *Ring) Close() error {
	r.closeOnce.Do(func() {
		r.host.forget(r)
		close(r.closing)
		r.out.close()
		t := time.NewTimer(r.cfg.CloseTimeout)
		select {
		case <-r.senderDone:
		case <-t.C:
			r.log.Warn("collective: close: flush to successor timed out")
		}
		t.Stop()
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

// conn returns the (shared, lazily made) client connection to addr.
func (r *Ring) conn(addr string) (*grpc.ClientConn, error) {
	r.connMu.Lock()
	defer r.connMu.Unlock()
	if r.conns == nil {
		return nil, ErrClosed
	}
	if c := r.conns[addr]; c != nil {
		return c, nil
	}
	opts := append(dialCreds(r.host.cfg.ClientTLS, r.host.cfg.Token),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(r.cfg.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(r.cfg.MaxMessageBytes)),
		grpc.WithReadBufferSize(256<<10),
		grpc.WithWriteBufferSize(256<<10),
		grpc.WithInitialWindowSize(windowBytes),
		grpc.WithInitialConnWindowSize(2*windowBytes),
		experimental.WithBufferPool(sharedPool),
	)
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("collective: dial %s: %w", addr, err)
	}
	r.conns[addr] = c
	return c, nil
}

// sendLoop owns the stream to the successor: it sends the queued segments
// in order and, on Close, flushes the queue and closes the stream.
func (r *Ring) sendLoop() {
	defer close(r.senderDone)
	var stream pb.Collective_SegmentsClient
	addr := r.cfg.Peers[r.succ]
	fail := func(err error) {
		r.breakWith(fmt.Errorf("%w: stream to rank %d (%s): %w", ErrPeer, r.succ, addr, err))
		r.out.abandon()
	}
	if r.cfg.Transport != TransportGRPC {
		r.sendRaw(addr, fail)
		return
	}
	for {
		item, ok := r.out.pop()
		if !ok {
			break
		}
		if stream == nil {
			c, err := r.conn(addr)
			if err != nil {
				fail(err)
				return
			}
			stream, err = pb.NewCollectiveClient(c).Segments(r.ctx, grpc.WaitForReady(true), grpc.ForceCodecV2(wireCodec{}))
			if err != nil {
				fail(fromStatus(err))
				return
			}
		}
		r.stats.sent(item.seg) // before: the transport may recycle the payload once written
		if err := stream.SendMsg(&item); err != nil {
			_, err = stream.CloseAndRecv() // the stream's real status
			if err == nil {
				err = errors.New("stream ended")
			}
			fail(fromStatus(err))
			return
		}
	}
	if stream != nil {
		if _, err := stream.CloseAndRecv(); err != nil && r.ctx.Err() == nil {
			r.log.Debug("collective: closing stream to successor", "err", err)
		}
	}
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

func sumInto[T int64 | float32](dst, in []T) {
	for i, x := range in {
		dst[i] = x + dst[i]
	}
}

func maxInto(dst, in []float64) {
	for i, x := range in {
		if x > dst[i] {
			dst[i] = x
		}
	}
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

// allReduce runs one collective call.
func allReduce[T elem](r *Ring, ctx context.Context, name string, v []T, op pb.ReduceOp, codec Codec, combine func(dst, in []T)) error {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	start := time.Now()
	defer func() { r.stats.op(time.Since(start)) }()
	if err := r.usable(); err != nil {
		return fmt.Errorf("collective: %s on rank %d: %w", name, r.rank, err)
	}
	r.seq++
	if r.n == 1 {
		return nil
	}
	ctx, cancel := r.withTimeout(ctx)
	defer cancel()
	o := newOp(r, v, op, codec, combine)
	err := ctx.Err()
	if err == nil {
		err = o.run(ctx)
	}
	if err == nil && o.lastSeq > 0 {
		// v is the caller's again only once the sender is done with it.
		err = r.waitWritten(ctx, o.lastSeq)
	}
	if err != nil {
		err = fmt.Errorf("collective: %s op %d on rank %d of %d (generation %d): %w",
			name, r.seq, r.rank, r.n, r.cfg.Generation, err)
		r.out.push(outSegment{seg: &pb.Segment{
			RingId: r.cfg.RingID, Generation: r.cfg.Generation, OpSeq: r.seq,
			Phase: pb.Phase_PHASE_ABORT, SenderRank: uint32(r.rank), AbortReason: err.Error(),
		}})
		r.breakWith(err)
		if o.lastSeq > 0 {
			wctx, cancel := context.WithTimeout(context.Background(), r.cfg.CloseTimeout)
			if r.waitWritten(wctx, o.lastSeq) != nil {
				r.cancel() // the write is stuck: cut the connection
				<-r.senderDone
			}
			cancel()
		}
		return err
	}
	return nil
}

// op is the state of one all-reduce on one rank. The vector is cut into N
// parts [lo(p), lo(p+1)); part p is streamed in chunks of chunkElems. In
// reduce-scatter step s a rank sends part rank-s and receives part
// rank-1-s, which it adds to and forwards (step s+1) chunk by chunk as each
// chunk arrives; after N-1 steps it owns the reduced part rank+1, which it
// encodes once and all-gathers: the other ranks forward those very bytes.
type op[T elem] struct {
	r          *Ring
	seq        uint64
	v          []T
	redOp      pb.ReduceOp
	codec      Codec
	wire       pb.Codec
	elemT      pb.ElemType
	combine    func(dst, in []T)
	lossy      bool
	res        []float32
	chunkElems int
	lo         []int // N+1 part boundaries
	base       []int // N+1 first global chunk index of each part
	seenRS     []bool
	seenAG     []bool
	tmp        []T
	yq, dq     []float32 // lossy scratch
	expect     int
	got        int
	// zeroCopy: this rank's own part goes out in reduce-scatter step 0
	// straight from v (CodecNone, raw transport); ownSeq is the push
	// number of each of its chunks, which v must not be overwritten before
	// the sender has written (the all-gather brings that part back).
	zeroCopy bool
	ownSeq   []uint64
	lastSeq  uint64
	ctx      context.Context // the call's, set by run
}

func newOp[T elem](r *Ring, v []T, redOp pb.ReduceOp, codec Codec, combine func(dst, in []T)) *op[T] {
	N := r.n
	o := &op[T]{
		r: r, seq: r.seq, v: v, redOp: redOp, codec: codec, wire: pbCodec(codec),
		elemT: elemType[T](), combine: combine, lossy: codec.Lossy(),
		chunkElems: max(1, r.cfg.ChunkBytes/elemSize[T]()),
		lo:         make([]int, N+1),
		base:       make([]int, N+1),
	}
	n := len(v)
	for p := 0; p <= N; p++ {
		o.lo[p] = int(int64(p) * int64(n) / int64(N))
	}
	for p := 0; p < N; p++ {
		o.base[p+1] = o.base[p] + o.chunks(p)
	}
	o.seenRS = make([]bool, o.base[N])
	o.seenAG = make([]bool, o.base[N])
	for s := 0; s < N-1; s++ {
		o.expect += o.chunks(o.mod(r.rank-1-s)) + o.chunks(o.mod(r.rank-s))
	}
	o.tmp = make([]T, min(o.chunkElems, n))
	if codec == CodecNone && littleEndian && r.cfg.Transport != TransportGRPC && r.testHookOutgoing == nil {
		o.zeroCopy = true
		o.ownSeq = make([]uint64, o.chunks(r.rank))
	}
	if o.lossy {
		if len(r.residual) != n {
			r.residual = make([]float32, n)
		}
		o.res = r.residual
		o.yq = make([]float32, len(o.tmp))
		o.dq = make([]float32, len(o.tmp))
	}
	return o
}

func (o *op[T]) mod(p int) int { return ((p % o.r.n) + o.r.n) % o.r.n }

func (o *op[T]) chunks(p int) int {
	l := o.lo[p+1] - o.lo[p]
	return (l + o.chunkElems - 1) / o.chunkElems
}

func (o *op[T]) chunkRange(p, c int) (int, int) {
	lo := o.lo[p] + c*o.chunkElems
	return lo, min(lo+o.chunkElems, o.lo[p+1])
}

func (o *op[T]) run(ctx context.Context) error {
	o.ctx = ctx
	r := o.r
	own := r.rank
	oc := o.chunks(own)
	for next := 0; next < oc || o.got < o.expect; {
		if next < oc {
			o.sendEncoded(pb.Phase_PHASE_REDUCE_SCATTER, 0, own, next, false)
			next++
			// Take whatever arrived meanwhile, but nothing past this op's
			// segments: the predecessor may already be in the next op.
			for more := o.got < o.expect; more; {
				select {
				case it := <-r.inbox:
					if err := o.handle(it); err != nil {
						return err
					}
					more = o.got < o.expect
				default:
					more = false
				}
			}
			continue
		}
		select {
		case it := <-r.inbox:
			if err := o.handle(it); err != nil {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("%w (received %d of %d segments)", ctx.Err(), o.got, o.expect)
		case <-r.broken:
			return r.Err()
		case <-r.closing:
			return ErrClosed
		}
	}
	return nil
}

// sendEncoded encodes chunk c of part p from v and queues it. owner marks
// the all-gather of the rank's own reduced part: with a lossy codec v takes
// the decoded bits every other rank will receive.
func (o *op[T]) sendEncoded(phase pb.Phase, step, p, c int, owner bool) {
	lo, hi := o.chunkRange(p, c)
	var payload *[]byte
	if o.lossy {
		x := any(o.v[lo:hi]).([]float32)
		res := o.res[lo:hi]
		y, d := o.yq[:hi-lo], o.dq[:hi-lo]
		for i := range x {
			y[i] = x[i] + res[i]
		}
		payload = encodeLossy(o.codec, y)
		if err := decodeLossy(o.codec, d, *payload); err != nil {
			// Only a non-finite input gets here; the receiver rejects it.
			copy(d, y)
		}
		for i := range y {
			res[i] = y[i] - d[i]
		}
		if owner {
			copy(x, d)
		}
	} else if o.zeroCopy && phase == pb.Phase_PHASE_REDUCE_SCATTER && step == 0 {
		b := asBytes(o.v[lo:hi])
		seq := o.send(phase, step, c, hi-lo, b, nil, crc32c(b))
		o.ownSeq[c], o.lastSeq = seq, seq
		return
	} else {
		payload = encode(o.r.coder, o.codec, o.v[lo:hi])
	}
	o.send(phase, step, c, hi-lo, *payload, payload, crc32c(*payload))
}

// beforeOverwrite waits, if chunk c of part p went out zero-copy, until the
// sender has written it (by then it has, normally: the all-gather of a
// chunk follows its reduce-scatter round the ring).
func (o *op[T]) beforeOverwrite(p, c int) error {
	if !o.zeroCopy || p != o.r.rank {
		return nil
	}
	return o.r.waitWritten(o.ctx, o.ownSeq[c])
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

// send queues a segment and returns its push number; pooled, if set, is
// payload's buffer in sharedPool.
func (o *op[T]) send(phase pb.Phase, step, c, count int, payload []byte, pooled *[]byte, crc uint32) uint64 {
	r := o.r
	seg := &pb.Segment{
		RingId: r.cfg.RingID, Generation: r.cfg.Generation, OpSeq: o.seq,
		Phase: phase, Step: uint32(step), Chunk: uint32(c), SenderRank: uint32(r.rank),
		Codec: o.wire, ElemType: o.elemT, Op: o.redOp, VectorLen: uint64(len(o.v)),
		ElemCount: uint32(count), Payload: payload, Crc32C: crc,
	}
	if r.testHookOutgoing != nil {
		r.testHookOutgoing(seg)
		pooled = nil // the hook may have swapped the payload
	}
	seq := r.out.push(outSegment{seg: seg, pooled: pooled})
	// Let the sender run now. push readies it on this P, and the op goroutine
	// rarely blocks while segments keep arriving, so without a yield the
	// sender waits for a free P (the other one reads frames) while the
	// successor idles on the bytes: in a 2-worker fast-mode step the sender
	// sat runnable ~14 ms per step (execution trace), and the yield raised
	// training throughput 1.3-1.5x (docs/benchmarks.md).
	runtime.Gosched()
	return seq
}

// handle validates one received segment and applies it. Nothing of a
// segment is added or kept unless all of it passed every check.
func (o *op[T]) handle(it inItem) error {
	if it.err != nil {
		return it.err
	}
	forwarded := false
	defer func() {
		if !forwarded {
			it.in.release()
		}
	}()
	r, s := o.r, &it.in.seg
	N := r.n
	if s.RingId != r.cfg.RingID {
		return fmt.Errorf("%w: segment of ring %q, this is ring %q", ErrStaleGeneration, s.RingId, r.cfg.RingID)
	}
	if s.Generation != r.cfg.Generation {
		return fmt.Errorf("%w: segment of generation %d, ring is at generation %d", ErrStaleGeneration, s.Generation, r.cfg.Generation)
	}
	if int(s.SenderRank) != r.pred {
		return fmt.Errorf("%w: segment from rank %d, predecessor is rank %d", ErrStaleGeneration, s.SenderRank, r.pred)
	}
	if s.Phase == pb.Phase_PHASE_ABORT {
		return fmt.Errorf("%w: rank %d aborted op %d: %s", ErrPeer, s.SenderRank, s.OpSeq, s.AbortReason)
	}
	if s.OpSeq != o.seq {
		return fmt.Errorf("%w: segment of op %d during op %d (phase %v step %d chunk %d; got %d of %d, len %d)", ErrWrongStep, s.OpSeq, o.seq, s.Phase, s.Step, s.Chunk, o.got, o.expect, len(o.v))
	}
	if int(s.Step) >= N-1 {
		return fmt.Errorf("%w: step %d of a %d-rank ring", ErrWrongStep, s.Step, N)
	}
	var p int
	var seen []bool
	switch s.Phase {
	case pb.Phase_PHASE_REDUCE_SCATTER:
		p, seen = o.mod(r.rank-1-int(s.Step)), o.seenRS
	case pb.Phase_PHASE_ALL_GATHER:
		p, seen = o.mod(r.rank-int(s.Step)), o.seenAG
	default:
		return fmt.Errorf("%w: phase %v", ErrWrongStep, s.Phase)
	}
	if s.ElemType != o.elemT || s.Op != o.redOp || s.Codec != o.wire {
		return fmt.Errorf("%w: segment is %v/%v/%v, op is %v/%v/%v", ErrShape,
			s.ElemType, s.Op, s.Codec, o.elemT, o.redOp, o.wire)
	}
	if s.VectorLen != uint64(len(o.v)) {
		return fmt.Errorf("%w: sender's vector has %d elements, this rank's %d", ErrShape, s.VectorLen, len(o.v))
	}
	c := int(s.Chunk)
	if c >= o.chunks(p) {
		return fmt.Errorf("%w: chunk %d of part %d, which has %d chunks", ErrShape, c, p, o.chunks(p))
	}
	if seen[o.base[p]+c] {
		return fmt.Errorf("%w: duplicate %v step %d chunk %d", ErrWrongStep, s.Phase, s.Step, c)
	}
	lo, hi := o.chunkRange(p, c)
	if int(s.ElemCount) != hi-lo {
		return fmt.Errorf("%w: chunk %d of part %d carries %d elements, want %d", ErrShape, c, p, s.ElemCount, hi-lo)
	}
	if lim := maxEncodedLen(o.codec, (hi-lo)*elemSize[T](), hi-lo); len(s.Payload) > lim {
		return fmt.Errorf("%w: payload of %d bytes for a chunk of %d elements (limit %d)", ErrOversized, len(s.Payload), hi-lo, lim)
	}
	if got := it.in.payloadCRC(); got != s.Crc32C {
		return fmt.Errorf("%w: %v step %d chunk %d: crc32c %08x, header says %08x", ErrChecksum, s.Phase, s.Step, c, got, s.Crc32C)
	}
	if dst, ok := any(o.v[lo:hi]).([]int64); ok && o.codec == CodecNone {
		// applyRawInt64 sends the buffer on (takeWhole) or leaves it.
		// Exact int64 without a codec: add or copy straight from the payload.
		if len(s.Payload) != 8*len(dst) {
			return fmt.Errorf("%v step %d chunk %d from rank %d: %w: payload of %d bytes for %d elements",
				s.Phase, s.Step, c, s.SenderRank, ErrShape, len(s.Payload), len(dst))
		}
		return o.applyRawInt64(it.in, dst, p, c)
	}
	in := o.tmp[:hi-lo]
	var err error
	if o.lossy {
		err = decodeLossy(o.codec, any(in).([]float32), s.Payload)
	} else {
		err = decode(r.coder, o.codec, in, s.Payload)
	}
	if err == nil {
		err = checkFinite(in)
	}
	if err != nil {
		return fmt.Errorf("%v step %d chunk %d from rank %d: %w", s.Phase, s.Step, c, s.SenderRank, err)
	}
	seen[o.base[p]+c] = true
	o.got++
	step := int(s.Step)
	if s.Phase == pb.Phase_PHASE_REDUCE_SCATTER {
		o.combine(o.v[lo:hi], in)
		if step < N-2 {
			o.sendEncoded(pb.Phase_PHASE_REDUCE_SCATTER, step+1, p, c, false)
		} else { // p is this rank's part, now reduced
			o.sendEncoded(pb.Phase_PHASE_ALL_GATHER, 0, p, c, true)
		}
		return nil
	}
	if err := o.beforeOverwrite(p, c); err != nil {
		return err
	}
	copy(o.v[lo:hi], in)
	if step < N-2 {
		forwarded = true
		o.forward(it.in, c, hi-lo)
	}
	return nil
}

// forward passes an all-gather segment on to the successor, the very bytes.
// They alias the received buffer, which goes back to the pool once sent if
// the payload is all of it (a raw frame's), else to the garbage collector.
func (o *op[T]) forward(in *inSegment, c, count int) {
	s := &in.seg
	o.send(pb.Phase_PHASE_ALL_GATHER, int(s.Step)+1, c, count, s.Payload, in.takeWhole(), s.Crc32C)
}

// applyRawInt64 is handle's tail for CodecNone int64 segments, which need
// no decode buffer.
func (o *op[T]) applyRawInt64(in *inSegment, dst []int64, p, c int) error {
	s := &in.seg
	seen := o.seenRS
	if s.Phase == pb.Phase_PHASE_ALL_GATHER {
		seen = o.seenAG
	}
	seen[o.base[p]+c] = true
	o.got++
	step := int(s.Step)
	if s.Phase == pb.Phase_PHASE_REDUCE_SCATTER && in.whole() {
		// Add in place in the received buffer (ours, and checked) and send
		// it on: one pass over the chunk instead of add, encode and copy.
		// Only the owner (last step) keeps the sum in v; a partial sum of
		// an earlier step is overwritten by the all-gather anyway.
		b := s.Payload[:8*len(dst)]
		last := step == o.r.n-2
		if littleEndian {
			in := asInt64s(b)
			if last {
				for i, x := range in {
					x += dst[i]
					dst[i], in[i] = x, x
				}
			} else {
				for i := range in {
					in[i] += dst[i]
				}
			}
		} else {
			le := binary.LittleEndian
			for i := range dst {
				x := int64(le.Uint64(b[8*i:])) + dst[i]
				le.PutUint64(b[8*i:], uint64(x))
				if last {
					dst[i] = x
				}
			}
		}
		phase, next := pb.Phase_PHASE_REDUCE_SCATTER, step+1
		if last {
			phase, next = pb.Phase_PHASE_ALL_GATHER, 0
		}
		o.send(phase, next, c, len(dst), b, in.takeWhole(), crc32c(b))
		return nil
	}
	if s.Phase == pb.Phase_PHASE_REDUCE_SCATTER { // a gRPC segment: its buffer goes back to the pool
		le := binary.LittleEndian
		b := s.Payload[:8*len(dst)]
		for i := range dst {
			dst[i] += int64(le.Uint64(b[8*i:]))
		}
		if step < o.r.n-2 {
			o.sendEncoded(pb.Phase_PHASE_REDUCE_SCATTER, step+1, p, c, false)
		} else {
			o.sendEncoded(pb.Phase_PHASE_ALL_GATHER, 0, p, c, true)
		}
		return nil
	}
	if err := o.beforeOverwrite(p, c); err != nil {
		return err
	}
	getRaw(dst, s.Payload)
	if step < o.r.n-2 {
		o.forward(in, c, len(dst))
	}
	return nil
}

// segmentBytes is a segment's size on the wire (its protobuf encoding).
func segmentBytes(s *pb.Segment) int64 { return int64(proto.Size(s)) }

// withTimeout bounds one collective call or barrier by Config.Timeout.
func (r *Ring) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.cfg.Timeout > 0 {
		return context.WithTimeout(ctx, r.cfg.Timeout)
	}
	return ctx, func() {}
}

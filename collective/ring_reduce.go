package collective

import (
	"context"
	"fmt"
	"runtime"
	"time"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

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

package collective

import (
	"encoding/binary"
	"fmt"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

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
	p, lo, hi, seen, err := o.check(it.in)
	if err != nil {
		return err
	}
	c := int(s.Chunk)
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

// check validates a received segment against the op before anything of it
// is used (ring, generation, sender, op, step, phase, element type, shape,
// chunk, length bound, checksum): it returns the part p the segment's chunk
// belongs to, the chunk's elements [lo, hi) and the phase's seen flags.
func (o *op[T]) check(in *inSegment) (p, lo, hi int, seen []bool, err error) {
	r, s := o.r, &in.seg
	N := r.n
	if s.RingId != r.cfg.RingID {
		return 0, 0, 0, nil, fmt.Errorf("%w: segment of ring %q, this is ring %q", ErrStaleGeneration, s.RingId, r.cfg.RingID)
	}
	if s.Generation != r.cfg.Generation {
		return 0, 0, 0, nil, fmt.Errorf("%w: segment of generation %d, ring is at generation %d", ErrStaleGeneration, s.Generation, r.cfg.Generation)
	}
	if int(s.SenderRank) != r.pred {
		return 0, 0, 0, nil, fmt.Errorf("%w: segment from rank %d, predecessor is rank %d", ErrStaleGeneration, s.SenderRank, r.pred)
	}
	if s.Phase == pb.Phase_PHASE_ABORT {
		return 0, 0, 0, nil, fmt.Errorf("%w: rank %d aborted op %d: %s", ErrPeer, s.SenderRank, s.OpSeq, s.AbortReason)
	}
	if s.OpSeq != o.seq {
		return 0, 0, 0, nil, fmt.Errorf("%w: segment of op %d during op %d (phase %v step %d chunk %d; got %d of %d, len %d)", ErrWrongStep, s.OpSeq, o.seq, s.Phase, s.Step, s.Chunk, o.got, o.expect, len(o.v))
	}
	if int(s.Step) >= N-1 {
		return 0, 0, 0, nil, fmt.Errorf("%w: step %d of a %d-rank ring", ErrWrongStep, s.Step, N)
	}
	switch s.Phase {
	case pb.Phase_PHASE_REDUCE_SCATTER:
		p, seen = o.mod(r.rank-1-int(s.Step)), o.seenRS
	case pb.Phase_PHASE_ALL_GATHER:
		p, seen = o.mod(r.rank-int(s.Step)), o.seenAG
	default:
		return 0, 0, 0, nil, fmt.Errorf("%w: phase %v", ErrWrongStep, s.Phase)
	}
	if s.ElemType != o.elemT || s.Op != o.redOp || s.Codec != o.wire {
		return 0, 0, 0, nil, fmt.Errorf("%w: segment is %v/%v/%v, op is %v/%v/%v", ErrShape,
			s.ElemType, s.Op, s.Codec, o.elemT, o.redOp, o.wire)
	}
	if s.VectorLen != uint64(len(o.v)) {
		return 0, 0, 0, nil, fmt.Errorf("%w: sender's vector has %d elements, this rank's %d", ErrShape, s.VectorLen, len(o.v))
	}
	c := int(s.Chunk)
	if c >= o.chunks(p) {
		return 0, 0, 0, nil, fmt.Errorf("%w: chunk %d of part %d, which has %d chunks", ErrShape, c, p, o.chunks(p))
	}
	if seen[o.base[p]+c] {
		return 0, 0, 0, nil, fmt.Errorf("%w: duplicate %v step %d chunk %d", ErrWrongStep, s.Phase, s.Step, c)
	}
	lo, hi = o.chunkRange(p, c)
	if int(s.ElemCount) != hi-lo {
		return 0, 0, 0, nil, fmt.Errorf("%w: chunk %d of part %d carries %d elements, want %d", ErrShape, c, p, s.ElemCount, hi-lo)
	}
	if lim := maxEncodedLen(o.codec, (hi-lo)*elemSize[T](), hi-lo); len(s.Payload) > lim {
		return 0, 0, 0, nil, fmt.Errorf("%w: payload of %d bytes for a chunk of %d elements (limit %d)", ErrOversized, len(s.Payload), hi-lo, lim)
	}
	if got := in.payloadCRC(); got != s.Crc32C {
		return 0, 0, 0, nil, fmt.Errorf("%w: %v step %d chunk %d: crc32c %08x, header says %08x", ErrChecksum, s.Phase, s.Step, c, got, s.Crc32C)
	}
	return p, lo, hi, seen, nil
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

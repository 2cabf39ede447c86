package collective

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// service is the gRPC face of a Host: it routes each stream and barrier
// to the ring it belongs to.
type service struct {
	pb.UnimplementedCollectiveServer
	h *Host
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "?"
}

// Segments routes a predecessor's stream to the ring named by its first
// segment's (RingId, Generation), waiting for that ring to be made if it is
// newer than every ring the host has had; New's private host hands every
// stream to its one ring, which validates each segment.
func (s *service) Segments(stream pb.Collective_SegmentsServer) error {
	h := s.h
	if h.solo != nil { // set before the server started
		r, err := h.route(stream.Context(), "", 0)
		if err != nil {
			return routeStatus(err)
		}
		defer r.handlers.Done()
		return r.serveSegments(stream, nil)
	}
	first := new(inSegment)
	if err := stream.RecvMsg(first); err != nil {
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&pb.SegmentsAck{})
		}
		return err
	}
	r, err := h.route(stream.Context(), first.seg.RingId, first.seg.Generation)
	if err != nil {
		first.release()
		return routeStatus(err)
	}
	defer r.handlers.Done()
	return r.serveSegments(stream, first)
}

// serveSegments receives a predecessor's stream and hands each segment to
// the op goroutine, which validates it. A reader goroutine does the Recv
// calls so the handler can end the stream (and so fail the sender fast) as
// soon as this ring breaks or closes; it exits when the stream's context
// ends, which returning from the handler causes. first, if set, is the
// stream's first segment, already read by the router: then every segment
// of the stream must be of this ring's id and generation (a stream belongs
// to one ring), and one that is not ends the stream undelivered.
func (r *Ring) serveSegments(stream pb.Collective_SegmentsServer, first *inSegment) error {
	ctx := stream.Context()
	fence := first != nil
	recv := make(chan inItem)
	r.handlers.Add(1) // the caller holds one: Close cannot be waiting on zero
	go func() {
		defer r.handlers.Done()
		legit := false // the stream has carried this ring's predecessor's segments
		for {
			var in *inSegment
			var err error
			if first != nil {
				in, first = first, nil
			} else {
				in = new(inSegment)
				err = stream.RecvMsg(in)
			}
			if err == nil && fence && (in.seg.RingId != r.cfg.RingID || in.seg.Generation != r.cfg.Generation) {
				err = fmt.Errorf("%w: segment of ring %q generation %d in a stream of ring %q generation %d",
					ErrStaleGeneration, in.seg.RingId, in.seg.Generation, r.cfg.RingID, r.cfg.Generation)
				in.release()
				if legit {
					r.deliver(inItem{err: fmt.Errorf("%w: the predecessor's stream: %w", ErrPeer, err)})
				}
				select {
				case recv <- inItem{err: toStatus(err)}:
				case <-ctx.Done():
				}
				return
			}
			if err == nil && in.seg.RingId == r.cfg.RingID && in.seg.Generation == r.cfg.Generation && int(in.seg.SenderRank) == r.pred {
				legit = true
			}
			if err != nil && !errors.Is(err, io.EOF) {
				// gRPC has already ended the stream (and its context), so
				// tell the op goroutine from here.
				switch {
				case status.Code(err) == codes.ResourceExhausted:
					r.deliver(inItem{err: fmt.Errorf("%w: from the stream of %s: %v", ErrOversized, peerAddr(ctx), err)})
				case isWireError(err):
					r.deliver(inItem{err: fmt.Errorf("%w: from the stream of %s: %v", ErrShape, peerAddr(ctx), err)})
				case legit:
					r.deliver(inItem{err: fmt.Errorf("%w: the predecessor's stream broke: %v", ErrPeer, err)})
				}
			}
			select {
			case recv <- inItem{in: in, err: err}:
			case <-ctx.Done():
				if in != nil && err == nil {
					in.release()
				}
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		select {
		case it := <-recv:
			if errors.Is(it.err, io.EOF) {
				return stream.SendAndClose(&pb.SegmentsAck{})
			}
			if it.err != nil {
				return it.err
			}
			r.stats.received(&it.in.seg)
			if !r.deliver(it) {
				return toStatus(r.usable())
			}
		case <-r.broken:
			return toStatus(r.usable())
		case <-r.closing:
			return toStatus(ErrClosed)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// barriers is rank 0's record of who has reached which barrier.
type barriers struct {
	mu sync.Mutex
	m  map[uint64]*barrierEntry
}

type barrierEntry struct {
	arrived map[uint32]bool
	done    chan struct{}
	left    int
}

// Barrier blocks until every rank of the ring has called Barrier as many
// times as this rank has. Rank 0 holds the count; the others ask it.
func (r *Ring) Barrier(ctx context.Context) error {
	r.barrierMu.Lock()
	defer r.barrierMu.Unlock()
	if err := r.usable(); err != nil {
		return fmt.Errorf("collective: barrier on rank %d: %w", r.rank, err)
	}
	r.barrierSeq++
	if r.n == 1 {
		return nil
	}
	ctx, cancel := r.withTimeout(ctx)
	defer cancel()
	var err error
	if r.rank == 0 {
		err = r.arrive(ctx, 0, r.barrierSeq)
	} else {
		var c *grpc.ClientConn
		if c, err = r.conn(r.cfg.Peers[0]); err == nil {
			_, err = pb.NewCollectiveClient(c).Barrier(ctx, &pb.BarrierRequest{
				RingId: r.cfg.RingID, Generation: r.cfg.Generation, Rank: uint32(r.rank), Seq: r.barrierSeq,
			}, grpc.WaitForReady(true))
			err = fromStatus(err)
		}
	}
	if err != nil {
		return fmt.Errorf("collective: barrier %d on rank %d: %w", r.barrierSeq, r.rank, err)
	}
	return nil
}

// arrive records rank at barrier seq on rank 0 and waits for the others.
func (r *Ring) arrive(ctx context.Context, rank uint32, seq uint64) error {
	r.barriers.mu.Lock()
	e := r.barriers.m[seq]
	if e == nil {
		e = &barrierEntry{arrived: map[uint32]bool{}, done: make(chan struct{})}
		r.barriers.m[seq] = e
	}
	if e.arrived[rank] {
		r.barriers.mu.Unlock()
		return fmt.Errorf("%w: rank %d reached barrier %d twice", ErrWrongStep, rank, seq)
	}
	e.arrived[rank] = true
	if len(e.arrived) == r.n {
		close(e.done)
	}
	r.barriers.mu.Unlock()
	select {
	case <-e.done:
	case <-ctx.Done():
		return ctx.Err()
	case <-r.closing:
		select {
		case <-e.done: // completed as the ring closed: still a pass
		default:
			return ErrClosed
		}
	}
	r.barriers.mu.Lock()
	if e.left++; e.left == r.n {
		delete(r.barriers.m, seq)
	}
	r.barriers.mu.Unlock()
	return nil
}

// Barrier routes a barrier to the ring of its (RingId, Generation), as
// Segments routes streams.
func (s *service) Barrier(ctx context.Context, req *pb.BarrierRequest) (*pb.BarrierResponse, error) {
	r, err := s.h.route(ctx, req.RingId, req.Generation)
	if err != nil {
		return nil, routeStatus(err)
	}
	defer r.handlers.Done()
	switch {
	case req.RingId != r.cfg.RingID:
		return nil, toStatus(fmt.Errorf("%w: barrier of ring %q, this is ring %q", ErrStaleGeneration, req.RingId, r.cfg.RingID))
	case req.Generation != r.cfg.Generation:
		return nil, toStatus(fmt.Errorf("%w: barrier of generation %d, ring is at generation %d", ErrStaleGeneration, req.Generation, r.cfg.Generation))
	case r.rank != 0:
		return nil, toStatus(fmt.Errorf("%w: barrier sent to rank %d, not 0", ErrStaleGeneration, r.rank))
	case int(req.Rank) >= r.n || req.Rank == 0:
		return nil, toStatus(fmt.Errorf("%w: barrier from rank %d of a %d-rank ring", ErrStaleGeneration, req.Rank, r.n))
	}
	if err := r.arrive(ctx, req.Rank, req.Seq); err != nil {
		return nil, toStatus(err)
	}
	return &pb.BarrierResponse{}, nil
}

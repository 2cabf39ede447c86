package collective

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// service is the gRPC face of a Ring.
type service struct {
	pb.UnimplementedCollectiveServer
	r *Ring
}

// Segments receives a predecessor's stream and hands each segment to the op
// goroutine, which validates it. A reader goroutine does the Recv calls so
// the handler can end the stream (and so fail the sender fast) as soon as
// this ring breaks or closes; it exits when the stream's context ends,
// which returning from the handler causes.
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "?"
}

func (s *service) Segments(stream pb.Collective_SegmentsServer) error {
	r := s.r
	ctx := stream.Context()
	recv := make(chan inItem)
	go func() {
		legit := false // the stream has carried this ring's predecessor's segments
		for {
			in := new(inSegment)
			err := stream.RecvMsg(in)
			if err == nil && in.seg.RingId == r.cfg.RingID && in.seg.Generation == r.cfg.Generation && int(in.seg.SenderRank) == r.pred {
				legit = true
			}
			if err != nil && !errors.Is(err, io.EOF) {
				// gRPC has already ended the stream (and its context), so
				// tell the op goroutine from here.
				switch {
				case status.Code(err) == codes.ResourceExhausted:
					r.deliver(inItem{err: fmt.Errorf("%w: from the stream of %s: %v", ErrOversized, peerAddr(ctx), err)})
				case strings.Contains(err.Error(), errWire.Error()):
					r.deliver(inItem{err: fmt.Errorf("%w: from the stream of %s: %v", ErrShape, peerAddr(ctx), err)})
				case legit:
					r.deliver(inItem{err: fmt.Errorf("%w: the predecessor's stream broke: %v", ErrPeer, err)})
				}
			}
			select {
			case recv <- inItem{in: in, err: err}:
			case <-ctx.Done():
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

func (s *service) Barrier(ctx context.Context, req *pb.BarrierRequest) (*pb.BarrierResponse, error) {
	r := s.r
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

package collective

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// sink is a raw Collective server standing in for a peer: it drains the
// segments sent to it.
type sink struct {
	pb.UnimplementedCollectiveServer
	mu   sync.Mutex
	segs []*pb.Segment
}

func (s *sink) Segments(stream pb.Collective_SegmentsServer) error {
	for {
		seg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&pb.SegmentsAck{})
		}
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.segs = append(s.segs, seg)
		s.mu.Unlock()
	}
}

func serveRaw(t *testing.T, lis net.Listener, impl pb.CollectiveServer) {
	srv := grpc.NewServer(grpc.WaitForHandlers(true))
	pb.RegisterCollectiveServer(srv, impl)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
}

func rawClient(t *testing.T, addr string) pb.CollectiveClient {
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return pb.NewCollectiveClient(c)
}

// hostileCase is one thing a hostile rank 0 does to the victim, rank 1 of
// a 2-rank ring, during a MaxFloat64 of 20 elements (parts [0,10) and
// [10,20), chunks of 8 elements: chunk 0 of part 0 is elements 0..7).
type hostileCase struct {
	name   string
	mutate func(segs []*pb.Segment) []*pb.Segment
	want   error
}

func TestHostilePeerSegments(t *testing.T) {
	crc := func(s *pb.Segment) { s.Crc32C = crc32c(s.Payload) }
	first := func(f func(*pb.Segment)) func([]*pb.Segment) []*pb.Segment {
		return func(segs []*pb.Segment) []*pb.Segment { f(segs[0]); return segs }
	}
	cases := []hostileCase{
		{"valid", func(s []*pb.Segment) []*pb.Segment { return s }, nil},
		{"corrupt payload", first(func(s *pb.Segment) { s.Payload[3] ^= 0x10 }), ErrChecksum},
		{"wrong generation", first(func(s *pb.Segment) { s.Generation-- }), ErrStaleGeneration},
		{"newer generation", first(func(s *pb.Segment) { s.Generation++ }), ErrStaleGeneration},
		{"other ring", first(func(s *pb.Segment) { s.RingId = "other" }), ErrStaleGeneration},
		{"not the predecessor", first(func(s *pb.Segment) { s.SenderRank = 1 }), ErrStaleGeneration},
		{"next op sequence", first(func(s *pb.Segment) { s.OpSeq++ }), ErrWrongStep},
		{"previous op sequence", first(func(s *pb.Segment) { s.OpSeq-- }), ErrWrongStep},
		{"step out of range", first(func(s *pb.Segment) { s.Step = 1 }), ErrWrongStep},
		{"duplicate chunk", func(s []*pb.Segment) []*pb.Segment { return append([]*pb.Segment{s[0]}, s...) }, ErrWrongStep},
		{"extra chunk index", first(func(s *pb.Segment) { s.Chunk = 2 }), ErrShape},
		{"element count", first(func(s *pb.Segment) { s.ElemCount-- }), ErrShape},
		{"vector length", first(func(s *pb.Segment) { s.VectorLen++ }), ErrShape},
		{"element type", first(func(s *pb.Segment) { s.ElemType = pb.ElemType_ELEM_INT64 }), ErrShape},
		{"short payload", first(func(s *pb.Segment) { s.Payload = s.Payload[:len(s.Payload)-8]; crc(s) }), ErrShape},
		{"NaN", first(func(s *pb.Segment) {
			binary.LittleEndian.PutUint64(s.Payload[8:], math.Float64bits(math.NaN()))
			crc(s)
		}), ErrNonFinite},
		{"infinity", first(func(s *pb.Segment) {
			binary.LittleEndian.PutUint64(s.Payload[8:], math.Float64bits(math.Inf(1)))
			crc(s)
		}), ErrNonFinite},
		{"payload over the chunk bound", first(func(s *pb.Segment) { s.Payload = make([]byte, 4096); crc(s) }), ErrOversized},
		{"message over MaxMessageBytes", first(func(s *pb.Segment) { s.Payload = make([]byte, 64<<10); crc(s) }), ErrOversized},
		{"abort", first(func(s *pb.Segment) { s.Phase = pb.Phase_PHASE_ABORT; s.AbortReason = "boom" }), ErrPeer},
	}
	// Each case over both data paths: a gRPC stream and a raw connection.
	for _, via := range []Transport{TransportGRPC, TransportRaw} {
		for _, codec := range []Codec{CodecNone, CodecZstd} {
			for _, tc := range cases {
				if codec != CodecNone && (tc.name == "NaN" || tc.name == "infinity" || tc.name == "short payload") {
					continue // these edit raw payload bytes
				}
				t.Run(string(via)+"/"+string(codec)+"/"+tc.name, func(t *testing.T) { runHostile(t, via, codec, tc) })
			}
		}
	}
	// The same NaN through a compressed codec: encode it properly.
	t.Run("zstd/NaN encoded", func(t *testing.T) {
		runHostile(t, TransportGRPC, CodecZstd, hostileCase{"NaN", func(segs []*pb.Segment) []*pb.Segment {
			v := make([]float64, segs[0].ElemCount)
			v[2] = math.NaN()
			c, _ := newCoder(1 << 20)
			defer c.close()
			segs[0].Payload = *encode(c, CodecZstd, v)
			crc(segs[0])
			return segs
		}, ErrNonFinite})
	})
}

// runHostile sends the segments to the victim over via: a gRPC stream or
// a raw connection.
func runHostile(t *testing.T, via Transport, codec Codec, tc hostileCase) {
	lis, addrs := loopback(t, 2)
	snk := &sink{}
	serveRaw(t, lis[0], snk)
	cfg := testConfig(addrs, 1)
	cfg.Codec = codec
	cfg.MaxMessageBytes = 16 << 10
	cfg.Timeout = 5 * time.Second
	cfg.Transport = TransportGRPC // its successor is the gRPC sink
	victim, err := New(cfg, lis[1])
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()

	// What an honest rank 0 would send for op 1: its part 0 in reduce-scatter,
	// then the reduced part 1 (which it owns) in all-gather.
	mine := make([]float64, 20)
	theirs := make([]float64, 20)
	want := make([]float64, 20)
	for i := range mine {
		mine[i], theirs[i] = float64(i%7), float64((i*5)%11)
		want[i] = max(mine[i], theirs[i])
	}
	c, err := newCoder(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	seg := func(phase pb.Phase, chunk int, v []float64) *pb.Segment {
		p := *encode(c, codec, v)
		return &pb.Segment{
			RingId: "test", Generation: 7, OpSeq: 1, Phase: phase, Chunk: uint32(chunk), SenderRank: 0,
			Codec: pbCodec(codec), ElemType: pb.ElemType_ELEM_FLOAT64, Op: pb.ReduceOp_REDUCE_MAX,
			VectorLen: 20, ElemCount: uint32(len(v)), Payload: p, Crc32C: crc32c(p),
		}
	}
	segs := []*pb.Segment{
		seg(pb.Phase_PHASE_REDUCE_SCATTER, 0, theirs[0:8]),
		seg(pb.Phase_PHASE_REDUCE_SCATTER, 1, theirs[8:10]),
		seg(pb.Phase_PHASE_ALL_GATHER, 0, want[10:18]),
		seg(pb.Phase_PHASE_ALL_GATHER, 1, want[18:20]),
	}
	segs = tc.mutate(segs)

	got := slices.Clone(mine)
	done := make(chan error, 1)
	go func() { done <- victim.MaxFloat64(ctxT(t), got) }()

	if via == TransportRaw {
		conn, err := rawConnect(victim.Addr(), "", "test", 7, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		writeFrames(conn, segs...) // the victim may close once it failed
		conn.(*net.TCPConn).CloseWrite()
	} else {
		stream, err := rawClient(t, victim.Addr()).Segments(ctxT(t), grpc.WaitForReady(true))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range segs {
			if err := stream.Send(s); err != nil {
				break // the victim may end the stream once it failed
			}
		}
		stream.CloseSend()
	}
	var callErr error
	select {
	case callErr = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("victim's call did not return")
	}
	if tc.want == nil {
		if callErr != nil {
			t.Fatalf("valid segments: %v", callErr)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("valid segments: got %v, want %v", got, want)
		}
		return
	}
	if !errors.Is(callErr, tc.want) {
		t.Fatalf("got error %v, want %v", callErr, tc.want)
	}
	t.Logf("%v", callErr)
	// The bad segment was the first reduce-scatter chunk: nothing of it
	// may have been combined into the victim's vector (a duplicate's first
	// copy is a valid segment).
	if tc.name != "duplicate chunk" && !slices.Equal(got[0:8], mine[0:8]) {
		t.Fatalf("bad segment was applied: %v, was %v", got[0:8], mine[0:8])
	}
	if err := victim.MaxFloat64(ctxT(t), got); !errors.Is(err, ErrBroken) || !errors.Is(err, tc.want) {
		t.Fatalf("next call: %v, want ErrBroken wrapping %v", err, tc.want)
	}
}

// TestCorruptionInsideARealRing: rank 0 corrupts one segment it sends (a
// test hook after the checksum). Rank 1 must report ErrChecksum, and the
// abort must reach every rank fast: no rank returns a sum.
func TestCorruptionInsideARealRing(t *testing.T) {
	for _, n := range []int{2, 3, 4} {
		rings := newRings(t, n, func(c *Config) { c.Codec = CodecS2 })
		var once sync.Once
		rings[0].testHookOutgoing = func(s *pb.Segment) {
			if s.Phase == pb.Phase_PHASE_REDUCE_SCATTER && s.OpSeq == 2 {
				once.Do(func() {
					s.Payload = slices.Clone(s.Payload)
					s.Payload[len(s.Payload)/2] ^= 1
				})
			}
		}
		start := time.Now()
		errs := onAll(rings, func(r int, ring *Ring) error {
			for range 2 { // op 1 is clean, op 2 corrupted
				if err := ring.SumInt64(ctxT(t), make([]int64, 300)); err != nil {
					return err
				}
			}
			return nil
		})
		if !errors.Is(errs[1], ErrChecksum) {
			t.Errorf("N=%d: rank 1: %v, want ErrChecksum", n, errs[1])
		}
		for r, err := range errs {
			if err == nil {
				t.Errorf("N=%d: rank %d returned a sum", n, r)
			}
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("N=%d: failure took %v to reach every rank (timeout is 20s)", n, d)
		}
		closeAll(rings)
	}
}

func TestBarrier(t *testing.T) {
	rings := newRings(t, 3, nil)
	const late = 200 * time.Millisecond
	for round := 0; round < 3; round++ {
		start := time.Now()
		took := make([]time.Duration, 3)
		errs := onAll(rings, func(r int, ring *Ring) error {
			if r == round { // a different rank arrives late each round
				time.Sleep(late)
			}
			err := ring.Barrier(ctxT(t))
			took[r] = time.Since(start)
			return err
		})
		for r, err := range errs {
			if err != nil {
				t.Fatalf("round %d rank %d: %v", round, r, err)
			}
			if took[r] < late {
				t.Errorf("round %d: rank %d left the barrier after %v, before the late rank arrived", round, r, took[r])
			}
		}
	}
	// A barrier from another generation is fenced off.
	_, err := rawClient(t, rings[0].Addr()).Barrier(ctxT(t), &pb.BarrierRequest{RingId: "test", Generation: 6, Rank: 1, Seq: 4})
	if err = fromStatus(err); !errors.Is(err, ErrStaleGeneration) {
		t.Errorf("stale barrier: %v, want ErrStaleGeneration", err)
	}
}

package collective

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"testing"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// snapshotBytes looks like float32 parameters and Adam moments.
func snapshotBytes(n int) []byte {
	rng := rand.New(rand.NewPCG(11, 12))
	b := make([]byte, n)
	for i := 0; i+4 <= n; i += 4 {
		v := float32(rng.NormFloat64() * 0.02)
		putRaw(b[i:i+4], []float32{v})
	}
	return b
}

func TestStateTransferRoundTrip(t *testing.T) {
	rings := newRings(t, 2, nil)
	snap := snapshotBytes(3<<20 + 17)
	rings[1].PublishState(42, snap)
	ctx := ctxT(t)
	for _, codec := range []Codec{CodecNone, CodecS2, CodecZstd} {
		for _, chunk := range []int{0, 1000, 1 << 20} {
			st, err := FetchState(ctx, rings[1].Addr(), StateRequest{RingID: "test", Step: 42, Codec: codec, ChunkBytes: chunk})
			if err != nil {
				t.Fatalf("%s chunk %d: %v", codec, chunk, err)
			}
			if st.Step != 42 || !bytes.Equal(st.Data, snap) {
				t.Fatalf("%s chunk %d: step %d, %d bytes differ from the %d published", codec, chunk, st.Step, len(st.Data), len(snap))
			}
		}
	}
	// Empty snapshot, any step.
	rings[0].PublishState(3, []byte{})
	if st, err := FetchState(ctx, rings[0].Addr(), StateRequest{RingID: "test"}); err != nil || st.Step != 3 || len(st.Data) != 0 {
		t.Fatalf("empty snapshot: %+v, %v", st, err)
	}
	if _, err := FetchState(ctx, rings[1].Addr(), StateRequest{RingID: "test", Step: 41}); !errors.Is(err, ErrNoState) {
		t.Errorf("wrong step: %v, want ErrNoState", err)
	}
	if _, err := FetchState(ctx, rings[1].Addr(), StateRequest{RingID: "other"}); !errors.Is(err, ErrStaleGeneration) {
		t.Errorf("other ring: %v, want ErrStaleGeneration", err)
	}
	if _, err := FetchState(ctx, rings[1].Addr(), StateRequest{RingID: "test", MaxBytes: 1 << 20}); !errors.Is(err, ErrOversized) {
		t.Errorf("over MaxBytes: %v, want ErrOversized", err)
	}
}

// badState serves a snapshot in chunks that mutate may spoil.
type badState struct {
	pb.UnimplementedCollectiveServer
	data   []byte
	mutate func(i int, c *pb.StateChunk) *pb.StateChunk // nil result drops the chunk
}

func (b *badState) StateTransfer(req *pb.StateRequest, stream pb.Collective_StateTransferServer) error {
	sum := sha256.Sum256(b.data)
	const cs = 1000
	for i, off := 0, 0; off < len(b.data); i, off = i+1, off+cs {
		end := min(off+cs, len(b.data))
		raw := bytes.Clone(b.data[off:end])
		c := &pb.StateChunk{Step: 5, Offset: uint64(off), TotalLen: uint64(len(b.data)), Codec: pb.Codec_CODEC_NONE,
			RawLen: uint32(len(raw)), Data: raw, Crc32C: crc32c(raw), Last: end == len(b.data)}
		if c.Last {
			c.Sha256 = sum[:]
		}
		if c = b.mutate(i, c); c == nil {
			continue
		}
		if err := stream.Send(c); err != nil {
			return err
		}
	}
	return nil
}

func TestStateTransferDetectsCorruption(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(i int, c *pb.StateChunk) *pb.StateChunk
		want   error
	}{
		{"valid", func(i int, c *pb.StateChunk) *pb.StateChunk { return c }, nil},
		{"flipped byte", func(i int, c *pb.StateChunk) *pb.StateChunk {
			if i == 2 {
				c.Data[10] ^= 4
			}
			return c
		}, ErrChecksum},
		{"flipped byte, crc recomputed (sha256 catches it)", func(i int, c *pb.StateChunk) *pb.StateChunk {
			if i == 2 {
				c.Data[10] ^= 4
				c.Crc32C = crc32c(c.Data)
			}
			return c
		}, ErrChecksum},
		{"chunk missing", func(i int, c *pb.StateChunk) *pb.StateChunk {
			if i == 1 {
				return nil
			}
			return c
		}, ErrShape},
		{"truncated", func(i int, c *pb.StateChunk) *pb.StateChunk {
			if c.Last {
				return nil
			}
			return c
		}, ErrShape},
		{"length changes", func(i int, c *pb.StateChunk) *pb.StateChunk {
			if i == 3 {
				c.TotalLen++
			}
			return c
		}, ErrShape},
		{"raw length lies", func(i int, c *pb.StateChunk) *pb.StateChunk {
			if i == 0 {
				c.RawLen--
			}
			return c
		}, ErrShape},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lis, _ := loopback(t, 1)
			data := snapshotBytes(4500)
			serveRaw(t, lis[0], &badState{data: data, mutate: tc.mutate})
			st, err := FetchState(ctxT(t), lis[0].Addr().String(), StateRequest{RingID: "test"})
			if tc.want == nil {
				if err != nil || !bytes.Equal(st.Data, data) {
					t.Fatalf("valid: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Log(err)
		})
	}
}

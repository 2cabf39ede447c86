package collective

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// stateHolder is the snapshot a Host serves to joining workers.
type stateHolder struct {
	mu   sync.Mutex
	step uint64
	data []byte
	sum  [sha256.Size]byte
	set  bool
}

// PublishState makes snapshot (opaque bytes: the parameters and Adam
// moments, encoded by the owner) the state this host serves to joining
// peers, tagged with the step it was taken at. The host keeps the slice:
// the caller must not modify it afterwards (publish a new one instead).
func (h *Host) PublishState(step uint64, snapshot []byte) {
	sum := sha256.Sum256(snapshot)
	h.state.mu.Lock()
	defer h.state.mu.Unlock()
	h.state.step, h.state.data, h.state.sum, h.state.set = step, snapshot, sum, true
}

// FetchState is the package's FetchState with this host's client TLS
// config, token and message bound (where req leaves them unset).
func (h *Host) FetchState(ctx context.Context, addr string, req StateRequest) (State, error) {
	if req.TLS == nil {
		req.TLS = h.cfg.ClientTLS
	}
	if req.Token == "" {
		req.Token = h.cfg.Token
	}
	if req.MaxMessageBytes == 0 {
		req.MaxMessageBytes = h.cfg.MaxMessageBytes
	}
	return FetchState(ctx, addr, req)
}

// stateEncoder is the zstd encoder of state transfers (EncodeAll is safe
// for concurrent use).
func (h *Host) stateEncoder() (*zstd.Encoder, error) {
	h.zencMu.Lock()
	defer h.zencMu.Unlock()
	if h.zenc == nil {
		h.mu.Lock()
		closed := h.closed
		h.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false), zstd.WithLowerEncoderMem(true))
		if err != nil {
			return nil, err
		}
		h.zenc = enc
	}
	return h.zenc, nil
}

// defaultStateChunk is the raw chunk size of a state transfer.
const defaultStateChunk = 1 << 20

// StateTransfer serves the host's published snapshot; it needs no ring.
// New's private host serves only its ring's RingId; a Host serves any.
func (s *service) StateTransfer(req *pb.StateRequest, stream pb.Collective_StateTransferServer) error {
	h := s.h
	if r := h.solo; r != nil && req.RingId != r.cfg.RingID {
		return toStatus(fmt.Errorf("%w: state of ring %q asked of ring %q", ErrStaleGeneration, req.RingId, r.cfg.RingID))
	}
	h.state.mu.Lock()
	step, data, sum, set := h.state.step, h.state.data, h.state.sum, h.state.set
	h.state.mu.Unlock()
	if !set {
		return toStatus(fmt.Errorf("%w: nothing published", ErrNoState))
	}
	if req.Step != 0 && req.Step != step {
		return toStatus(fmt.Errorf("%w: step %d wanted, step %d published", ErrNoState, req.Step, step))
	}
	codec := req.Codec
	if codec == pb.Codec_CODEC_UNSPECIFIED {
		codec = pb.Codec_CODEC_NONE
	}
	if codec != pb.Codec_CODEC_NONE && codec != pb.Codec_CODEC_S2 && codec != pb.Codec_CODEC_ZSTD {
		return toStatus(fmt.Errorf("%w: state codec %v", ErrShape, codec))
	}
	cs := int(req.ChunkBytes)
	if cs <= 0 {
		cs = defaultStateChunk
	}
	// The encoded chunk plus its header must fit a message.
	cs = max(1, min(cs, h.cfg.MaxMessageBytes/2-1024))
	var zenc *zstd.Encoder
	if codec == pb.Codec_CODEC_ZSTD {
		var err error
		if zenc, err = h.stateEncoder(); err != nil {
			return toStatus(err)
		}
	}
	total := len(data)
	for off := 0; ; off += cs {
		end := min(off+cs, total)
		raw := data[off:end]
		var enc []byte
		switch codec {
		case pb.Codec_CODEC_S2:
			enc = s2.Encode(nil, raw)
		case pb.Codec_CODEC_ZSTD:
			enc = zenc.EncodeAll(raw, nil) // safe for concurrent use
		default:
			enc = raw
		}
		ch := &pb.StateChunk{
			Step: step, Offset: uint64(off), TotalLen: uint64(total), Codec: codec,
			RawLen: uint32(len(raw)), Data: enc, Crc32C: crc32c(enc), Last: end == total,
		}
		if ch.Last {
			ch.Sha256 = sum[:]
		}
		if err := stream.Send(ch); err != nil {
			return err
		}
		if ch.Last {
			return nil
		}
	}
}

// StateRequest says which snapshot FetchState wants and how.
type StateRequest struct {
	// RingID must be the serving ring's.
	RingID string
	// Step of the snapshot wanted; 0 takes whatever is published.
	Step uint64
	// Codec of the chunks: none (default), s2 or zstd.
	Codec Codec
	// ChunkBytes is the raw chunk size asked for (0: the server's).
	ChunkBytes int
	// MaxMessageBytes bounds each received message (0: 8 MiB).
	MaxMessageBytes int
	// MaxBytes bounds the snapshot (0: 16 GiB).
	MaxBytes int64
	// TLS, if set, is the client TLS config of the call (mTLS to a Host
	// with ServerTLS); nil is a plaintext connection.
	TLS *tls.Config
	// Token, if set, is sent as "authorization: Bearer <token>".
	Token string
}

// State is a fetched snapshot.
type State struct {
	Step uint64
	Data []byte
}

// FetchState takes the snapshot published by the Host (or Ring) serving at addr:
// it checks every chunk's CRC-32C, offset and length, and the sha256 of the
// whole, and returns ErrChecksum, ErrShape or ErrOversized on a mismatch.
func FetchState(ctx context.Context, addr string, req StateRequest) (State, error) {
	fail := func(err error) (State, error) {
		return State{}, fmt.Errorf("collective: state transfer from %s: %w", addr, err)
	}
	if req.Codec == "" {
		req.Codec = CodecNone
	}
	if !req.Codec.Lossless() {
		return fail(fmt.Errorf("%w: state codec %q", ErrConfig, req.Codec))
	}
	if req.MaxMessageBytes <= 0 {
		req.MaxMessageBytes = 8 << 20
	}
	if req.MaxBytes <= 0 {
		req.MaxBytes = 16 << 30
	}
	conn, err := grpc.NewClient(addr, append(dialCreds(req.TLS, req.Token),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(req.MaxMessageBytes)))...)
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	var zdec *zstd.Decoder
	if req.Codec == CodecZstd {
		if zdec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecodeAllCapLimit(true)); err != nil {
			return fail(err)
		}
		defer zdec.Close()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := pb.NewCollectiveClient(conn).StateTransfer(ctx, &pb.StateRequest{
		RingId: req.RingID, Step: req.Step, Codec: pbCodec(req.Codec), ChunkBytes: uint32(max(0, req.ChunkBytes)),
	}, grpc.WaitForReady(true))
	if err != nil {
		return fail(fromStatus(err))
	}
	st, err := recvState(stream, req, zdec)
	if err != nil {
		return fail(err)
	}
	return st, nil
}

// recvState reads a state transfer's chunks from stream and checks and
// decodes each (FetchState's loop); its errors are FetchState's, less
// the address.
func recvState(stream pb.Collective_StateTransferClient, req StateRequest, zdec *zstd.Decoder) (State, error) {
	chunkLimit := req.ChunkBytes // a chunk's raw size is at most what was asked
	if chunkLimit <= 0 {
		chunkLimit = defaultStateChunk
	}
	var (
		out   []byte
		step  uint64
		total uint64
		first = true
	)
	for {
		ch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return State{}, fmt.Errorf("%w: stream ended at %d of %d bytes without the last chunk", ErrShape, len(out), total)
		}
		if err != nil {
			return State{}, fromStatus(err)
		}
		if first {
			step, total, first = ch.Step, ch.TotalLen, false
			if total > uint64(req.MaxBytes) {
				return State{}, fmt.Errorf("%w: snapshot of %d bytes, limit %d", ErrOversized, total, req.MaxBytes)
			}
			// Grow with the bytes that arrive, not to the size the peer
			// claims: a peer that claims MaxBytes and sends nothing costs
			// nothing.
			out = make([]byte, 0, min(total, 1<<20))
		}
		switch {
		case ch.Step != step || ch.TotalLen != total:
			return State{}, fmt.Errorf("%w: chunk at %d says step %d of %d bytes, first said step %d of %d", ErrShape, ch.Offset, ch.Step, ch.TotalLen, step, total)
		case ch.Offset != uint64(len(out)):
			return State{}, fmt.Errorf("%w: chunk at offset %d, expected %d", ErrShape, ch.Offset, len(out))
		case uint64(ch.RawLen) > total-uint64(len(out)):
			return State{}, fmt.Errorf("%w: chunk of %d bytes at %d overruns %d", ErrShape, ch.RawLen, ch.Offset, total)
		case int64(ch.RawLen) > int64(chunkLimit):
			return State{}, fmt.Errorf("%w: chunk of %d bytes at %d, more than the %d asked for", ErrShape, ch.RawLen, ch.Offset, chunkLimit)
		case ch.Codec != pbCodec(req.Codec):
			return State{}, fmt.Errorf("%w: chunk codec %v, asked %v", ErrShape, ch.Codec, req.Codec)
		case crc32c(ch.Data) != ch.Crc32C:
			return State{}, fmt.Errorf("%w: chunk at offset %d", ErrChecksum, ch.Offset)
		}
		out = slices.Grow(out, int(ch.RawLen))
		raw := out[len(out) : len(out)+int(ch.RawLen)]
		if err := decodeStateChunk(req.Codec, zdec, ch, raw); err != nil {
			return State{}, err
		}
		out = out[:len(out)+int(ch.RawLen)]
		if ch.Last {
			if uint64(len(out)) != total {
				return State{}, fmt.Errorf("%w: last chunk at %d of %d bytes", ErrShape, len(out), total)
			}
			sum := sha256.Sum256(out)
			if !bytes.Equal(sum[:], ch.Sha256) {
				return State{}, fmt.Errorf("%w: sha256 of the %d-byte snapshot is %x, server says %x", ErrChecksum, total, sum, ch.Sha256)
			}
			return State{Step: step, Data: out}, nil
		}
		if ch.RawLen == 0 {
			return State{}, fmt.Errorf("%w: empty chunk at %d before the last", ErrShape, ch.Offset)
		}
	}
}

// decodeStateChunk decodes a state chunk's data, in codec, into raw (its
// RawLen bytes).
func decodeStateChunk(codec Codec, zdec *zstd.Decoder, ch *pb.StateChunk, raw []byte) error {
	switch codec {
	case CodecS2:
		if n, err := s2.DecodedLen(ch.Data); err != nil || n != int(ch.RawLen) {
			return fmt.Errorf("%w: s2 chunk at %d decodes to %d bytes (%v), want %d", ErrShape, ch.Offset, n, err, ch.RawLen)
		}
		if _, err := s2.Decode(raw, ch.Data); err != nil {
			return fmt.Errorf("%w: s2 chunk at %d: %v", ErrShape, ch.Offset, err)
		}
	case CodecZstd:
		b, err := zdec.DecodeAll(ch.Data, raw[:0])
		if err != nil || len(b) != int(ch.RawLen) {
			return fmt.Errorf("%w: zstd chunk at %d decodes to %d bytes (%v), want %d", ErrShape, ch.Offset, len(b), err, ch.RawLen)
		}
	default:
		if len(ch.Data) != int(ch.RawLen) {
			return fmt.Errorf("%w: chunk at %d has %d bytes, header says %d", ErrShape, ch.Offset, len(ch.Data), ch.RawLen)
		}
		copy(raw, ch.Data)
	}
	return nil
}

package collective

import (
	"crypto/tls"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the fallback codec
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/causalrm/causalrm/internal/bearer"
	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// windowBytes is the HTTP/2 flow-control window of the ring streams: large
// enough to keep a loopback or LAN link busy without relying on gRPC's
// bandwidth-delay estimate.
const windowBytes = 4 << 20

// dialCreds is the transport and per-call credentials of an outgoing
// connection.
func dialCreds(clientTLS *tls.Config, token string) []grpc.DialOption {
	var opts []grpc.DialOption
	if clientTLS != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer.Creds{Token: token, Secure: clientTLS != nil}))
	}
	return opts
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

// sendGRPC is sendLoop for TransportGRPC: it sends the queued segments on
// one gRPC client stream (Collective.Segments) to the successor at addr.
func (r *Ring) sendGRPC(addr string, fail func(error)) {
	var stream pb.Collective_SegmentsClient
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

// wireCodec is the gRPC codec of a Ring's streams. It writes and reads the
// standard protobuf encoding (any gRPC client can talk to a Ring), but moves
// segment payloads without the copies of the generic codec: on send the
// payload is handed to the transport as its own buffer (returned to the
// pool once written); on receive the message is gathered into one pooled
// buffer and the payload aliases it, so it is copied only once, into the
// reduction. Other messages go through the standard proto codec.
type wireCodec struct{}

var fallbackCodec = encoding.GetCodecV2("proto")

func (wireCodec) Name() string { return "proto" }

const payloadField = 13 // pb.Segment.payload

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*outSegment)
	if !ok {
		return fallbackCodec.Marshal(v)
	}
	payload := m.seg.Payload
	m.seg.Payload = nil
	hdr, err := proto.Marshal(m.seg)
	m.seg.Payload = payload
	if err != nil {
		return nil, err
	}
	hdr = protowire.AppendTag(hdr, payloadField, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(len(payload)))
	var body mem.Buffer = mem.SliceBuffer(payload)
	if m.pooled != nil {
		body = mem.NewBuffer(m.pooled, sharedPool)
	}
	return mem.BufferSlice{mem.SliceBuffer(hdr), body}, nil
}

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*inSegment)
	if !ok {
		return fallbackCodec.Unmarshal(data, v)
	}
	buf := sharedPool.Get(data.Len())
	data.CopyTo(*buf)
	if err := parseSegment(*buf, &m.seg); err != nil {
		sharedPool.Put(buf)
		return err
	}
	m.buf = buf
	return nil
}

// parseSegment decodes the protobuf encoding of a Segment; the payload
// aliases b. Unknown fields are skipped.
func parseSegment(b []byte, s *pb.Segment) error {
	*s = pb.Segment{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errWire, protowire.ParseError(n))
		}
		b = b[n:]
		var want protowire.Type
		switch num {
		case 1, 13, 15:
			want = protowire.BytesType
		case 14:
			want = protowire.Fixed32Type
		case 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12:
			want = protowire.VarintType
		default:
			want = typ
		}
		if typ != want {
			return fmt.Errorf("%w: field %d has wire type %d", errWire, num, typ)
		}
		switch typ {
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", errWire, num, protowire.ParseError(n))
			}
			switch num {
			case 1:
				s.RingId = string(v)
			case 13:
				s.Payload = v[:len(v):len(v)]
			case 15:
				s.AbortReason = string(v)
			}
			b = b[n:]
		case protowire.Fixed32Type:
			v, n := protowire.ConsumeFixed32(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", errWire, num, protowire.ParseError(n))
			}
			if num == 14 {
				s.Crc32C = v
			}
			b = b[n:]
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", errWire, num, protowire.ParseError(n))
			}
			switch num {
			case 2:
				s.Generation = v
			case 3:
				s.OpSeq = v
			case 4:
				s.Phase = pb.Phase(int32(v))
			case 5:
				s.Step = uint32(v)
			case 6:
				s.Chunk = uint32(v)
			case 7:
				s.SenderRank = uint32(v)
			case 8:
				s.Codec = pb.Codec(int32(v))
			case 9:
				s.ElemType = pb.ElemType(int32(v))
			case 10:
				s.Op = pb.ReduceOp(int32(v))
			case 11:
				s.VectorLen = v
			case 12:
				s.ElemCount = uint32(v)
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %v", errWire, num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

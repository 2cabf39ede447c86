package collective

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the fallback codec
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

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

// outSegment is a segment to send; pooled, if set, is the payload's buffer
// from sharedPool, which the transport returns there once written.
type outSegment struct {
	seg    *pb.Segment
	pooled *[]byte
}

// inSegment is a received segment whose payload aliases buf (from
// sharedPool); release returns buf once the payload is no longer needed.
type inSegment struct {
	seg pb.Segment
	buf *[]byte
	// crc, if hasCRC, is the CRC-32C of seg.Payload, computed by the raw
	// reader right after reading it (while the bytes are in cache).
	crc    uint32
	hasCRC bool
}

// payloadCRC is the CRC-32C of the segment's payload.
func (s *inSegment) payloadCRC() uint32 {
	if s.hasCRC {
		return s.crc
	}
	return crc32c(s.seg.Payload)
}

// takeWhole hands over the payload's buffer, to go back to the pool once
// the payload is sent, if the payload is all of it (a raw frame's); else the
// buffer is left to the garbage collector (the payload aliases it). The
// segment no longer owns a buffer afterwards.
func (s *inSegment) takeWhole() *[]byte {
	b, whole := s.buf, s.whole()
	s.buf = nil
	if whole {
		return b
	}
	return nil
}

// whole reports whether the payload is all of the segment's pooled buffer.
func (s *inSegment) whole() bool {
	b, p := s.buf, s.seg.Payload
	return b != nil && len(*b) == len(p) && len(p) > 0 && &(*b)[0] == &p[0]
}

func (s *inSegment) release() {
	if s.buf != nil {
		sharedPool.Put(s.buf)
		s.buf = nil
	}
}

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

var errWire = errors.New("malformed segment")

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

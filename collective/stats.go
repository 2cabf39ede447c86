package collective

import (
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// Stats counts a Ring's traffic and time since New.
type Stats struct {
	// BytesSent and BytesRecv are the segment messages' bytes on the ring
	// streams (their protobuf encoding: payload plus a ~40-byte header).
	BytesSent, BytesRecv int64
	// RawBytesSent is the element bytes the sent segments carry, before
	// encoding (8 per int64/float64, 4 per float32).
	RawBytesSent int64
	// SegmentsSent and SegmentsRecv count segments.
	SegmentsSent, SegmentsRecv int64
	// Ops is the number of collective calls, Seconds their total wall time.
	Ops     int64
	Seconds float64
	// ByCodec splits the sent bytes by the codec they were encoded with.
	ByCodec map[Codec]CodecStats
}

// CodecStats is the traffic sent with one codec.
type CodecStats struct {
	BytesSent, RawBytesSent, Segments int64
}

type codecCounters struct{ bytes, raw, segs atomic.Int64 }

type statCounters struct {
	sentBytes, recvBytes, raw, sentSegs, recvSegs, ops, nanos atomic.Int64
	byCodec                                                   [6]codecCounters // indexed by pb.Codec
}

var codecNames = [6]Codec{"", CodecNone, CodecS2, CodecZstd, CodecFP16, CodecInt8}

// segmentBytes is a segment's size on the wire (its protobuf encoding).
func segmentBytes(s *pb.Segment) int64 { return int64(proto.Size(s)) }

func rawBytes(s *pb.Segment) int64 {
	switch s.ElemType {
	case pb.ElemType_ELEM_INT64, pb.ElemType_ELEM_FLOAT64:
		return 8 * int64(s.ElemCount)
	case pb.ElemType_ELEM_FLOAT32:
		return 4 * int64(s.ElemCount)
	}
	return 0
}

func (c *statCounters) sent(s *pb.Segment) {
	b, raw := segmentBytes(s), rawBytes(s)
	c.sentBytes.Add(b)
	c.raw.Add(raw)
	c.sentSegs.Add(1)
	if i := int(s.Codec); i > 0 && i < len(c.byCodec) {
		c.byCodec[i].bytes.Add(b)
		c.byCodec[i].raw.Add(raw)
		c.byCodec[i].segs.Add(1)
	}
}

func (c *statCounters) received(s *pb.Segment) {
	c.recvBytes.Add(segmentBytes(s))
	c.recvSegs.Add(1)
}

func (c *statCounters) op(d time.Duration) {
	c.ops.Add(1)
	c.nanos.Add(int64(d))
}

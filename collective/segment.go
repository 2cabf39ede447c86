package collective

import (
	"errors"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

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

var errWire = errors.New("malformed segment")

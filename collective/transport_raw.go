package collective

import (
	"bufio"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// The raw data plane. A Ring with TransportRaw (the default) sends its
// segments to the successor on one persistent TCP connection to the
// successor's host, beside gRPC on the same listener: the host's listener
// hands a connection whose first bytes are rawMagic to the raw plane and any
// other (the HTTP/2 preface, a TLS ClientHello) to the gRPC server.
//
// A raw connection, client to server:
//
//	"CRMRING1"                               (plaintext, always)
//	TLS handshake                            (if the host has ServerTLS; all
//	                                          that follows is inside TLS)
//	hello: u32 length, u16 len + token, u16 len + ring id,
//	       u64 generation, u32 sender rank
//	frame*: u32 length (of the rest of the frame), then rawHeaderLen-4
//	        bytes of fixed header, the ring id, the abort reason, the payload
//
// and server to client one reply, u8 gRPC code (0: accepted) + u32 length +
// message, after the hello (the token check and the routing to the ring of
// (ring id, generation), which may wait HostConfig.WaitForRing), and at
// most one more, the error that ends the connection. Every frame carries
// every field of a pb.Segment, CRC-32C included, and goes through the same
// checks (Ring's op.handle) as a segment that came over gRPC.
const rawMagic = "CRMRING1"

const (
	rawHeaderLen     = 60
	rawHelloMax      = 4096
	rawSockBuf       = 4 << 20
	rawHandshakeTime = 10 * time.Second
	// rawFrameTime bounds how long the rest of a frame may take once its
	// first byte arrived: the sender writes a frame whole, so a frame that
	// stops halfway is a broken link (a lost or mangled piece of the
	// stream), not a slow peer; the call fails and the worker asks for a
	// relink instead of waiting for the op timeout.
	rawFrameTime = 5 * time.Second
)

// appendFrame writes s's frame header (ring id and abort reason included,
// the payload not) to dst.
func appendFrame(dst []byte, s *pb.Segment) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, rawHeaderLen)...)
	h := dst[n:]
	le := binary.LittleEndian
	le.PutUint32(h[0:], uint32(rawHeaderLen-4+len(s.RingId)+len(s.AbortReason)+len(s.Payload)))
	le.PutUint32(h[4:], s.Crc32C)
	le.PutUint64(h[8:], s.Generation)
	le.PutUint64(h[16:], s.OpSeq)
	le.PutUint64(h[24:], s.VectorLen)
	le.PutUint32(h[32:], s.Step)
	le.PutUint32(h[36:], s.Chunk)
	le.PutUint32(h[40:], s.ElemCount)
	le.PutUint32(h[44:], s.SenderRank)
	h[48], h[49], h[50], h[51] = byte(s.Phase), byte(s.Codec), byte(s.ElemType), byte(s.Op)
	le.PutUint16(h[52:], uint16(len(s.RingId)))
	le.PutUint32(h[56:], uint32(len(s.AbortReason)))
	dst = append(dst, s.RingId...)
	return append(dst, s.AbortReason...)
}

// readFrame reads one frame into in (its payload in a sharedPool buffer).
// A length prefix over limit is ErrOversized (nothing is allocated for it),
// an inconsistent frame errWire; io.EOF only at a frame boundary. Only the
// payload's buffer (pooled) is taken before its bytes arrive, of a length
// checked against limit; the abort reason grows as it is read.
func readFrame(br *bufio.Reader, hdr *[rawHeaderLen]byte, limit int, ringID string, in *inSegment) error {
	if _, err := io.ReadFull(br, hdr[:4]); err != nil {
		return err
	}
	le := binary.LittleEndian
	total := int64(le.Uint32(hdr[0:]))
	if total+4 > int64(limit) {
		return fmt.Errorf("%w: frame of %d bytes, limit %d", ErrOversized, total+4, limit)
	}
	if total < rawHeaderLen-4 {
		return fmt.Errorf("%w: frame of %d bytes", errWire, total)
	}
	if _, err := io.ReadFull(br, hdr[4:]); err != nil {
		return noEOF(err)
	}
	idLen, abortLen := int64(le.Uint16(hdr[52:])), int64(le.Uint32(hdr[56:]))
	payLen := total - (rawHeaderLen - 4) - idLen - abortLen
	if payLen < 0 {
		return fmt.Errorf("%w: frame of %d bytes with %d+%d bytes of names", errWire, total, idLen, abortLen)
	}
	// A ring id is peeked in the reader's buffer; one longer than a hello
	// can carry names no ring this connection can reach.
	if idLen > rawHelloMax || idLen > int64(br.Size()) {
		return fmt.Errorf("%w: ring id of %d bytes", errWire, idLen)
	}
	s := &in.seg
	*s = pb.Segment{
		Crc32C: le.Uint32(hdr[4:]), Generation: le.Uint64(hdr[8:]), OpSeq: le.Uint64(hdr[16:]),
		VectorLen: le.Uint64(hdr[24:]), Step: le.Uint32(hdr[32:]), Chunk: le.Uint32(hdr[36:]),
		ElemCount: le.Uint32(hdr[40:]), SenderRank: le.Uint32(hdr[44:]),
		Phase: pb.Phase(hdr[48]), Codec: pb.Codec(hdr[49]), ElemType: pb.ElemType(hdr[50]), Op: pb.ReduceOp(hdr[51]),
	}
	if idLen > 0 {
		b, err := br.Peek(int(idLen))
		if err != nil {
			return noEOF(err)
		}
		if string(b) == ringID {
			s.RingId = ringID
		} else {
			s.RingId = string(b)
		}
		br.Discard(int(idLen))
	}
	if abortLen > 0 {
		// Grown as it arrives: the length is only checked against limit.
		b, err := io.ReadAll(io.LimitReader(br, abortLen))
		if err != nil {
			return noEOF(err)
		}
		if int64(len(b)) != abortLen {
			return io.ErrUnexpectedEOF
		}
		s.AbortReason = string(b)
	}
	if payLen > 0 {
		buf := sharedPool.Get(int(payLen))
		if _, err := io.ReadFull(br, *buf); err != nil {
			sharedPool.Put(buf)
			return noEOF(err)
		}
		in.buf = buf
		s.Payload = *buf
	}
	in.crc, in.hasCRC = crc32c(s.Payload), true // checked by op.handle
	return nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// rawReply writes the server's reply: a gRPC code and a message.
func rawReply(w io.Writer, err error) error {
	code, msg := codes.OK, ""
	if err != nil {
		st, _ := status.FromError(err)
		code, msg = st.Code(), st.Message()
	}
	b := make([]byte, 5, 5+len(msg))
	b[0] = byte(code)
	binary.LittleEndian.PutUint32(b[1:], uint32(len(msg)))
	_, werr := w.Write(append(b, msg...))
	return werr
}

// readRawReply reads a reply; a refusal comes back as the sentinel error
// the server sent (fromStatus).
func readRawReply(r io.Reader) error {
	var b [5]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	n := binary.LittleEndian.Uint32(b[1:])
	if n > rawHelloMax {
		return fmt.Errorf("%w: reply of %d bytes", errWire, n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return noEOF(err)
	}
	if b[0] == 0 {
		return nil
	}
	return fromStatus(status.Error(codes.Code(b[0]), string(msg)))
}

var errUnauthenticated = errors.New("collective: raw connection: missing or wrong job token")

// readHello reads and checks a raw connection's hello.
func readHello(br *bufio.Reader, token string) (id string, gen uint64, err error) {
	var lb [4]byte
	if _, err := io.ReadFull(br, lb[:]); err != nil {
		return "", 0, err
	}
	n := binary.LittleEndian.Uint32(lb[:])
	if n > rawHelloMax || n < 16 {
		return "", 0, fmt.Errorf("%w: raw hello of %d bytes", ErrOversized, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return "", 0, err
	}
	le := binary.LittleEndian
	str := func() ([]byte, bool) {
		if len(b) < 2 {
			return nil, false
		}
		l := int(le.Uint16(b))
		if len(b) < 2+l {
			return nil, false
		}
		s := b[2 : 2+l]
		b = b[2+l:]
		return s, true
	}
	tok, ok1 := str()
	rid, ok2 := str()
	if !ok1 || !ok2 || len(b) != 12 {
		return "", 0, fmt.Errorf("%w: raw hello", ErrShape)
	}
	if token != "" && subtle.ConstantTimeCompare(tok, []byte(token)) != 1 {
		return "", 0, status.Error(codes.Unauthenticated, errUnauthenticated.Error())
	}
	return string(rid), le.Uint64(b), nil
}

func appendHello(token, id string, gen uint64, rank int) []byte {
	le := binary.LittleEndian
	b := make([]byte, 4, 32+len(token)+len(id))
	b = le.AppendUint16(b, uint16(len(token)))
	b = append(b, token...)
	b = le.AppendUint16(b, uint16(len(id)))
	b = append(b, id...)
	b = le.AppendUint64(b, gen)
	b = le.AppendUint32(b, uint32(rank))
	le.PutUint32(b, uint32(len(b)-4))
	return b
}

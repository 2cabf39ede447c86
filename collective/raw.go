package collective

import (
	"bufio"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
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
)

// Transport names how a Ring sends its segments to its successor.
type Transport string

const (
	// TransportRaw sends length-prefixed binary frames on one persistent
	// TCP (or TLS) connection to the successor's host listener.
	TransportRaw Transport = "raw"
	// TransportGRPC sends them on a gRPC client stream (Collective.Segments).
	TransportGRPC Transport = "grpc"
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

// muxListener is the listener the gRPC server serves: the connections of
// the host's listener that do not start with rawMagic.
type muxListener struct {
	net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (m *muxListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *muxListener) Close() error {
	m.once.Do(func() {
		close(m.done)
		m.Listener.Close()
	})
	return nil
}

// prefixConn replays the bytes the sniffer read.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// acceptLoop accepts the host's connections and sniffs each one.
func (h *Host) acceptLoop() {
	defer h.rawWG.Done()
	m := h.mux
	for {
		c, err := m.Listener.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				m.Close()
				return
			}
			h.log.Warn("collective: accept", "err", err)
			select {
			case <-m.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		if !h.trackConn(c) {
			c.Close()
			continue
		}
		h.rawWG.Add(1)
		go h.sniff(c)
	}
}

// trackConn records a connection the host must close when it stops;
// false if it already has.
func (h *Host) trackConn(c net.Conn) bool {
	h.rawMu.Lock()
	defer h.rawMu.Unlock()
	if h.rawConns == nil {
		return false
	}
	h.rawConns[c] = struct{}{}
	return true
}

func (h *Host) untrackConn(c net.Conn) {
	h.rawMu.Lock()
	defer h.rawMu.Unlock()
	delete(h.rawConns, c)
}

// closeRawConns closes every raw (or not yet sniffed) connection and waits
// for their goroutines and the accept loop (the listener is closed).
func (h *Host) closeRawConns() {
	h.mux.Close()
	h.rawMu.Lock()
	for c := range h.rawConns {
		c.Close()
	}
	h.rawConns = nil
	h.rawMu.Unlock()
	h.rawWG.Wait()
}

// sniff reads a connection's first bytes: rawMagic makes it a raw segment
// connection, anything else goes to gRPC with those bytes replayed.
func (h *Host) sniff(c net.Conn) {
	defer h.rawWG.Done()
	c.SetReadDeadline(time.Now().Add(rawHandshakeTime))
	var b [len(rawMagic)]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		h.untrackConn(c)
		c.Close()
		return
	}
	if string(b[:]) != rawMagic {
		c.SetReadDeadline(time.Time{})
		h.untrackConn(c) // gRPC owns it now
		select {
		case h.mux.conns <- &prefixConn{Conn: c, pre: append([]byte(nil), b[:]...)}:
		case <-h.mux.done:
			c.Close()
		}
		return
	}
	defer func() {
		h.untrackConn(c)
		c.Close()
	}()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(rawSockBuf)
		tc.SetWriteBuffer(64 << 10)
	}
	conn := c
	if h.cfg.ServerTLS != nil {
		tc := tls.Server(c, h.cfg.ServerTLS)
		if err := tc.Handshake(); err != nil {
			h.log.Debug("collective: raw connection: TLS handshake", "err", err)
			return
		}
		conn = tc
	}
	br := bufio.NewReaderSize(conn, 16<<10) // small: payloads are read past it
	id, gen, err := readHello(br, h.cfg.Token)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		rawReply(conn, toStatus(err))
		return
	}
	r, err := h.route(context.Background(), id, gen)
	if err != nil {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		rawReply(conn, routeStatus(err))
		return
	}
	defer r.handlers.Done()
	if err := rawReply(conn, nil); err != nil {
		return
	}
	r.serveRaw(conn, br, h.solo == nil)
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

// serveRaw receives the predecessor's frames and hands each segment to the
// op goroutine, as serveSegments does for a gRPC stream (fence: every frame
// must be of this ring's id and generation). When the ring breaks or
// closes, the sender is told why and the connection is closed.
func (r *Ring) serveRaw(conn net.Conn, br *bufio.Reader, fence bool) {
	stop := make(chan struct{})
	watchDone := make(chan struct{})
	var replyOnce sync.Once
	reply := func(err error) {
		replyOnce.Do(func() {
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			rawReply(conn, toStatus(err))
		})
	}
	go func() {
		defer close(watchDone)
		select {
		case <-r.broken:
			reply(r.usable())
		case <-r.closing:
			reply(ErrClosed)
		case <-stop:
			return
		}
		conn.Close()
	}()
	defer func() {
		close(stop)
		<-watchDone
	}()
	var hdr [rawHeaderLen]byte
	legit := false
	for {
		in := new(inSegment)
		err := readFrame(br, &hdr, r.cfg.MaxMessageBytes, r.cfg.RingID, in)
		if errors.Is(err, io.EOF) {
			return // the sender is done
		}
		if err != nil {
			switch {
			case errors.Is(err, ErrOversized):
				r.deliver(inItem{err: fmt.Errorf("%w: from the connection of %s: %v", ErrOversized, conn.RemoteAddr(), err)})
			case errors.Is(err, errWire):
				r.deliver(inItem{err: fmt.Errorf("%w: from the connection of %s: %v", ErrShape, conn.RemoteAddr(), err)})
			case legit:
				r.deliver(inItem{err: fmt.Errorf("%w: the predecessor's connection broke: %v", ErrPeer, err)})
			}
			reply(err)
			return
		}
		s := &in.seg
		if fence && (s.RingId != r.cfg.RingID || s.Generation != r.cfg.Generation) {
			err = fmt.Errorf("%w: segment of ring %q generation %d in a connection of ring %q generation %d",
				ErrStaleGeneration, s.RingId, s.Generation, r.cfg.RingID, r.cfg.Generation)
			in.release()
			if legit {
				r.deliver(inItem{err: fmt.Errorf("%w: the predecessor's stream: %w", ErrPeer, err)})
			}
			reply(err)
			return
		}
		if s.RingId == r.cfg.RingID && s.Generation == r.cfg.Generation && int(s.SenderRank) == r.pred {
			legit = true
		}
		r.stats.received(s)
		if !r.deliver(inItem{in: in}) {
			in.release()
			return // the watcher replies and closes
		}
	}
}

// dialRaw opens the raw connection to the successor at addr, retrying
// while nothing listens there (as gRPC's WaitForReady does), and has the
// hello accepted.
func (r *Ring) dialRaw(addr string) (net.Conn, error) {
	backoff := 5 * time.Millisecond
	var c net.Conn
	for {
		var d net.Dialer
		var err error
		c, err = d.DialContext(r.ctx, "tcp", addr)
		if err == nil {
			break
		}
		if r.ctx.Err() != nil {
			return nil, err
		}
		select {
		case <-r.ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	stop := context.AfterFunc(r.ctx, func() { c.Close() })
	defer stop()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(rawSockBuf)
		tc.SetNoDelay(true)
	}
	if _, err := io.WriteString(c, rawMagic); err != nil {
		c.Close()
		return nil, err
	}
	conn := c
	if ct := r.host.cfg.ClientTLS; ct != nil {
		ct = ct.Clone()
		if ct.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			ct.ServerName = host
		}
		tc := tls.Client(c, ct)
		if err := tc.HandshakeContext(r.ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	if _, err := conn.Write(appendHello(r.host.cfg.Token, r.cfg.RingID, r.cfg.Generation, r.rank)); err != nil {
		c.Close()
		return nil, err
	}
	if err := readRawReply(conn); err != nil {
		c.Close()
		return nil, err
	}
	return conn, nil
}

// sendRaw is sendLoop for TransportRaw: it writes the queued segments as
// frames, as many as are queued in one vectored write.
func (r *Ring) sendRaw(addr string, fail func(error)) {
	var conn net.Conn
	var back chan struct{} // closed when the reply reader ends
	var backErr error      // the peer's reason, set before back closes
	defer func() {
		if conn != nil {
			conn.Close()
			<-back
		}
	}()
	var hdrs []byte
	var bufs net.Buffers
	var items []outSegment
	for {
		var ok bool
		items, ok = r.out.popAll(items[:0])
		if !ok {
			break
		}
		if conn == nil {
			var err error
			if conn, err = r.dialRaw(addr); err != nil {
				fail(err)
				return
			}
			back = make(chan struct{})
			go func(c net.Conn) {
				defer close(back)
				backErr = readRawReply(c)
			}(conn)
			stop := context.AfterFunc(r.ctx, func() { conn.Close() })
			defer stop()
		}
		hdrs, bufs = hdrs[:0], bufs[:0]
		for i := range items {
			hdrs = appendFrame(hdrs, items[i].seg)
		}
		off := 0
		for i := range items {
			s := items[i].seg
			n := rawHeaderLen + len(s.RingId) + len(s.AbortReason)
			bufs = append(bufs, hdrs[off:off+n:off+n])
			if len(s.Payload) > 0 {
				bufs = append(bufs, s.Payload)
			}
			off += n
			r.stats.sent(s)
		}
		_, err := bufs.WriteTo(conn)
		if err == nil {
			r.out.markWritten(len(items))
		}
		for i := range items {
			if items[i].pooled != nil {
				sharedPool.Put(items[i].pooled)
			}
			items[i] = outSegment{}
		}
		if err != nil {
			t := time.NewTimer(time.Second)
			select {
			case <-back:
				if backErr != nil && !errors.Is(backErr, io.EOF) && !errors.Is(backErr, net.ErrClosed) {
					err = backErr
				}
			case <-t.C:
			}
			t.Stop()
			fail(err)
			return
		}
	}
	if conn != nil {
		// Done: half-close, and let the receiver read everything first.
		type closeWriter interface{ CloseWrite() error }
		if cw, ok := conn.(closeWriter); ok && cw.CloseWrite() == nil {
			select {
			case <-back:
			case <-r.ctx.Done():
			}
		}
	}
}

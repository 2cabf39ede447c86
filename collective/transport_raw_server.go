package collective

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

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
		// Idle between frames is fine (the predecessor computes); once a
		// frame begins, all of it must come within rawFrameTime.
		if _, err := br.Peek(1); err == nil {
			conn.SetReadDeadline(time.Now().Add(rawFrameTime))
		}
		err := readFrame(br, &hdr, r.cfg.MaxMessageBytes, r.cfg.RingID, in)
		conn.SetReadDeadline(time.Time{})
		if errors.Is(err, io.EOF) {
			// The sender closed its stream. After the ring's last call that
			// is the end; before it, no segment of this ring can come any
			// more (a leaver stopped mid-call, a killed process), so the
			// call waiting for one fails now instead of at its timeout. The
			// segments sent before the close are delivered first.
			if legit {
				r.deliver(inItem{err: fmt.Errorf("%w: the predecessor closed its stream", ErrPeer)})
			}
			return
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

package collective

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

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

package coordinator

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Raft's own transport trusts whoever connects: without mutual TLS, one
// RequestVote from any process that can reach the raft port makes the
// leader step down. raftStream makes the job token protect raft as it
// protects gRPC: every connection opens with a challenge-response that
// proves, both ways, knowledge of the token without sending it.
//
//	server → client  magic "CRMRAFT1" | 32-byte nonce Ns
//	client → server  32-byte nonce Nc | HMAC-SHA256(token, "client" | Ns | Nc)
//	server → client  HMAC-SHA256(token, "server" | Nc | Ns)
//
// A connection that fails it is closed before raft reads a byte of it.
// The server side runs the handshake on the connection's first read (in
// raft's per-connection goroutine), so a silent client cannot stall the
// accept loop.

const (
	raftAuthMagic   = "CRMRAFT1"
	raftNonceLen    = 32
	raftAuthTimeout = 5 * time.Second
)

// ErrRaftAuth is the error of a raft connection whose peer did not prove
// the job token.
var ErrRaftAuth = errors.New("raft connection: the peer did not prove the job token")

// raftStream is a raft.StreamLayer over a listener (plain TCP or TLS) that
// authenticates every connection with the job token (none: no check).
type raftStream struct {
	net.Listener
	token     []byte
	client    *tls.Config // nil: plain TCP
	advertise net.Addr    // nil: the listener's address
}

// Addr is the address peers reach this node at.
func (s *raftStream) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.Listener.Addr()
}

// Accept returns the next connection, to be authenticated on first use.
func (s *raftStream) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil || len(s.token) == 0 {
		return c, err
	}
	return &authConn{Conn: c, token: s.token}, nil
}

// Dial connects to a peer and proves the token (and checks the peer's
// proof) before raft uses the connection.
func (s *raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	if s.client != nil {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.client}
		c, err = d.Dial("tcp", string(addr))
	} else {
		c, err = net.DialTimeout("tcp", string(addr), timeout)
	}
	if err != nil || len(s.token) == 0 {
		return c, err
	}
	if err := clientHandshake(c, s.token); err != nil {
		c.Close()
		return nil, fmt.Errorf("raft %s: %w", addr, err)
	}
	return c, nil
}

func raftMAC(token []byte, role string, a, b []byte) []byte {
	m := hmac.New(sha256.New, token)
	m.Write([]byte(role))
	m.Write(a)
	m.Write(b)
	return m.Sum(nil)
}

func clientHandshake(c net.Conn, token []byte) error {
	_ = c.SetDeadline(time.Now().Add(raftAuthTimeout))
	defer c.SetDeadline(time.Time{})
	hello := make([]byte, len(raftAuthMagic)+raftNonceLen)
	if _, err := io.ReadFull(c, hello); err != nil {
		return fmt.Errorf("%w: no challenge (%v): is the peer a causalrm coordinator with a job token?", ErrRaftAuth, err)
	}
	if string(hello[:len(raftAuthMagic)]) != raftAuthMagic {
		return fmt.Errorf("%w: not a causalrm raft challenge", ErrRaftAuth)
	}
	ns := hello[len(raftAuthMagic):]
	nc := make([]byte, raftNonceLen)
	if _, err := rand.Read(nc); err != nil {
		return err
	}
	if _, err := c.Write(append(nc, raftMAC(token, "client", ns, nc)...)); err != nil {
		return err
	}
	proof := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, proof); err != nil {
		return fmt.Errorf("%w: the peer refused this node's proof (another job token?)", ErrRaftAuth)
	}
	if !hmac.Equal(proof, raftMAC(token, "server", nc, ns)) {
		return fmt.Errorf("%w: the peer's proof is wrong (another job token?)", ErrRaftAuth)
	}
	return nil
}

func serverHandshake(c net.Conn, token []byte) error {
	_ = c.SetDeadline(time.Now().Add(raftAuthTimeout))
	defer c.SetDeadline(time.Time{})
	ns := make([]byte, raftNonceLen)
	if _, err := rand.Read(ns); err != nil {
		return err
	}
	if _, err := c.Write(append([]byte(raftAuthMagic), ns...)); err != nil {
		return err
	}
	resp := make([]byte, raftNonceLen+sha256.Size)
	if _, err := io.ReadFull(c, resp); err != nil {
		return fmt.Errorf("%w from %s: %v", ErrRaftAuth, c.RemoteAddr(), err)
	}
	nc, mac := resp[:raftNonceLen], resp[raftNonceLen:]
	if !hmac.Equal(mac, raftMAC(token, "client", ns, nc)) {
		return fmt.Errorf("%w from %s", ErrRaftAuth, c.RemoteAddr())
	}
	_, err := c.Write(raftMAC(token, "server", nc, ns))
	return err
}

// authConn is an accepted connection that raft may use only once the
// peer has proved the token: the handshake runs on the first Read or
// Write, and a failure closes the connection.
type authConn struct {
	net.Conn
	token []byte
	once  sync.Once
	err   error
}

func (a *authConn) handshake() error {
	a.once.Do(func() {
		if a.err = serverHandshake(a.Conn, a.token); a.err != nil {
			a.Conn.Close()
		}
	})
	return a.err
}

func (a *authConn) Read(p []byte) (int, error) {
	if err := a.handshake(); err != nil {
		return 0, err
	}
	return a.Conn.Read(p)
}

func (a *authConn) Write(p []byte) (int, error) {
	if err := a.handshake(); err != nil {
		return 0, err
	}
	return a.Conn.Write(p)
}

package collective

import (
	"crypto/tls"
	"errors"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/causalrm/causalrm/internal/gradgen"
	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// rawConnect opens a raw segment connection to addr as a peer would: the
// magic, TLS if tlsCfg is set, the hello, and the host's reply.
func rawConnect(addr, token, id string, gen uint64, rank int, tlsCfg *tls.Config) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, rawMagic); err != nil {
		c.Close()
		return nil, err
	}
	conn := c
	if tlsCfg != nil {
		cfg := tlsCfg.Clone()
		cfg.ServerName = "127.0.0.1"
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, err
		}
		conn = tc
	}
	if _, err := conn.Write(appendHello(token, id, gen, rank)); err != nil {
		c.Close()
		return nil, err
	}
	if err := readRawReply(conn); err != nil {
		c.Close()
		return nil, err
	}
	c.SetDeadline(time.Time{})
	return conn, nil
}

// writeFrames writes segs as raw frames.
func writeFrames(w io.Writer, segs ...*pb.Segment) error {
	for _, s := range segs {
		if _, err := w.Write(append(appendFrame(nil, s), s.Payload...)); err != nil {
			return err
		}
	}
	return nil
}

// TestRawPlaneHostile: what a stranger can do to a host's raw data plane
// (a token and three rings of generation 3 on it): a connection with a
// wrong magic goes to gRPC and fails there; a wrong or missing token, a
// stale or unknown generation are refused at the hello; a frame of another
// generation in a connection (fence), a bad CRC or an oversized length
// prefix break the ring with the right error; nothing of any of them is
// received as a segment, and until the last the rings sum correctly.
func TestRawPlaneHostile(t *testing.T) {
	noLeaks(t)
	cfg := hostConfig()
	cfg.Token = "s3cret-token"
	cfg.WaitForRing = 200 * time.Millisecond
	hosts := startHosts(t, 3, cfg)
	rings := hostRings(t, hosts, 3)
	checkSums(t, rings, 300, 1)
	before := recvd(rings...)
	addr := hosts[1].Addr()

	// Wrong magic: handed to gRPC, which drops it.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "CRMRING9"+string(appendHello(cfg.Token, "test", 3, 0)))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); !isConnEnd(err) {
		t.Errorf("wrong magic: the connection was not closed: %v", err)
	}
	c.Close()

	for _, tc := range []struct {
		name, token string
		gen         uint64
		want        error
		wantText    string
	}{
		{"missing token", "", 3, ErrPeer, "Unauthenticated"},
		{"wrong token", "s3cret-tokem", 3, ErrPeer, "Unauthenticated"},
		{"longer token", "s3cret-token2", 3, ErrPeer, "Unauthenticated"},
		{"stale generation", cfg.Token, 2, ErrStaleGeneration, ""},
		{"generation never made", cfg.Token, 4, ErrStaleGeneration, ""},
	} {
		conn, err := rawConnect(addr, tc.token, "test", tc.gen, 0, nil)
		if err == nil {
			conn.Close()
		}
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantText) {
			t.Errorf("%s: %v, want %v %s", tc.name, err, tc.want, tc.wantText)
		}
	}
	if n := recvd(rings...) - before; n != 0 {
		t.Fatalf("rings received %d segments from refused connections", n)
	}
	checkSums(t, rings, 300, 2) // neither broken nor polluted

	// Accepted connections (the right token, generation 3) sending bad
	// frames: each breaks the ring it reaches, with the right error.
	for _, tc := range []struct {
		name  string
		frame func() []byte
		want  error
	}{
		{"other generation in the connection", func() []byte {
			s := fakeSegment(2, 0)
			return append(appendFrame(nil, s), s.Payload...)
		}, ErrStaleGeneration},
		{"bad crc", func() []byte {
			s := fakeSegment(3, 0)
			s.OpSeq = 2
			s.Crc32C ^= 1
			return append(appendFrame(nil, s), s.Payload...)
		}, ErrChecksum},
		{"oversized length prefix", func() []byte {
			s := fakeSegment(3, 0)
			b := appendFrame(nil, s)
			b[0], b[1], b[2], b[3] = 0xff, 0xff, 0xff, 0x7f
			return b
		}, ErrOversized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hosts := startHosts(t, 2, cfg)
			rings := hostRings(t, hosts, 3)
			checkSums(t, rings, 100, 1)
			conn, err := rawConnect(hosts[1].Addr(), cfg.Token, "test", 3, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if tc.want == ErrStaleGeneration {
				// The connection is fenced to its hello's generation: the
				// frame ends it, and the host says why; the ring, which
				// had not had a segment from it, is not broken.
				conn.Write(tc.frame())
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if rerr := readRawReply(conn); !errors.Is(rerr, ErrStaleGeneration) {
					t.Errorf("reply: %v, want ErrStaleGeneration", rerr)
				}
				checkSums(t, rings, 100, 2)
				return
			}
			// The victim (rank 1) waits in op 2; the frame reaches it
			// before its predecessor's.
			done := make(chan error, 1)
			go func() { done <- rings[1].SumInt64(ctxT(t), make([]int64, 8)) }()
			conn.Write(tc.frame())
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("victim's call did not return")
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("victim: %v, want %v", err, tc.want)
			}
			t.Logf("victim: %v", err)
		})
	}
}

func isConnEnd(err error) bool {
	return err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset")
}

// TestRawPlaneMTLS: with mutual TLS on the host, the raw plane is TLS too:
// a raw connection in plaintext after the magic, or without a client
// certificate, is refused before its hello; with the certificate it is
// accepted. (TestHostMTLS runs rings over it.)
func TestRawPlaneMTLS(t *testing.T) {
	noLeaks(t)
	serverTLS, clientTLS, noCert, stranger := testPKI(t)
	cfg := hostConfig()
	cfg.ServerTLS, cfg.ClientTLS = serverTLS, clientTLS
	hosts := startHosts(t, 2, cfg)
	rings := hostRings(t, hosts, 1)
	checkSums(t, rings, 500, 1)
	before := recvd(rings...)
	for _, tc := range []struct {
		name string
		tls  *tls.Config
	}{{"plaintext", nil}, {"no client certificate", noCert}, {"another CA's certificate", stranger}} {
		conn, err := rawConnect(hosts[1].Addr(), "", "test", 1, 0, tc.tls)
		if err == nil {
			conn.Close()
			t.Errorf("%s: raw connection accepted", tc.name)
		}
		t.Logf("%s: %v", tc.name, err)
	}
	conn, err := rawConnect(hosts[1].Addr(), "", "test", 1, 0, clientTLS)
	if err != nil {
		t.Fatalf("with the certificate: %v", err)
	}
	conn.Close()
	if n := recvd(rings...) - before; n != 0 {
		t.Fatalf("rings received %d segments from refused connections", n)
	}
	checkSums(t, rings, 500, 2)
}

// TestTransportsAgree: the raw and the gRPC data paths give bit-identical
// results, for every reduction and codec, on 2 and 3 ranks.
func TestTransportsAgree(t *testing.T) {
	for _, n := range []int{2, 3} {
		for _, codec := range []Codec{CodecNone, CodecS2, CodecZstd} {
			out := map[Transport][][]uint64{}
			for _, tr := range []Transport{TransportRaw, TransportGRPC} {
				rings := newRings(t, n, func(c *Config) { c.Codec, c.Transport, c.ChunkBytes = codec, tr, 4096 })
				got := make([][]uint64, n)
				errs := onAll(rings, func(r int, ring *Ring) error {
					rng := mrand.New(mrand.NewPCG(uint64(r), 5))
					vi := gradgen.FixedPoint(5000, uint64(r+1))
					vf := make([]float32, 3001)
					vm := make([]float64, 777)
					for i := range vf {
						vf[i] = float32(rng.NormFloat64())
					}
					for i := range vm {
						vm[i] = rng.NormFloat64()
					}
					for range 2 {
						if err := ring.SumInt64(ctxT(t), vi); err != nil {
							return err
						}
						if err := ring.SumFloat32(ctxT(t), vf); err != nil {
							return err
						}
						if err := ring.MaxFloat64(ctxT(t), vm); err != nil {
							return err
						}
					}
					for _, x := range vi {
						got[r] = append(got[r], uint64(x))
					}
					for _, x := range vf {
						got[r] = append(got[r], uint64(math.Float32bits(x)))
					}
					for _, x := range vm {
						got[r] = append(got[r], math.Float64bits(x))
					}
					return nil
				})
				for r, err := range errs {
					if err != nil {
						t.Fatalf("n=%d %s %s rank %d: %v", n, codec, tr, r, err)
					}
					if !slices.Equal(got[r], got[0]) {
						t.Fatalf("n=%d %s %s: rank %d differs from rank 0", n, codec, tr, r)
					}
				}
				out[tr] = got
				closeAll(rings)
			}
			if !slices.Equal(out[TransportRaw][0], out[TransportGRPC][0]) {
				t.Fatalf("n=%d %s: raw and grpc results differ", n, codec)
			}
		}
	}
}

// TestTakeWhole: a raw frame's payload buffer is handed on (to go back to
// the pool once sent); a payload that is part of a bigger buffer (a gRPC
// message's) is not.
func TestTakeWhole(t *testing.T) {
	buf := sharedPool.Get(4096)
	in := &inSegment{buf: buf}
	in.seg.Payload = *buf
	if got := in.takeWhole(); got != buf || in.buf != nil {
		t.Fatalf("whole payload: got %p (segment keeps %p), want %p", got, in.buf, buf)
	}
	in = &inSegment{buf: buf}
	in.seg.Payload = (*buf)[40:]
	if got := in.takeWhole(); got != nil || in.buf != nil {
		t.Fatalf("part of a buffer: got %p (segment keeps %p), want nil", got, in.buf)
	}
	sharedPool.Put(buf)
}

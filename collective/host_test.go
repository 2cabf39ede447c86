package collective

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// noLeaks checks, after the test's other cleanups (which close its hosts),
// that the test left no goroutine behind.
func noLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func hostConfig() HostConfig {
	c := DefaultHostConfig()
	c.WaitForRing = 5 * time.Second
	c.Logger = slog.New(slog.DiscardHandler)
	return c
}

// newHost starts a host on a fresh loopback listener; closed at cleanup.
func startHost(t *testing.T, cfg HostConfig) *Host {
	t.Helper()
	lis, _ := loopback(t, 1)
	h, err := NewHost(cfg, lis[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func startHosts(t *testing.T, n int, cfg HostConfig) []*Host {
	hosts := make([]*Host, n)
	for i := range hosts {
		hosts[i] = startHost(t, cfg)
	}
	return hosts
}

func hostAddrs(hosts []*Host) []string {
	addrs := make([]string, len(hosts))
	for i, h := range hosts {
		addrs[i] = h.Addr()
	}
	return addrs
}

// ringCfg is rank's config of generation gen of a ring over hosts.
func ringCfg(hosts []*Host, rank int, gen uint64) Config {
	cfg := testConfig(hostAddrs(hosts), rank)
	cfg.Generation = gen
	return cfg
}

// hostRings makes generation gen of a ring over hosts (rank i on hosts[i]).
func hostRings(t *testing.T, hosts []*Host, gen uint64) []*Ring {
	t.Helper()
	rings := make([]*Ring, len(hosts))
	for i, h := range hosts {
		r, err := h.Ring(ringCfg(hosts, i, gen))
		if err != nil {
			t.Fatalf("generation %d rank %d: %v", gen, i, err)
		}
		rings[i] = r
	}
	t.Cleanup(func() { closeAll(rings) })
	return rings
}

// checkSums runs a SumInt64 of l elements on every rank and checks each
// rank got the sequential sum.
func checkSums(t *testing.T, rings []*Ring, l int, seed uint64) {
	t.Helper()
	rng := mrand.New(mrand.NewPCG(seed, 99))
	in := make([][]int64, len(rings))
	want := make([]int64, l)
	for r := range in {
		in[r] = make([]int64, l)
		for i := range in[r] {
			in[r][i] = rng.Int64() >> 8
			want[i] += in[r][i]
		}
	}
	errs := onAll(rings, func(r int, ring *Ring) error { return ring.SumInt64(ctxT(t), in[r]) })
	for r := range rings {
		if errs[r] != nil {
			t.Fatalf("generation %d rank %d: %v", rings[r].Generation(), r, errs[r])
		}
		if !slices.Equal(in[r], want) {
			t.Fatalf("generation %d rank %d: wrong sum\n got %v\nwant %v", rings[r].Generation(), r, head(in[r]), head(want))
		}
	}
}

// dialRaw is a plain gRPC client of addr (opts: its credentials; plaintext
// if none).
func dialRaw(t *testing.T, addr string, opts ...grpc.DialOption) pb.CollectiveClient {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return pb.NewCollectiveClient(c)
}

// sendSegments sends segs on one stream and returns the stream's status.
func sendSegments(ctx context.Context, c pb.CollectiveClient, segs ...*pb.Segment) error {
	stream, err := c.Segments(ctx)
	if err != nil {
		return err
	}
	for _, s := range segs {
		if err := stream.Send(s); err != nil {
			break // the status comes from CloseAndRecv
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

// fakeSegment is a well-formed first reduce-scatter chunk of op 1 from
// sender, of ring "test" generation gen.
func fakeSegment(gen uint64, sender uint32) *pb.Segment {
	p := make([]byte, 32)
	p[0] = 1
	return &pb.Segment{
		RingId: "test", Generation: gen, OpSeq: 1, Phase: pb.Phase_PHASE_REDUCE_SCATTER, SenderRank: sender,
		Codec: pb.Codec_CODEC_NONE, ElemType: pb.ElemType_ELEM_INT64, Op: pb.ReduceOp_REDUCE_SUM,
		VectorLen: 8, ElemCount: 4, Payload: p, Crc32C: crc32c(p),
	}
}

func wantStale(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.FailedPrecondition || !errors.Is(fromStatus(err), ErrStaleGeneration) {
		t.Errorf("%s: got %v, want ErrStaleGeneration (FailedPrecondition)", what, err)
	}
}

func recvd(rings ...*Ring) int64 {
	var n int64
	for _, r := range rings {
		n += r.Stats().SegmentsRecv
	}
	return n
}

// TestHostGenerations: three hosts keep their addresses through ring
// generation 2 (all three), 3 (two, the third host closed) and 4 (the two
// and a new host); late segments of a closed generation are rejected.
func TestHostGenerations(t *testing.T) {
	noLeaks(t)
	hosts := startHosts(t, 3, hostConfig())
	addrs := hostAddrs(hosts)

	// Generation 2: keep a copy of a segment rank 0 sends to rank 1.
	g2 := hostRings(t, hosts, 2)
	var late *pb.Segment
	var once sync.Once
	g2[0].testHookOutgoing = func(s *pb.Segment) {
		once.Do(func() { late = proto.Clone(s).(*pb.Segment) })
	}
	for i, r := range g2 {
		if r.Addr() != addrs[i] || r.Host() != hosts[i] {
			t.Fatalf("rank %d serves on %s, host on %s", i, r.Addr(), addrs[i])
		}
	}
	checkSums(t, g2, 1001, 1)
	checkSums(t, g2, 17, 2)
	closeAll(g2)
	if late == nil || late.Generation != 2 {
		t.Fatalf("no generation-2 segment captured: %v", late)
	}

	// Generation 3 over hosts 0 and 1; host 2 is gone.
	hosts[2].Close()
	g3 := hostRings(t, hosts[:2], 3)
	checkSums(t, g3, 257, 3)
	before := recvd(g3...)
	// Rank 0's generation-2 segment arrives late at host 1: rejected.
	wantStale(t, "late generation-2 segment", sendSegments(ctxT(t), dialRaw(t, addrs[1]), late))
	// And a generation-2 barrier at host 0 (rank 0 of both generations).
	_, err := dialRaw(t, addrs[0]).Barrier(ctxT(t), &pb.BarrierRequest{RingId: "test", Generation: 2, Rank: 1, Seq: 1})
	wantStale(t, "late generation-2 barrier", err)
	if got := recvd(g3...); got != before {
		t.Fatalf("generation-3 rings received %d segments from a generation-2 stream", got-before)
	}
	checkSums(t, g3, 100, 4) // not broken, not polluted
	closeAll(g3)

	// Generation 4: hosts 0, 1 and a new host 3.
	h3 := startHost(t, hostConfig())
	g4hosts := []*Host{hosts[0], hosts[1], h3}
	g4 := hostRings(t, g4hosts, 4)
	if g4[0].Addr() != addrs[0] || g4[1].Addr() != addrs[1] {
		t.Fatalf("addresses changed: %s %s, were %s %s", g4[0].Addr(), g4[1].Addr(), addrs[0], addrs[1])
	}
	checkSums(t, g4, 1001, 5)
	errs := onAll(g4, func(_ int, r *Ring) error { return r.Barrier(ctxT(t)) })
	for r, err := range errs {
		if err != nil {
			t.Fatalf("generation 4 barrier rank %d: %v", r, err)
		}
	}
	before = recvd(g4...)
	late3 := fakeSegment(3, 0)
	wantStale(t, "late generation-3 segment", sendSegments(ctxT(t), dialRaw(t, addrs[1]), late3))
	wantStale(t, "late generation-2 segment at generation 4", sendSegments(ctxT(t), dialRaw(t, addrs[1]), late))
	if got := recvd(g4...); got != before {
		t.Fatalf("generation-4 rings received %d stale segments", got-before)
	}
	checkSums(t, g4, 63, 6)
	closeAll(g4)
	for _, h := range hosts {
		h.Close()
	}
	h3.Close()
}

// TestHostEarlyRing: one peer makes its generation-N ring and starts the
// call 300 ms before the others make theirs; its segments (and barrier)
// wait on the peers' hosts until the rings exist.
func TestHostEarlyRing(t *testing.T) {
	noLeaks(t)
	hosts := startHosts(t, 3, hostConfig())
	const delay = 300 * time.Millisecond
	gen := uint64(10)
	for _, early := range []int{0, 1, 2} {
		for _, barrier := range []bool{false, true} {
			gen++
			rings := make([]*Ring, 3)
			var err error
			if rings[early], err = hosts[early].Ring(ringCfg(hosts, early, gen)); err != nil {
				t.Fatal(err)
			}
			v := make([][]int64, 3)
			for r := range v {
				v[r] = []int64{int64(r + 1), 10, 100, -5, 7, 8, 9, 11, 12}
			}
			start := time.Now()
			op := func(r int) error {
				if barrier {
					return rings[r].Barrier(ctxT(t))
				}
				return rings[r].SumInt64(ctxT(t), v[r])
			}
			earlyDone := make(chan error, 1)
			go func() { earlyDone <- op(early) }()
			time.Sleep(delay)
			for r := range rings {
				if r != early {
					if rings[r], err = hosts[r].Ring(ringCfg(hosts, r, gen)); err != nil {
						t.Fatal(err)
					}
				}
			}
			errs := onAll(rings, func(r int, _ *Ring) error {
				if r == early {
					return <-earlyDone
				}
				return op(r)
			})
			took := time.Since(start)
			for r, err := range errs {
				if err != nil {
					t.Fatalf("early rank %d barrier=%v: rank %d: %v", early, barrier, r, err)
				}
				if !barrier && !slices.Equal(v[r], []int64{6, 30, 300, -15, 21, 24, 27, 33, 36}) {
					t.Fatalf("early rank %d: rank %d sum %v", early, r, v[r])
				}
			}
			if took < delay {
				t.Fatalf("early rank %d finished in %v, before the others had rings", early, took)
			}
			closeAll(rings)
		}
	}
}

// TestHostStaleGenerations: segments and barriers of a generation older
// than or equal to a closed ring, or that no ring takes within WaitForRing,
// are rejected with ErrStaleGeneration and reach no ring.
func TestHostStaleGenerations(t *testing.T) {
	noLeaks(t)
	cfg := hostConfig()
	cfg.WaitForRing = 300 * time.Millisecond
	hosts := startHosts(t, 2, cfg)
	g5 := hostRings(t, hosts, 5)
	checkSums(t, g5, 100, 1)
	closeAll(g5)
	g6 := hostRings(t, hosts, 6)
	c := dialRaw(t, hosts[1].Addr())
	wantStale(t, "generation 4 (older than a closed ring)", sendSegments(ctxT(t), c, fakeSegment(4, 0)))
	wantStale(t, "generation 5 (the closed ring's)", sendSegments(ctxT(t), c, fakeSegment(5, 0)))
	// Another ring id the host never had: stale once WaitForRing passes.
	wantStale(t, "generation 1 of another ring id", sendSegments(ctxT(t), c, &pb.Segment{RingId: "other", Generation: 1}))
	start := time.Now()
	wantStale(t, "generation 9 (never made)", sendSegments(ctxT(t), c, fakeSegment(9, 0)))
	if d := time.Since(start); d < cfg.WaitForRing {
		t.Errorf("generation 9 rejected after %v, before WaitForRing %v", d, cfg.WaitForRing)
	}
	_, err := dialRaw(t, hosts[0].Addr()).Barrier(ctxT(t), &pb.BarrierRequest{RingId: "test", Generation: 5, Rank: 1, Seq: 1})
	wantStale(t, "generation-5 barrier", err)
	if n := recvd(g6...); n != 0 {
		t.Fatalf("generation-6 rings received %d segments", n)
	}
	checkSums(t, g6, 100, 2)
	// A stream belongs to the ring of its first segment: a segment of
	// another generation later in it ends the stream undelivered.
	before := recvd(g6...)
	wantStale(t, "generation 5 inside a generation-6 stream",
		sendSegments(ctxT(t), c, fakeSegment(6, 1), fakeSegment(5, 0), fakeSegment(6, 0)))
	if n := recvd(g6...) - before; n != 1 {
		t.Fatalf("generation-6 ring received %d segments of the mixed stream, want only the first", n)
	}
	// A host makes no ring of a generation it has had.
	if _, err := hosts[0].Ring(ringCfg(hosts, 0, 5)); !errors.Is(err, ErrStaleGeneration) {
		t.Errorf("Ring of closed generation 5: %v, want ErrStaleGeneration", err)
	}
	if _, err := hosts[0].Ring(ringCfg(hosts, 0, 6)); !errors.Is(err, ErrStaleGeneration) {
		t.Errorf("second Ring of live generation 6: %v, want ErrStaleGeneration", err)
	}
}

// TestHostToken: a wrong or missing bearer token is refused with
// Unauthenticated before any ring sees the call; the right one works.
func TestHostToken(t *testing.T) {
	noLeaks(t)
	cfg := hostConfig()
	cfg.Token = "s3cret-token"
	hosts := startHosts(t, 2, cfg)
	rings := hostRings(t, hosts, 3)
	checkSums(t, rings, 257, 1)
	hosts[0].PublishState(9, []byte("state"))
	before := recvd(rings...)
	c := dialRaw(t, hosts[1].Addr())
	for _, tc := range []struct{ name, auth string }{
		{"missing", ""}, {"wrong", "Bearer s3cret-tokem"}, {"no scheme", "s3cret-token"},
		{"prefix", "Bearer s3cret"}, {"longer", "Bearer s3cret-token2"},
	} {
		ctx := ctxT(t)
		if tc.auth != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.auth)
		}
		if err := sendSegments(ctx, c, fakeSegment(3, 0)); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s token: Segments: %v, want Unauthenticated", tc.name, err)
		}
		_, err := dialRaw(t, hosts[0].Addr()).Barrier(ctx, &pb.BarrierRequest{RingId: "test", Generation: 3, Rank: 1, Seq: 2})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s token: Barrier: %v, want Unauthenticated", tc.name, err)
		}
		st, err := dialRaw(t, hosts[0].Addr()).StateTransfer(ctx, &pb.StateRequest{RingId: "test"})
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s token: StateTransfer: %v, want Unauthenticated", tc.name, err)
		}
	}
	if _, err := FetchState(ctxT(t), hosts[0].Addr(), StateRequest{RingID: "test", Token: "nope"}); err == nil {
		t.Error("FetchState with a wrong token succeeded")
	}
	if n := recvd(rings...) - before; n != 0 {
		t.Fatalf("rings received %d unauthenticated segments", n)
	}
	checkSums(t, rings, 100, 2) // neither broken nor polluted
	st, err := hosts[1].FetchState(ctxT(t), hosts[0].Addr(), StateRequest{RingID: "test"})
	if err != nil || st.Step != 9 || string(st.Data) != "state" {
		t.Fatalf("FetchState with the token: %+v, %v", st, err)
	}
	// The right token on a raw call reaches the routing (a stale generation).
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer s3cret-token")
	wantStale(t, "authenticated stale segment", sendSegments(ctx, c, fakeSegment(2, 0)))
}

// testPKI makes a CA and a leaf certificate for 127.0.0.1 (server and
// client use), and a second, unrelated CA's leaf.
func testPKI(t *testing.T) (serverTLS, clientTLS, noCert, stranger *tls.Config) {
	t.Helper()
	ca := func(name string) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return cert, key
	}
	leaf := func(caCert *x509.Certificate, caKey *ecdsa.PrivateKey) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "worker"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	caCert, caKey := ca("test ca")
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	cert := leaf(caCert, caKey)
	otherCA, otherKey := ca("other ca")
	serverTLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	clientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS13}
	noCert = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	strange := leaf(otherCA, otherKey)
	stranger = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13,
		// Present it even though the server asks for the test CA's.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &strange, nil }}
	return
}

// TestHostMTLS: rings and state transfer between hosts with mutual TLS;
// a client without a certificate (or with one of another CA, or in
// plaintext) is refused.
func TestHostMTLS(t *testing.T) {
	noLeaks(t)
	serverTLS, clientTLS, noCert, stranger := testPKI(t)
	cfg := hostConfig()
	cfg.ServerTLS, cfg.ClientTLS = serverTLS, clientTLS
	hosts := startHosts(t, 3, cfg)
	rings := hostRings(t, hosts, 1)
	checkSums(t, rings, 1001, 1)
	errs := onAll(rings, func(_ int, r *Ring) error { return r.Barrier(ctxT(t)) })
	for r, err := range errs {
		if err != nil {
			t.Fatalf("barrier rank %d: %v", r, err)
		}
	}
	snap := snapshotBytes(100_000)
	hosts[2].PublishState(4, snap)
	st, err := hosts[0].FetchState(ctxT(t), hosts[2].Addr(), StateRequest{RingID: "test", Codec: CodecZstd, ChunkBytes: 7000})
	if err != nil || st.Step != 4 || !slices.Equal(st.Data, snap) {
		t.Fatalf("FetchState over mTLS: step %d, %d bytes, %v", st.Step, len(st.Data), err)
	}
	before := recvd(rings...)
	for _, tc := range []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"no client certificate", credentials.NewTLS(noCert)},
		{"another CA's certificate", credentials.NewTLS(stranger)},
		{"plaintext", insecure.NewCredentials()},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c := dialRaw(t, hosts[1].Addr(), grpc.WithTransportCredentials(tc.creds))
		err := sendSegments(ctx, c, fakeSegment(1, 0))
		if err == nil || status.Code(err) == codes.FailedPrecondition {
			t.Errorf("%s: Segments: %v, want refused at the connection", tc.name, err)
		}
		_, berr := dialRaw(t, hosts[0].Addr(), grpc.WithTransportCredentials(tc.creds)).Barrier(ctx,
			&pb.BarrierRequest{RingId: "test", Generation: 1, Rank: 1, Seq: 2})
		if berr == nil {
			t.Errorf("%s: Barrier accepted", tc.name)
		}
		cancel()
		t.Logf("%s: %v / %v", tc.name, err, berr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := FetchState(ctx, hosts[2].Addr(), StateRequest{RingID: "test", TLS: noCert}); err == nil {
		t.Error("FetchState without a client certificate succeeded")
	}
	if n := recvd(rings...) - before; n != 0 {
		t.Fatalf("rings received %d segments from refused clients", n)
	}
	checkSums(t, rings, 100, 2)
}

// TestHostCloseStopsEverything: Host.Close ends a call in flight, a stream
// waiting for a ring not made yet and the state service, and leaves no
// goroutine; Ring.Close leaves the host serving.
func TestHostCloseStopsEverything(t *testing.T) {
	noLeaks(t)
	cfg := hostConfig()
	cfg.WaitForRing = time.Minute
	hosts := startHosts(t, 2, cfg)
	rings := hostRings(t, hosts, 1)
	checkSums(t, rings, 100, 1)
	// Ring.Close leaves the host serving the next generation.
	closeAll(rings)
	rings = hostRings(t, hosts, 2)
	checkSums(t, rings, 100, 2)
	hosts[0].PublishState(1, make([]byte, 5000))
	if _, err := hosts[1].FetchState(ctxT(t), hosts[0].Addr(), StateRequest{Codec: CodecZstd}); err != nil {
		t.Fatal(err)
	}
	// A stream for generation 3 waits on host 0; rank 0 waits in a call
	// rank 1 never makes.
	waiting := make(chan error, 1)
	go func() { waiting <- sendSegments(ctxT(t), dialRaw(t, hosts[0].Addr()), fakeSegment(3, 1)) }()
	call := make(chan error, 1)
	go func() { call <- rings[0].SumInt64(ctxT(t), make([]int64, 100)) }()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	hosts[0].Close()
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Host.Close took %v", d)
	}
	if err := <-call; !errors.Is(err, ErrClosed) {
		t.Errorf("call in flight at Host.Close: %v, want ErrClosed", err)
	}
	if err := <-waiting; status.Code(err) != codes.Unavailable {
		t.Errorf("stream waiting for a ring at Host.Close: %v, want Unavailable", err)
	}
	if _, err := hosts[0].Ring(ringCfg(hosts, 0, 9)); !errors.Is(err, ErrClosed) {
		t.Errorf("Ring after Host.Close: %v, want ErrClosed", err)
	}
	hosts[0].Close() // idempotent
	rings[1].Close()
	hosts[1].Close()
}

func TestHostConfigValidate(t *testing.T) {
	if err := DefaultHostConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []HostConfig{
		{MaxMessageBytes: 100}, {WaitForRing: -1}, {Token: "has space"}, {Token: "tab\t"},
	} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", c, err)
		}
	}
	lis, _ := loopback(t, 1)
	h, err := NewHost(HostConfig{Logger: slog.New(slog.DiscardHandler)}, lis[0])
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	cfg := testConfig([]string{h.Addr()}, 0)
	cfg.MaxMessageBytes = 16 << 20
	if _, err := h.Ring(cfg); !errors.Is(err, ErrConfig) {
		t.Errorf("ring MaxMessageBytes above the host's: %v, want ErrConfig", err)
	}
}

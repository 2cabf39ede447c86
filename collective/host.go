package collective

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

	"github.com/causalrm/causalrm/internal/bearer"
	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// HostConfig configures a Host: the one gRPC server of a worker process,
// which serves every ring generation the process takes part in and the
// state snapshot a joining peer fetches.
type HostConfig struct {
	// MaxMessageBytes bounds every gRPC message the host receives or sends
	// (0: 8 MiB). A ring made by the host may not use a larger one.
	MaxMessageBytes int
	// ServerTLS, if set, is the TLS config of the host's server (set
	// ClientAuth to tls.RequireAndVerifyClientCert for mTLS); ClientTLS, if
	// set, that of every call the host's rings make to their peers.
	ServerTLS, ClientTLS *tls.Config
	// Token, if set, must be carried by every incoming RPC as metadata
	// "authorization: Bearer <token>" (else codes.Unauthenticated), and by
	// the hello of every raw segment connection; every outgoing call and
	// connection sends it. Printable ASCII, no spaces. ServerTLS and
	// ClientTLS apply to the raw connections too.
	Token string
	// WaitForRing bounds how long an incoming stream or barrier for a
	// generation newer than every ring the host has had waits for the ring
	// to be made (0: 30s).
	WaitForRing time.Duration
	// Logger, if nil, is slog.Default().
	Logger *slog.Logger
}

// DefaultHostConfig returns the defaults: 8 MiB messages, no TLS, no
// token, a 30s wait for rings.
func DefaultHostConfig() HostConfig {
	return HostConfig{MaxMessageBytes: 8 << 20, WaitForRing: 30 * time.Second}
}

// Validate checks the config (zero MaxMessageBytes and WaitForRing, which
// NewHost replaces by the defaults, are valid).
func (c HostConfig) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: host: "+format, append([]any{ErrConfig}, a...)...)
	}
	if c.MaxMessageBytes != 0 && c.MaxMessageBytes < 4096 {
		return bad("MaxMessageBytes %d below 4096", c.MaxMessageBytes)
	}
	if c.WaitForRing < 0 {
		return bad("negative WaitForRing")
	}
	for i := 0; i < len(c.Token); i++ {
		if b := c.Token[i]; b <= ' ' || b > '~' {
			return bad("token byte %d is not printable ASCII", i)
		}
	}
	return nil
}

// hostStopTimeout bounds how long Host.Close lets handlers in flight end
// before it cuts them off.
const hostStopTimeout = 5 * time.Second

type ringKey struct {
	id  string
	gen uint64
}

// Host serves the Collective service on one listener for a sequence of
// rings (generations). Incoming streams and barriers are routed to the
// ring named by their (ring id, generation); one for a generation the host
// has not made yet waits (HostConfig.WaitForRing) for it to be made.
type Host struct {
	cfg       HostConfig
	log       *slog.Logger
	lis       net.Listener
	mux       *muxListener // what gRPC serves: lis less the raw connections
	srv       *grpc.Server
	serveDone chan struct{}
	closing   chan struct{}
	closeOnce sync.Once
	stopOnce  sync.Once

	mu      sync.Mutex
	closed  bool
	rings   map[ringKey]*Ring
	newest  map[string]uint64 // per ring id: the newest generation made
	changed chan struct{}     // closed (and replaced) whenever a ring is made
	solo    *Ring             // New's private host: its one ring takes everything

	rawWG    sync.WaitGroup // the accept loop and each raw or unsniffed connection
	rawMu    sync.Mutex
	rawConns map[net.Conn]struct{} // nil once stopped

	state  stateHolder
	zencMu sync.Mutex
	zenc   *zstd.Encoder // state transfer, made on first use
}

// NewHost starts serving the Collective service on lis. It takes lis over:
// Close closes it.
func NewHost(cfg HostConfig, lis net.Listener) (*Host, error) {
	if lis == nil {
		return nil, fmt.Errorf("%w: host: nil listener", ErrConfig)
	}
	if err := cfg.Validate(); err != nil {
		lis.Close()
		return nil, err
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = DefaultHostConfig().MaxMessageBytes
	}
	if cfg.WaitForRing == 0 {
		cfg.WaitForRing = DefaultHostConfig().WaitForRing
	}
	h := newHost(cfg, lis)
	h.start()
	return h, nil
}

// newHost makes the host's server; start serves it.
func newHost(cfg HostConfig, lis net.Listener) *Host {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	h := &Host{
		cfg:       cfg,
		log:       log.With("host", lis.Addr().String()),
		lis:       lis,
		serveDone: make(chan struct{}),
		closing:   make(chan struct{}),
		rings:     map[ringKey]*Ring{},
		newest:    map[string]uint64{},
		changed:   make(chan struct{}),
		mux:       &muxListener{Listener: lis, conns: make(chan net.Conn), done: make(chan struct{})},
		rawConns:  map[net.Conn]struct{}{},
	}
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(cfg.MaxMessageBytes),
		grpc.WaitForHandlers(true),
		grpc.InitialWindowSize(windowBytes),
		grpc.InitialConnWindowSize(2 * windowBytes),
		grpc.ReadBufferSize(256 << 10),
		grpc.WriteBufferSize(256 << 10),
		experimental.BufferPool(sharedPool),
		grpc.ForceServerCodecV2(wireCodec{}),
	}
	if cfg.ServerTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.ServerTLS)))
	}
	opts = append(opts, bearer.ServerOptions(cfg.Token)...)
	h.srv = grpc.NewServer(opts...)
	pb.RegisterCollectiveServer(h.srv, &service{h: h})
	return h
}

// start serves the host's listener: raw segment connections itself, the
// rest with the gRPC server.
func (h *Host) start() {
	h.rawWG.Add(1)
	go h.acceptLoop()
	go func() {
		defer close(h.serveDone)
		if err := h.srv.Serve(h.mux); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			h.log.Error("collective: serve", "err", err)
		}
	}()
}

// Addr is the address the host serves on.
func (h *Host) Addr() string { return h.lis.Addr().String() }

// Ring makes the ring of one generation, served by this host:
// cfg.Peers[cfg.Rank] must be an address that reaches this host. Its
// (RingID, Generation) must be newer than every ring the host has made for
// that RingID (else ErrStaleGeneration), and cfg.MaxMessageBytes at most
// the host's. Streams and barriers for it that arrived before it was made
// are served from now on. Ring.Close stops the ring only; the host serves
// on.
func (h *Host) Ring(cfg Config) (*Ring, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxMessageBytes > h.cfg.MaxMessageBytes {
		return nil, fmt.Errorf("%w: ring MaxMessageBytes %d above the host's %d", ErrConfig, cfg.MaxMessageBytes, h.cfg.MaxMessageBytes)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.solo != nil {
		return nil, fmt.Errorf("collective: host %s: %w", h.Addr(), ErrClosed)
	}
	if g, ok := h.newest[cfg.RingID]; ok && cfg.Generation <= g {
		return nil, fmt.Errorf("%w: ring %q generation %d: this host has made generation %d", ErrStaleGeneration, cfg.RingID, cfg.Generation, g)
	}
	r, err := newRing(cfg, h, false)
	if err != nil {
		return nil, err
	}
	h.rings[ringKey{cfg.RingID, cfg.Generation}] = r
	h.newest[cfg.RingID] = cfg.Generation
	close(h.changed)
	h.changed = make(chan struct{})
	return r, nil
}

// forget removes a closing ring from the routing table; no handler is
// routed to it afterwards.
func (h *Host) forget(r *Ring) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.detached = true
	k := ringKey{r.cfg.RingID, r.cfg.Generation}
	if h.rings[k] == r {
		delete(h.rings, k)
	}
}

// route finds the ring of (id, gen) for an incoming stream or barrier,
// waiting up to WaitForRing for a generation newer than every ring the
// host has had. The caller must call r.handlers.Done() when done with it.
func (h *Host) route(ctx context.Context, id string, gen uint64) (*Ring, error) {
	var timeout <-chan time.Time
	for {
		h.mu.Lock()
		if r := h.solo; r != nil {
			// New's ring: it validates (and fences) everything itself.
			defer h.mu.Unlock()
			if r.detached {
				return nil, ErrClosed
			}
			r.handlers.Add(1)
			return r, nil
		}
		if h.closed {
			h.mu.Unlock()
			return nil, ErrClosed
		}
		if r := h.rings[ringKey{id, gen}]; r != nil {
			r.handlers.Add(1)
			h.mu.Unlock()
			return r, nil
		}
		newest, had := h.newest[id]
		changed := h.changed
		h.mu.Unlock()
		if had && gen <= newest {
			return nil, fmt.Errorf("%w: ring %q generation %d: this host has had up to generation %d, and has no ring of generation %d",
				ErrStaleGeneration, id, gen, newest, gen)
		}
		if timeout == nil {
			t := time.NewTimer(h.cfg.WaitForRing)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-changed:
		case <-timeout:
			return nil, fmt.Errorf("%w: ring %q generation %d was not made on this host within %v", ErrStaleGeneration, id, gen, h.cfg.WaitForRing)
		case <-h.closing:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// routeStatus is route's error as a gRPC status.
func routeStatus(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return toStatus(err)
}

// Close closes every ring of the host (concurrently), then stops the
// server and closes the listener. It is safe to call more than once.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		rings := make([]*Ring, 0, len(h.rings))
		for _, r := range h.rings {
			rings = append(rings, r)
		}
		solo := h.solo
		h.mu.Unlock()
		close(h.closing)
		if solo != nil {
			solo.Close() // stops the host too
			return
		}
		var wg sync.WaitGroup
		for _, r := range rings {
			wg.Add(1)
			go func() { defer wg.Done(); r.Close() }()
		}
		wg.Wait()
		h.stop(hostStopTimeout)
	})
	return nil
}

// stop lets the handlers in flight end (at most timeout), then stops the
// server and the state encoder.
func (h *Host) stop(timeout time.Duration) {
	h.stopOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		stopped := make(chan struct{})
		go func() { h.srv.GracefulStop(); close(stopped) }()
		t := time.NewTimer(timeout)
		select {
		case <-stopped:
		case <-t.C:
			h.srv.Stop()
			<-stopped
		}
		t.Stop()
		<-h.serveDone
		h.closeRawConns()
		h.zencMu.Lock()
		if h.zenc != nil {
			h.zenc.Close()
		}
		h.zenc = nil
		h.zencMu.Unlock()
	})
}

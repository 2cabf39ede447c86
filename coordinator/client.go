package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/bearer"
	pb "github.com/causalrm/causalrm/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	Addrs           []string      // gRPC addresses of the coordinators
	Token           string        // job token ("" = none)
	TLS             *tls.Config   // nil = plaintext
	Timeout         time.Duration // per call, including leader search (default 10s)
	MaxMessageBytes int           // default 8 MiB
	// CheckpointDir, when set, stores checkpoint data as files there (a
	// shared directory) and only their records in the coordinator group.
	CheckpointDir string
	// HeartbeatInterval is the beat interval of Heartbeat (default 200ms).
	HeartbeatInterval time.Duration
	// Registry, when set (etcd://...), is read for the leader's address
	// (its leader key) whenever every known address fails, so Addrs may be
	// empty; the client's Registry() also holds a worker's lease.
	Registry string
	// Resolve, when set (it overrides Registry's), returns the
	// coordinators' addresses when every known address fails.
	Resolve func(context.Context) ([]string, error)
}

// errNoCoordinator: no coordinator address is known (yet).
var errNoCoordinator = errors.New("no coordinator address known (none given, none published in the registry)")

// ErrNoJob and ErrNoCheckpoint are the "nothing there" answers of Job and
// LatestCheckpoint (the state package's sentinels).
var (
	ErrNoJob        = state.ErrNoJob
	ErrNoCheckpoint = state.ErrNoCheckpoint
)

// Client talks to the coordinator group, following the leader.
type Client struct {
	cfg ClientConfig

	reg *Registry // opened from cfg.Registry (closed with the client)

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	addrs  []string
	cur    int
	closed bool
}

// Dial connects to the group and waits (until ctx or cfg.Timeout) for a
// leader to answer.
func Dial(ctx context.Context, cfg ClientConfig) (*Client, error) {
	if len(cfg.Addrs) == 0 && cfg.Registry == "" && cfg.Resolve == nil {
		return nil, fmt.Errorf("%w: coordinator client: no addresses and no registry", state.ErrInvalidArgument)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 8 << 20
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 200 * time.Millisecond
	}
	c := &Client{cfg: cfg, conns: map[string]*grpc.ClientConn{}}
	if cfg.Registry != "" {
		reg, err := OpenRegistry(cfg.Registry)
		if err != nil {
			return nil, err
		}
		c.reg = reg
		if c.cfg.Resolve == nil {
			c.cfg.Resolve = reg.Resolve
		}
	}
	for _, a := range cfg.Addrs {
		if _, err := c.conn(a); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.Status(ctx, &pb.StatusRequest{})
		return err
	}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	creds := insecure.NewCredentials()
	if c.cfg.TLS != nil {
		creds = credentials.NewTLS(c.cfg.TLS)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.cfg.MaxMessageBytes), grpc.MaxCallSendMsgSize(c.cfg.MaxMessageBytes)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}),
	}
	if c.cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer.Creds{Token: c.cfg.Token, Secure: c.cfg.TLS != nil}))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("coordinator client %s: %w", addr, err)
	}
	c.conns[addr] = cc
	if !contains(c.addrs, addr) {
		c.addrs = append(c.addrs, addr)
	}
	return cc, nil
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// current is the address to try next ("" when none is known yet).
func (c *Client) current() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.addrs) == 0 {
		return ""
	}
	return c.addrs[c.cur%len(c.addrs)]
}

func (c *Client) known() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.addrs)
}

// Registry is the registry the client reads the leader from (nil when
// ClientConfig.Registry is empty).
func (c *Client) Registry() *Registry { return c.reg }

// resolve asks cfg.Resolve for the coordinators and makes the first
// address it gives the current one; false when it gives nothing.
func (c *Client) resolve(ctx context.Context) bool {
	if c.cfg.Resolve == nil {
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	addrs, err := c.cfg.Resolve(rctx)
	cancel()
	if err != nil || len(addrs) == 0 {
		return false
	}
	for _, a := range addrs {
		if _, err := c.conn(a); err != nil {
			return false
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, a := range c.addrs {
		if a == addrs[0] {
			c.cur = i
		}
	}
	return true
}

// moveOn picks the leader named by err, or the next address.
func (c *Client) moveOn(err error) (immediate bool) {
	if addr, ok := leaderHint(err); ok {
		if _, e := c.conn(addr); e == nil {
			c.mu.Lock()
			defer c.mu.Unlock()
			for i, a := range c.addrs {
				if a == addr && i != c.cur%len(c.addrs) {
					c.cur = i
					return true
				}
			}
			return false
		}
	}
	c.mu.Lock()
	c.cur++
	c.mu.Unlock()
	return false
}

// do runs fn against the leader, following not-leader answers and retrying
// unavailable ones until ctx ends or the call's Timeout passes.
//
// A connection that fails for a TLS mismatch (a certificate the other side
// does not trust, a plaintext client and a TLS server, or the reverse) is
// diagnosed once per address (tlsCheck); when every known address has such
// a problem, do returns it at once instead of retrying until the timeout.
func (c *Client) do(ctx context.Context, fn func(context.Context, pb.CoordinatorClient) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	backoff := 20 * time.Millisecond
	err := errNoCoordinator
	probed := map[string]bool{}
	var tlsErr error // the first TLS mismatch found
	tlsBad := 0      // addresses with one
	for tries := 0; ; tries++ {
		if addr := c.current(); addr != "" {
			cc, cerr := c.conn(addr)
			if cerr != nil {
				return cerr
			}
			err = fn(ctx, pb.NewCoordinatorClient(cc))
			if err == nil || !retryable(err) {
				return fromStatus(err)
			}
			if !probed[addr] && handshakeFailure(err) {
				probed[addr] = true
				if terr := c.tlsCheck(ctx, addr, err); terr != nil {
					if tlsErr == nil {
						tlsErr = terr
					}
					if tlsBad++; tlsBad >= c.known() {
						return tlsErr
					}
				}
			}
			if c.moveOn(err) {
				continue
			}
		}
		if n := len(c.cfg.Addrs); n == 0 || tries%n == n-1 {
			backoff = min(backoff*2, 500*time.Millisecond)
		}
		if k := c.known(); k == 0 || tries%k == k-1 {
			// Every known address failed: ask the registry for the leader.
			c.resolve(ctx)
		}
		select {
		case <-ctx.Done():
			if tlsErr != nil {
				return fmt.Errorf("coordinator: %w (last error: %v; %v)", ctx.Err(), fromStatus(err), tlsErr)
			}
			return fmt.Errorf("coordinator: %w (last error: %v)", ctx.Err(), fromStatus(err))
		case <-time.After(backoff):
		}
	}
}

// Close closes the connections.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	c.conns = map[string]*grpc.ClientConn{}
	if c.reg != nil {
		errs = append(errs, c.reg.Close())
		c.reg = nil
	}
	return errors.Join(errs...)
}

func permanent(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.NotFound, codes.Aborted, codes.InvalidArgument, codes.AlreadyExists, codes.ResourceExhausted:
		return true
	}
	return false
}

// reconnect runs a long-lived stream (fn returns when it ends) against the
// leader until ctx ends or fn returns a permanent error or nil.
func (c *Client) reconnect(ctx context.Context, fn func(context.Context, pb.CoordinatorClient) error) error {
	backoff := 20 * time.Millisecond
	for fails := 0; ; fails++ {
		if addr := c.current(); addr != "" {
			cc, err := c.conn(addr)
			if err != nil {
				return err
			}
			err = fn(ctx, pb.NewCoordinatorClient(cc))
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil || permanent(err) {
				return fromStatus(err)
			}
			if c.moveOn(err) {
				backoff = 20 * time.Millisecond
				continue
			}
		}
		if k := c.known(); k == 0 || fails%k == k-1 {
			// Every known address failed: ask the registry for the leader.
			c.resolve(ctx)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 300*time.Millisecond)
	}
}

package coordinator

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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

// SubmitJob submits the job (idempotent for the same spec). A malformed spec
// is refused with an error naming the field.
func (c *Client) SubmitJob(ctx context.Context, spec state.JobSpec) error {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return err
	}
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.SubmitJob(ctx, &pb.SubmitJobRequest{Job: specToPB(spec)})
		return err
	})
}

// Job returns the submitted job, ErrNoJob if none.
func (c *Client) Job(ctx context.Context) (*state.JobSpec, error) {
	var j *state.JobSpec
	err := c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		r, err := cl.GetJob(ctx, &pb.GetJobRequest{})
		if err == nil {
			s := specFromPB(r.Job)
			j = &s
		}
		return err
	})
	return j, err
}

// Register registers worker id with its collective address.
func (c *Client) Register(ctx context.Context, id, addr string) error {
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.Register(ctx, &pb.RegisterRequest{Worker: &pb.Member{Id: id, Addr: addr}})
		return err
	})
}

// Leave asks for a generation without worker id (graceful leave).
func (c *Client) Leave(ctx context.Context, id string) error {
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.Leave(ctx, &pb.LeaveRequest{WorkerId: id})
		return err
	})
}

// Activated tells the coordinators that worker id now trains in the ring of
// generation gen, so it holds the job's state.
func (c *Client) Activated(ctx context.Context, id string, gen uint64) error {
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.Activate(ctx, &pb.ActivateRequest{WorkerId: id, Generation: gen})
		return err
	})
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

// Heartbeat keeps worker id's heartbeat stream to the leader open, re-opening
// it after a failover, until ctx ends (it returns ctx.Err()) or the group
// refuses the worker for good (unauthenticated, removed, job failed or done).
func (c *Client) Heartbeat(ctx context.Context, id string) error {
	return c.reconnect(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := cl.Heartbeat(ctx)
		if err != nil {
			return err
		}
		recv := make(chan error, 1)
		go func() {
			for {
				if _, err := stream.Recv(); err != nil {
					recv <- err
					return
				}
			}
		}()
		t := time.NewTicker(c.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			if err := stream.Send(&pb.Beat{WorkerId: id}); err != nil {
				cancel()
				return <-recv // the stream's real status
			}
			select {
			case err := <-recv:
				return err
			case <-t.C:
			}
		}
	})
}

// WatchGenerations delivers every generation newer than after (after = 0:
// starting with the current one), in order and once, across failovers. The
// error channel gets a permanent error (job failed, unauthenticated) or
// ctx's error; both channels are closed when the watch ends (also when the
// job is done).
func (c *Client) WatchGenerations(ctx context.Context, after uint64) (<-chan state.Generation, <-chan error) {
	gens := make(chan state.Generation, 16)
	errc := make(chan error, 1)
	go func() {
		defer close(gens)
		defer close(errc)
		last := after
		errDone := errors.New("done")
		err := c.reconnect(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
			stream, err := cl.WatchGenerations(ctx, &pb.WatchRequest{After: last})
			if err != nil {
				return err
			}
			for {
				ev, err := stream.Recv()
				if err != nil {
					return err
				}
				switch e := ev.Event.(type) {
				case *pb.WatchEvent_Generation:
					g := genFromPB(e.Generation)
					if g.Number <= last && last != 0 {
						continue
					}
					select {
					case gens <- g:
						last = g.Number
					case <-ctx.Done():
						return ctx.Err()
					}
				case *pb.WatchEvent_Status:
					st := statusFromPB(e.Status)
					switch st.Phase {
					case state.JobFailed:
						return status.Error(codes.Aborted, fmt.Sprintf("%v: %s", state.ErrJobFailed, st.Message))
					case state.JobDone:
						return errDone
					}
				}
			}
		})
		if err != nil && !errors.Is(err, errDone) {
			errc <- err
		}
	}()
	return gens, errc
}

// ReportProgress reports progress; an error wraps state.ErrJobFailed when
// the job has failed (with its message).
func (c *Client) ReportProgress(ctx context.Context, p state.Progress) error {
	if p.Time == 0 {
		p.Time = time.Now().UnixNano()
	}
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.ReportProgress(ctx, progressToPB(p))
		return err
	})
}

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// writeAtomic writes data to dir/name via a temp file, fsync and rename.
func writeAtomic(dir, name string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// PutCheckpoint stores a checkpoint: in the coordinator group (chunked raft
// entries), or as a file in CheckpointDir with only its record replicated.
// rec's Size, SHA256 and Location are filled in; its ID is assigned by the
// group.
func (c *Client) PutCheckpoint(ctx context.Context, rec state.CheckpointRecord, data []byte) error {
	rec.Size = int64(len(data))
	rec.SHA256 = hexSHA(data)
	rec.Location = state.LocationRaft
	if c.cfg.CheckpointDir != "" {
		if err := os.MkdirAll(c.cfg.CheckpointDir, 0o755); err != nil {
			return err
		}
		name := fmt.Sprintf("checkpoint-%012d-%s.bin", rec.GlobalStep, rec.SHA256[:16])
		if err := writeAtomic(c.cfg.CheckpointDir, name, data); err != nil {
			return fmt.Errorf("checkpoint file: %w", err)
		}
		rec.Location = "dir:" + name
		data = nil
	}
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := cl.PutCheckpoint(ctx)
		if err != nil {
			return err
		}
		rest := data
		first := &pb.CheckpointChunk{Record: recToPB(rec)}
		for {
			k := min(len(rest), chunkBytes)
			m := &pb.CheckpointChunk{Data: rest[:k]}
			if first != nil {
				first.Data, m, first = rest[:k], first, nil
			}
			if err := stream.Send(m); err != nil {
				if errors.Is(err, io.EOF) {
					_, err = stream.CloseAndRecv()
				}
				return err
			}
			rest = rest[k:]
			if len(rest) == 0 {
				break
			}
		}
		_, err = stream.CloseAndRecv()
		return err
	})
}

// LatestCheckpoint returns the newest checkpoint and its data (sha256
// verified), ErrNoCheckpoint if there is none.
func (c *Client) LatestCheckpoint(ctx context.Context) (state.CheckpointRecord, []byte, error) {
	return c.GetCheckpoint(ctx, 0)
}

// GetCheckpoint returns checkpoint id (0: the latest) and its data.
func (c *Client) GetCheckpoint(ctx context.Context, id uint64) (state.CheckpointRecord, []byte, error) {
	var rec state.CheckpointRecord
	var data []byte
	err := c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := cl.GetCheckpoint(ctx, &pb.GetCheckpointRequest{Id: id})
		if err != nil {
			return err
		}
		data = data[:0]
		for first := true; ; first = false {
			m, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if first {
				rec = recFromPB(m.Record)
				if rec.Location == state.LocationRaft {
					data = make([]byte, 0, rec.Size)
				}
			}
			data = append(data, m.Data...)
		}
	})
	if err != nil {
		return rec, nil, err
	}
	if name, ok := strings.CutPrefix(rec.Location, "dir:"); ok {
		if c.cfg.CheckpointDir == "" {
			return rec, nil, fmt.Errorf("checkpoint %d is stored in a shared directory (%s), and the client has no CheckpointDir", rec.ID, name)
		}
		if data, err = os.ReadFile(filepath.Join(c.cfg.CheckpointDir, filepath.Base(name))); err != nil {
			return rec, nil, fmt.Errorf("checkpoint %d: %w", rec.ID, err)
		}
	}
	if int64(len(data)) != rec.Size || hexSHA(data) != rec.SHA256 {
		return rec, nil, fmt.Errorf("%w: checkpoint %d: got %d bytes with sha256 %s, record says %d bytes, %s",
			state.ErrChecksumMismatch, rec.ID, len(data), hexSHA(data), rec.Size, rec.SHA256)
	}
	return rec, data, nil
}

// Finish marks the job done with the reward model's sha256.
func (c *Client) Finish(ctx context.Context, rewardSHA string) error {
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.FinishJob(ctx, &pb.FinishJobRequest{RewardSha256: rewardSHA})
		return err
	})
}

// Fail marks the job failed with msg.
func (c *Client) Fail(ctx context.Context, msg string) error {
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.FailJob(ctx, &pb.FailJobRequest{Message: msg})
		return err
	})
}

// Status returns the group's and the job's status from the leader.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		r, err := cl.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			return err
		}
		st = Status{}
		return json.Unmarshal(r.StatusJson, &st)
	})
	return st, err
}

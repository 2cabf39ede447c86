// Package coordinator is the raft-replicated control plane of causalrm
// (docs/elastic.md): a hashicorp/raft node whose FSM is coordinator/state,
// the leader loop that owns membership (liveness, generations), the gRPC
// service with token auth, and Client, the leader-following client the
// workers and the CLI use.
package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/bearer"
	pb "github.com/causalrm/causalrm/proto/coordinatorpb"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// ServiceName is the gRPC service name (also used for the health service).
const ServiceName = "causalrm.coordinator.v1.Coordinator"

// Node is one coordinator: a raft server, its gRPC service and, while it
// leads, the leader loop.
type Node struct {
	cfg      Config
	log      *slog.Logger
	fsm      *fsm
	raft     *raft.Raft
	trans    *raft.NetworkTransport
	bolt     *raftboltdb.BoltStore
	grpc     *grpc.Server
	lis      net.Listener
	grpcAddr string
	health   *health.Server
	live     *liveness
	kick     chan struct{}
	uploads  atomic.Uint64
	metrics  *nodeMetrics

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	leaderCtx context.Context // non-nil and live while this node leads
	closeOnce sync.Once
}

// Start starts a node: the raft server (bootstrapping the group when asked
// and the node has no state), the gRPC service and the leadership monitor.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	cfg.fillDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.ID), fsm: newFSM(), live: newLiveness(),
		kick: make(chan struct{}, 1), metrics: newNodeMetrics()}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			n.Close()
		}
	}()
	if err := n.startRaft(); err != nil {
		return nil, err
	}
	if err := n.startGRPC(); err != nil {
		return nil, err
	}
	n.wg.Add(1)
	go n.monitor()
	ok = true
	if err := ctx.Err(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) startRaft() error {
	cfg := n.cfg
	hl := newHclog(cfg.Logger.With("node", cfg.ID), "raft")
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.RaftHeartbeatTimeout
	rc.ElectionTimeout = cfg.RaftElectionTimeout
	rc.LeaderLeaseTimeout = cfg.RaftLeaderLease
	rc.SnapshotThreshold = cfg.RaftSnapshotThreshold
	rc.SnapshotInterval = 10 * time.Second
	rc.TrailingLogs = 64
	rc.Logger = hl
	rc.NoSnapshotRestoreOnStart = false
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("%w: raft: %v", ErrConfig, err)
	}

	var err error
	var adv net.Addr
	if cfg.RaftAdvertise != "" {
		if adv, err = net.ResolveTCPAddr("tcp", cfg.RaftAdvertise); err != nil {
			return fmt.Errorf("%w: RaftAdvertise: %v", ErrConfig, err)
		}
	}
	var lis net.Listener
	var client *tls.Config
	if cfg.TLS != nil {
		lis, err = tls.Listen("tcp", cfg.RaftAddr, cfg.TLS)
		client = cfg.ClientTLS
		if client == nil {
			client = cfg.TLS
		}
	} else {
		lis, err = net.Listen("tcp", cfg.RaftAddr)
	}
	if err != nil {
		return fmt.Errorf("raft listen %s: %w", cfg.RaftAddr, err)
	}
	if ta, ok := lis.Addr().(*net.TCPAddr); ok && adv == nil && ta.IP.IsUnspecified() {
		lis.Close()
		return fmt.Errorf("%w: raft address %s is not one peers can dial: give --raft-advertise", ErrConfig, cfg.RaftAddr)
	}
	// The job token protects raft as it protects gRPC (raftauth.go).
	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &raftStream{Listener: lis, token: []byte(cfg.Token), client: client, advertise: adv},
		MaxPool: 3, Timeout: 10 * time.Second, Logger: hl})

	var logs raft.LogStore
	var stable raft.StableStore
	var snaps raft.SnapshotStore
	if cfg.DataDir == "" {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return err
		}
		n.bolt, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
		if err != nil {
			return fmt.Errorf("raft store %s: %w", cfg.DataDir, err)
		}
		stable = n.bolt
		if logs, err = raft.NewLogCache(256, n.bolt); err != nil {
			return err
		}
		if snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hl); err != nil {
			return fmt.Errorf("snapshot store %s: %w", cfg.DataDir, err)
		}
	}

	if cfg.Bootstrap {
		has, err := raft.HasExistingState(logs, stable, snaps)
		if err != nil {
			return err
		}
		if !has {
			var conf raft.Configuration
			for _, s := range cfg.Servers {
				conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.RaftAddr)})
			}
			if len(conf.Servers) == 0 {
				conf.Servers = []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: n.trans.LocalAddr()}}
			}
			if err := raft.BootstrapCluster(rc, logs, stable, snaps, n.trans, conf); err != nil {
				return fmt.Errorf("bootstrap: %w", err)
			}
			n.log.Info("bootstrapped the raft group", "servers", len(conf.Servers))
		}
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, logs, stable, snaps, n.trans)
	if err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	return nil
}

func (n *Node) startGRPC() error {
	cfg := n.cfg
	lis := cfg.GRPCListener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
			return fmt.Errorf("grpc listen %s: %w", cfg.GRPCAddr, err)
		}
	}
	n.lis = lis
	n.grpcAddr = lis.Addr().String()
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxMessageBytes),
		grpc.MaxSendMsgSize(cfg.MaxMessageBytes),
	}
	opts = append(opts, bearer.ServerOptions(cfg.Token, healthPrefix)...)
	opts = append(opts,
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}))
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	n.grpc = grpc.NewServer(opts...)
	pb.RegisterCoordinatorServer(n.grpc, &service{n: n})
	n.health = health.NewServer()
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	n.health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(n.grpc, n.health)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("grpc serve", "err", err)
		}
	}()
	return nil
}

// GRPCAddr is the address the gRPC service listens on.
func (n *Node) GRPCAddr() string { return n.grpcAddr }

// ID is the node's raft id.
func (n *Node) ID() string { return n.cfg.ID }

// monitor follows leadership: it runs the leader loop while this node leads
// and keeps the health status current.
func (n *Node) monitor() {
	defer n.wg.Done()
	// Polling, not raft's NotifyCh: raft blocks on that channel, and a
	// monitor that has stopped must never stall raft's shutdown.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var stopLoop context.CancelFunc
	var loopDone chan struct{}
	stop := func() {
		if stopLoop != nil {
			stopLoop()
			<-loopDone
			stopLoop, loopDone = nil, nil
		}
	}
	defer stop()
	serving := false
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		leader := n.raft.State() == raft.Leader
		if leader && stopLoop == nil {
			lctx, cancel := context.WithCancel(n.ctx)
			done := make(chan struct{})
			stopLoop, loopDone = cancel, done
			go func() {
				defer close(done)
				n.leaderLoop(lctx)
			}()
		} else if !leader && stopLoop != nil {
			n.mu.Lock()
			n.leaderCtx = nil
			n.mu.Unlock()
			stop()
			n.log.Info("lost leadership")
		}
		addr, _ := n.raft.LeaderWithID()
		if s := addr != ""; s != serving {
			serving = s
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if s {
				st = healthpb.HealthCheckResponse_SERVING
			}
			n.health.SetServingStatus("", st)
			n.health.SetServingStatus(ServiceName, st)
		}
	}
}

// leading returns the context of the current leadership term, or a
// not-leader error naming the leader.
func (n *Node) leading() (context.Context, error) {
	n.mu.Lock()
	lctx := n.leaderCtx
	n.mu.Unlock()
	if lctx == nil || lctx.Err() != nil || n.raft.State() != raft.Leader {
		return nil, n.notLeader()
	}
	return lctx, nil
}

func (n *Node) notLeader() error {
	_, addr := n.Leader()
	if id, _ := n.Leader(); id == n.cfg.ID {
		addr = "" // we are the leader in raft but our loop is not up yet
	}
	return &notLeaderError{addr: addr}
}

// IsLeader reports whether this node is the raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the known leader's id and gRPC address ("" if unknown).
func (n *Node) Leader() (id, grpcAddr string) {
	_, lid := n.raft.LeaderWithID()
	id = string(lid)
	if id == "" {
		return "", ""
	}
	if id == n.cfg.ID {
		return id, n.grpcAddr
	}
	for _, s := range n.cfg.Servers {
		if s.ID == id {
			return id, s.GRPCAddr
		}
	}
	return id, ""
}

// WaitLeader waits until the group has a leader whose leader loop runs (when
// it is this node) or is known.
func (n *Node) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if id, _ := n.Leader(); id != "" {
			if id != n.cfg.ID {
				return nil
			}
			if _, err := n.leading(); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.ctx.Done():
			return ErrClosed
		case <-t.C:
		}
	}
}

// State returns a copy of the replicated state (checkpoint blobs shared,
// read-only).
func (n *Node) State() state.State { return n.fsm.clone() }

// Raft exposes the raft server (tests, status).
func (n *Node) Raft() *raft.Raft { return n.raft }

// apply commits a command through raft (leader only) and returns its result.
func (n *Node) apply(ctx context.Context, c state.Command) (any, error) {
	if _, err := n.leading(); err != nil {
		return nil, err
	}
	if c.Time == 0 {
		c.Time = time.Now().UnixNano()
	}
	b, err := state.EncodeCommand(c)
	if err != nil {
		return nil, err
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	start := time.Now()
	f := n.raft.Apply(b, timeout)
	if err := f.Error(); err != nil {
		n.metrics.applied(&c, time.Since(start), err)
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrRaftShutdown) {
			return nil, n.notLeader()
		}
		return nil, fmt.Errorf("raft apply %v: %w", c.Op, err)
	}
	r, _ := f.Response().(applyResult)
	n.metrics.applied(&c, time.Since(start), r.err)
	return r.value, r.err
}

func (n *Node) kickLoop() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Close stops the node and every goroutine it started.
func (n *Node) Close() {
	n.closeOnce.Do(func() {
		n.cancel()
		if n.grpc != nil {
			n.grpc.Stop()
		} else if n.lis != nil {
			n.lis.Close()
		}
		if n.raft != nil {
			if err := n.raft.Shutdown().Error(); err != nil {
				n.log.Warn("raft shutdown", "err", err)
			}
		}
		n.wg.Wait()
		if n.trans != nil {
			n.trans.Close()
			n.trans.CloseStreams() // pooled outbound conns; else peers' handlers linger
		}
		if n.bolt != nil {
			n.bolt.Close()
		}
	})
}

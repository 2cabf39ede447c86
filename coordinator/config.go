package coordinator

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"
)

// Server is a member of the static coordinator group.
type Server struct {
	ID       string
	RaftAddr string // host:port of its raft transport
	GRPCAddr string // host:port of its gRPC service, as clients dial it
}

// Config configures a coordinator node.
type Config struct {
	ID       string // raft server id, unique in the group
	RaftAddr string // TCP bind (and advertised) address of the raft transport, host:port
	// RaftAdvertise, if set, is the ip:port peers reach this node's raft
	// transport at, when RaftAddr binds a wildcard (0.0.0.0:7000 in a pod).
	RaftAdvertise string

	// GRPCListener serves the gRPC API when set; else GRPCAddr is listened on.
	GRPCListener net.Listener
	GRPCAddr     string

	// DataDir holds raft-boltdb's log and stable store and the file snapshot
	// store. "" keeps everything in memory (embedded single node, tests).
	DataDir string

	// Bootstrap: this node bootstraps the group with Servers (or itself alone
	// when Servers is empty) if it has no raft state yet. A restarted node
	// with existing state never bootstraps again.
	Bootstrap bool
	Servers   []Server

	// Token, when not empty, is required from every caller as metadata
	// "authorization: Bearer <token>" (compared in constant time).
	Token string
	// TLS, when set, serves gRPC and the raft transport over TLS; set
	// ClientAuth/ClientCAs for mTLS. ClientTLS is used to dial other
	// raft nodes (defaults to TLS).
	TLS       *tls.Config
	ClientTLS *tls.Config

	MaxMessageBytes int // every gRPC message, both directions (default 8 MiB)

	HeartbeatInterval time.Duration // workers' beat interval (default 200ms); informative
	HeartbeatTimeout  time.Duration // no beat for this long: the worker is dead (default 2s)
	BatchWindow       time.Duration // membership changes seen within this window form one generation (default 50ms)

	// Registry, when set ("etcd://host:port[,host:port][/name]"), takes
	// worker liveness from etcd leases instead of heartbeats, and the
	// leader publishes its gRPC address there (docs/elastic.md,
	// "Registry"). "" = heartbeats.
	Registry string
	// RegistryLeaderTTL is the TTL of the lease of the leader key (default 5s).
	RegistryLeaderTTL time.Duration

	// Raft timing (defaults: 1s heartbeat and election timeout, 500ms lease).
	RaftHeartbeatTimeout time.Duration
	RaftElectionTimeout  time.Duration
	RaftLeaderLease      time.Duration
	// RaftSnapshotThreshold: logs between snapshots (default 1024).
	RaftSnapshotThreshold uint64

	Logger *slog.Logger
}

// DefaultConfig returns a config with the defaults filled in and no
// identity or addresses.
func DefaultConfig() Config {
	return Config{
		MaxMessageBytes:   8 << 20,
		HeartbeatInterval: 200 * time.Millisecond,
		HeartbeatTimeout:  2 * time.Second,
		BatchWindow:       50 * time.Millisecond,
		// 500 ms raft timeouts (hashicorp/raft's defaults are 1 s): a
		// leader kill to the next committed step took 2.65 s (median of 6
		// chaos runs) with 1 s and 1.35 s with these (docs/chaos.md).
		RaftHeartbeatTimeout:  500 * time.Millisecond,
		RaftElectionTimeout:   500 * time.Millisecond,
		RaftLeaderLease:       500 * time.Millisecond,
		RaftSnapshotThreshold: 1024,
	}
}

func (c *Config) fillDefaults() {
	d := DefaultConfig()
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = d.MaxMessageBytes
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = d.HeartbeatInterval
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = d.HeartbeatTimeout
	}
	if c.BatchWindow == 0 {
		c.BatchWindow = d.BatchWindow
	}
	if c.RegistryLeaderTTL == 0 {
		c.RegistryLeaderTTL = 5 * time.Second
	}
	if c.RaftHeartbeatTimeout == 0 {
		c.RaftHeartbeatTimeout = d.RaftHeartbeatTimeout
	}
	if c.RaftElectionTimeout == 0 {
		c.RaftElectionTimeout = d.RaftElectionTimeout
	}
	if c.RaftLeaderLease == 0 {
		c.RaftLeaderLease = min(d.RaftLeaderLease, c.RaftHeartbeatTimeout)
	}
	if c.RaftSnapshotThreshold == 0 {
		c.RaftSnapshotThreshold = d.RaftSnapshotThreshold
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// ErrConfig is wrapped by every Validate error.
var ErrConfig = errors.New("coordinator config")

// Validate checks the config (after defaults are applied to zero fields).
func (c Config) Validate() error {
	c.fillDefaults()
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...))
	}
	if c.ID == "" {
		return bad("ID", "must not be empty")
	}
	if _, _, err := net.SplitHostPort(c.RaftAddr); err != nil {
		return bad("RaftAddr", "%v", err)
	}
	if c.GRPCListener == nil {
		if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
			return bad("GRPCAddr", "%v (or set GRPCListener)", err)
		}
	}
	if c.MaxMessageBytes < 2<<20 {
		return bad("MaxMessageBytes", "must be >= 2 MiB (checkpoint chunks are 1 MiB), got %d", c.MaxMessageBytes)
	}
	if c.HeartbeatInterval <= 0 || c.HeartbeatTimeout <= c.HeartbeatInterval {
		return bad("HeartbeatTimeout", "must exceed HeartbeatInterval (%v), got %v", c.HeartbeatInterval, c.HeartbeatTimeout)
	}
	if c.Registry != "" {
		if _, _, err := ParseRegistry(c.Registry); err != nil {
			return bad("Registry", "%v", err)
		}
	}
	seen := map[string]bool{}
	self := false
	for i, s := range c.Servers {
		if s.ID == "" || s.RaftAddr == "" || s.GRPCAddr == "" {
			return bad(fmt.Sprintf("Servers[%d]", i), "needs ID, RaftAddr and GRPCAddr")
		}
		if seen[s.ID] {
			return bad(fmt.Sprintf("Servers[%d]", i), "duplicate ID %q", s.ID)
		}
		seen[s.ID] = true
		self = self || s.ID == c.ID
	}
	if len(c.Servers) > 0 && !self {
		return bad("Servers", "does not list this node's ID %q", c.ID)
	}
	return nil
}

package coordinator

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testLogger() *slog.Logger {
	if os.Getenv("COORDINATOR_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func testConfig(id string) Config {
	c := DefaultConfig()
	c.ID = id
	c.HeartbeatInterval = 100 * time.Millisecond
	c.HeartbeatTimeout = time.Second
	c.RaftHeartbeatTimeout = 500 * time.Millisecond
	c.RaftElectionTimeout = 500 * time.Millisecond
	c.RaftLeaderLease = 250 * time.Millisecond
	c.Logger = testLogger()
	return c
}

type cluster struct {
	t       *testing.T
	nodes   []*Node
	cfgs    []Config
	servers []Server
}

// startCluster starts n coordinators on loopback; the first bootstraps.
func startCluster(t *testing.T, n int, mut func(*Config)) *cluster {
	t.Helper()
	c := &cluster{t: t}
	var lis []net.Listener
	for i := range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis = append(lis, l)
		c.servers = append(c.servers, Server{ID: string(rune('a' + i)), RaftAddr: freeAddr(t), GRPCAddr: l.Addr().String()})
	}
	for i, s := range c.servers {
		cfg := testConfig(s.ID)
		cfg.RaftAddr = s.RaftAddr
		cfg.GRPCListener = lis[i]
		cfg.Servers = c.servers
		cfg.Bootstrap = i == 0
		if mut != nil {
			mut(&cfg)
		}
		nd, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, nd)
		c.cfgs = append(c.cfgs, cfg)
	}
	t.Cleanup(c.close)
	return c
}

func (c *cluster) close() {
	for _, n := range c.nodes {
		if n != nil {
			n.Close()
		}
	}
}

func (c *cluster) addrs() []string {
	var a []string
	for _, s := range c.servers {
		a = append(a, s.GRPCAddr)
	}
	return a
}

// leader waits for a node whose leader loop runs.
func (c *cluster) leader(ctx context.Context) int {
	c.t.Helper()
	for {
		for i, n := range c.nodes {
			if n == nil {
				continue
			}
			if _, err := n.leading(); err == nil {
				return i
			}
		}
		select {
		case <-ctx.Done():
			c.t.Fatal("no leader")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startSolo starts a bootstrapped single-node group on raftAddr (and a
// free gRPC port) with mut applied to its config, and waits for it to lead.
func startSolo(t *testing.T, raftAddr, dataDir string, mut func(*Config)) *Node {
	t.Helper()
	cfg := testConfig("solo")
	cfg.RaftAddr = raftAddr
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.GRPCListener = l
	cfg.DataDir = dataDir
	cfg.Bootstrap = true
	mut(&cfg)
	n, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		n.Close()
		t.Fatal(err)
	}
	return n
}

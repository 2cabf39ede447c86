package coordinator

import (
	"context"
	"testing"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/etcdtest"
)

func startRegistryNode(t *testing.T, registry, raftAddr, dataDir string) *Node {
	t.Helper()
	return startSolo(t, raftAddr, dataDir, func(c *Config) {
		c.Registry = registry
		c.RegistryLeaderTTL = time.Second
	})
}

func TestParseRegistry(t *testing.T) {
	for _, c := range []struct{ in, eps, prefix string }{
		{"etcd://127.0.0.1:2379", "http://127.0.0.1:2379", "/causalrm/default/"},
		{"etcd://127.0.0.1:2379,127.0.0.1:22379/job-7", "http://127.0.0.1:2379 http://127.0.0.1:22379", "/causalrm/job-7/"},
	} {
		eps, prefix, err := ParseRegistry(c.in)
		if err != nil || prefix != c.prefix || joinSpace(eps) != c.eps {
			t.Errorf("%s: %v %q %v", c.in, eps, prefix, err)
		}
	}
	for _, bad := range []string{"", "http://127.0.0.1:2379", "etcd://", "etcd://nohost", "etcd://127.0.0.1:2379/a/b"} {
		if _, _, err := ParseRegistry(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	cfg := testConfig("x")
	cfg.RaftAddr, cfg.GRPCAddr, cfg.Registry = "127.0.0.1:1", "127.0.0.1:2", "etcd:/oops"
	if err := cfg.Validate(); err == nil {
		t.Error("a malformed Registry passed Validate")
	}
}

func joinSpace(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += " "
		}
		out += x
	}
	return out
}

// The registry path of a single coordinator: the leader key holds its
// address and the client finds it there; workers that hold a lease and
// never heartbeat stay alive; a revoked lease and an expired one each make
// a crash generation without the worker at once; a restarted leader
// re-reads the keys and keeps the live worker.
func TestRegistryLeaseLiveness(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reg := "etcd://" + etcdtest.Start(t) + "/job"
	dir, raftAddr := t.TempDir(), freeAddr(t)
	n := startRegistryNode(t, reg, raftAddr, dir)
	defer func() { n.Close() }()

	r, err := OpenRegistry(reg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.LeaderKey() != "/causalrm/job/leader" || r.WorkerKey("w1") != "/causalrm/job/workers/w1" {
		t.Fatalf("keys %s %s", r.LeaderKey(), r.WorkerKey("w1"))
	}
	waitFor(t, 10*time.Second, "the leader key", func() bool {
		a, err := r.Leader(ctx)
		return err == nil && a == n.GRPCAddr()
	})

	// A client that knows only the registry.
	cl, err := Dial(ctx, ClientConfig{Registry: reg, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.SubmitJob(ctx, state.JobSpec{ID: "job", Shards: 8, MinWorkers: 2}); err != nil {
		t.Fatal(err)
	}
	gen := func() state.Generation {
		s := n.State()
		g, _ := s.Current()
		return g
	}
	hold := func(id string) *Lease {
		t.Helper()
		l, err := cl.Registry().Hold(ctx, id, "127.0.0.1:1"+id[1:], time.Second, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.Register(ctx, id, "127.0.0.1:1"+id[1:]); err != nil {
			t.Fatal(err)
		}
		return l
	}
	leases := map[string]*Lease{}
	for _, id := range []string{"w1", "w2"} {
		leases[id] = hold(id)
		defer leases[id].Release()
	}
	waitFor(t, 10*time.Second, "generation 1", func() bool { return gen().Number == 1 })
	if g := gen(); g.Cause.String() != "start" || len(g.Members) != 2 {
		t.Fatalf("generation 1: %+v", g)
	}
	for _, id := range []string{"w1", "w2"} {
		if err := cl.Activated(ctx, id, 1); err != nil {
			t.Fatal(err)
		}
	}
	// No heartbeats, for longer than the heartbeat timeout: the leases
	// keep both alive.
	time.Sleep(2*n.cfg.HeartbeatTimeout + 500*time.Millisecond)
	if g := gen(); g.Number != 1 {
		t.Fatalf("without heartbeats but with leases, generation %d (%s)", g.Number, g.Cause)
	}

	// Revoked (a graceful exit of the process): dead at once.
	start := time.Now()
	leases["w2"].Release()
	waitFor(t, 5*time.Second, "the crash generation of w2", func() bool { return gen().Number == 2 })
	t.Logf("revoked lease: crash generation after %v", time.Since(start).Round(time.Millisecond))
	if g := gen(); g.Cause.String() != "crash:w2" || len(g.Members) != 1 || g.Index("w1") != 0 {
		t.Fatalf("generation 2: %+v", g)
	}

	// Expired: w3 joins, then its keep-alive stops (kill -9) without a
	// revoke; its key goes when the 1s lease expires.
	leases["w3"] = hold("w3")
	waitFor(t, 10*time.Second, "w3 joins", func() bool { return gen().Number == 3 })
	if g := gen(); g.Cause.String() != "join:w3" || len(g.Members) != 2 {
		t.Fatalf("generation 3: %+v", g)
	}
	if err := cl.Activated(ctx, "w3", 3); err != nil {
		t.Fatal(err)
	}
	l3 := leases["w3"]
	l3.cancel()
	<-l3.done
	start = time.Now()
	waitFor(t, 10*time.Second, "the crash generation of w3", func() bool { return gen().Number == 4 })
	took := time.Since(start)
	t.Logf("expired lease (TTL 1s): crash generation after %v", took.Round(time.Millisecond))
	if g := gen(); g.Cause.String() != "crash:w3" || len(g.Members) != 1 || g.Index("w1") != 0 {
		t.Fatalf("generation 4: %+v", g)
	}
	if took > 5*time.Second {
		t.Errorf("the expired lease took %v to end w3", took)
	}

	// A leader that starts (here: the same node restarted from its data
	// directory, on a new gRPC port) re-reads the keys: w1's key keeps it,
	// and a worker whose key went while there was no leader is dead.
	leases["w5"] = hold("w5")
	waitFor(t, 10*time.Second, "w5 joins", func() bool { return gen().Number == 5 })
	if err := cl.Activated(ctx, "w5", 5); err != nil {
		t.Fatal(err)
	}
	old := n.GRPCAddr()
	n.Close()
	leases["w5"].Release() // gone while no coordinator runs
	n = startRegistryNode(t, reg, raftAddr, dir)
	waitFor(t, 10*time.Second, "the new leader's key", func() bool {
		a, err := r.Leader(ctx)
		return err == nil && a == n.GRPCAddr() && a != old
	})
	waitFor(t, 10*time.Second, "the crash generation of w5", func() bool { return gen().Number == 6 })
	if g := gen(); g.Cause.String() != "crash:w5" || len(g.Members) != 1 || g.Index("w1") != 0 {
		t.Fatalf("generation 6: %+v", g)
	}
	// The client followed the leader through the registry.
	st, err := cl.Status(ctx)
	if err != nil || st.LeaderAddr != n.GRPCAddr() {
		t.Fatalf("status through the registry after the restart: %+v, %v", st.LeaderAddr, err)
	}
	time.Sleep(2 * n.cfg.HeartbeatTimeout)
	if g := gen(); g.Number != 6 {
		t.Fatalf("w1 (key present) was dropped after the restart: %+v", g)
	}
}

// With the registry unreachable when a leader starts, it cannot read the
// keys: nobody dies of silence meanwhile (the workers send no heartbeats),
// and the node still closes promptly.
func TestRegistryUnreachableKeepsWorkers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := startRegistryNode(t, "etcd://"+freeAddr(t)+"/job", freeAddr(t), "")
	cl, err := Dial(ctx, ClientConfig{Addrs: []string{n.GRPCAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.SubmitJob(ctx, state.JobSpec{ID: "job", Shards: 4, MinWorkers: 1}); err != nil {
		t.Fatal(err)
	}
	if err := cl.Register(ctx, "w1", "127.0.0.1:11"); err != nil {
		t.Fatal(err)
	}
	gen := func() state.Generation {
		s := n.State()
		g, _ := s.Current()
		return g
	}
	waitFor(t, 10*time.Second, "generation 1", func() bool { return gen().Number == 1 })
	time.Sleep(2*n.cfg.HeartbeatTimeout + 500*time.Millisecond)
	if g := gen(); g.Number != 1 {
		t.Fatalf("with the registry unreachable, generation %d (%s)", g.Number, g.Cause)
	}
	start := time.Now()
	n.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
}

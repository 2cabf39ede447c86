package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// startRegistryWorker starts a worker that knows only the registry: it
// finds the coordinators through the leader key and is kept alive by its
// lease, not by heartbeats.
func (c *testCluster) startRegistryWorker(id, registry string) *proc {
	p := c.start(id, "worker", "--registry", registry, "--lease-ttl", "1s", "--id", id, "--quiet", "--op-timeout", "20s")
	c.mu.Lock()
	c.workers[id] = p
	c.mu.Unlock()
	return p
}

// The etcd registry path: a coordinator and three workers with --registry
// (the workers are given no coordinator address and send no heartbeat;
// the coordinator's heartbeat timeout is 1s). kill -9 of one worker mid-
// training: its lease expires, the coordinator makes a generation without
// it, the survivors finish, and the oracle holds.
func TestRegistryKillWorker(t *testing.T) {
	dir := t.TempDir()
	data, ref := elasticReference(t, dir)
	etcdAddr := etcdtest.Start(t)
	reg := "etcd://" + etcdAddr + "/job"
	c := &testCluster{t: t, dir: t.TempDir(), token: "s3cret-job-token", workers: map[string]*proc{},
		env: []string{stepDelayEnv + "=30ms"}, coordArgs: []string{"--registry", reg}}
	c.startGroup(1, false)
	out := filepath.Join(dir, "out")
	c.submit(data, out, "--min-workers", "3", "--report-every", "5")
	ws := map[string]*proc{}
	for _, id := range []string{"w1", "w2", "w3"} {
		ws[id] = c.startRegistryWorker(id, reg)
	}
	before := c.waitStatus("step 25", time.Minute, atLeast(25))
	if before.Generation.Number != 1 || len(before.Generation.Members) != 3 {
		t.Fatalf("before the kill (no heartbeats, leases only): generation %d (%s) of %d", before.Generation.Number, before.Generation.Cause, len(before.Generation.Members))
	}
	start := time.Now()
	_ = ws["w3"].cmd.Process.Kill()
	st := c.waitStatus("a generation without w3", time.Minute, func(st coordinator.Status) bool {
		return st.Generation != nil && st.Generation.Index("w3") < 0
	})
	crashGen := time.Since(start)
	if st.Generation.Cause.String() != "crash:w3" || len(st.Generation.Members) != 2 {
		t.Fatalf("generation %d after the kill: %q with %d members", st.Generation.Number, st.Generation.Cause, len(st.Generation.Members))
	}
	if l := c.coords[0].log.String(); !strings.Contains(l, "registry: a worker's key is gone: dead") || !strings.Contains(l, "worker=w3") {
		t.Fatalf("the coordinator did not see w3's key go:\n%s", tail(l, 3000))
	}
	c.waitStatus("a step committed after the kill", time.Minute, atLeast(before.Watermark.GlobalStep+10))
	t.Logf("kill -9 of w3 at global step %d (lease TTL 1s): crash generation %d after %v, next committed step after %v",
		before.Watermark.GlobalStep, st.Generation.Number, crashGen.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	<-ws["w3"].done
	final := c.finish(out, ref)
	// status finds the coordinators through the registry alone.
	if o, err := run(t, "status", "--registry", reg, "--coordinators", "", "--token", c.token); err != nil || !strings.Contains(o, "done") {
		t.Fatalf("status --registry: %v\n%s", err, o)
	}
	logSurvivors(t, ws["w1"], ws["w2"])
	if final.Generation.Number != st.Generation.Number {
		t.Fatalf("generations after the crash one: %d (%s)", final.Generation.Number, final.Generation.Cause)
	}
	// The leader key names the coordinator; the survivors revoked their
	// leases on exit, so no worker key is left.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + etcdAddr},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	leader, err := cli.Get(ctx, "/causalrm/job/leader")
	if err != nil || len(leader.Kvs) != 1 || string(leader.Kvs[0].Value) != c.adv[0] {
		t.Fatalf("leader key: %v, %v (want %s)", leader, err, c.adv[0])
	}
	keys, err := cli.Get(ctx, "/causalrm/job/workers/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil || len(keys.Kvs) != 0 {
		t.Fatalf("worker keys left after the job: %v, %v", keys, err)
	}
}

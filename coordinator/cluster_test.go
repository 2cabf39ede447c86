package coordinator

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	pb "github.com/causalrm/causalrm/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

type worker struct {
	cancel context.CancelFunc
	done   chan error
}

func startHeartbeat(ctx context.Context, cl *Client, id string) *worker {
	ctx, cancel := context.WithCancel(ctx)
	w := &worker{cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- cl.Heartbeat(ctx, id) }()
	return w
}

func (w *worker) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	if err := <-w.done; !errors.Is(err, context.Canceled) {
		t.Errorf("heartbeat ended with %v, want context.Canceled", err)
	}
}

// stopAfterLeave ends the heartbeat of a worker that has left: the leader may
// close the stream of a removed worker before the worker cancels it.
func (w *worker) stopAfterLeave(t *testing.T) {
	t.Helper()
	w.cancel()
	if err := <-w.done; !errors.Is(err, context.Canceled) && !errors.Is(err, state.ErrUnknownWorker) {
		t.Errorf("heartbeat of a left worker ended with %v, want context.Canceled or ErrUnknownWorker", err)
	}
}

func TestClusterMembershipAndFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	c := startCluster(t, 3, nil)
	t0 := time.Now()
	li := c.leader(ctx)
	t.Logf("initial election: %v (leader %s)", time.Since(t0), c.servers[li].ID)

	// Health: SERVING on every node once a leader is known.
	for _, a := range c.addrs() {
		cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "health SERVING at "+a, func() bool {
			r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: ServiceName})
			return err == nil && r.Status == healthpb.HealthCheckResponse_SERVING
		})
		cc.Close()
	}
	// A follower refuses with the leader's address.
	fi := (li + 1) % 3
	cc, err := grpc.NewClient(c.servers[fi].GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	_, err = pb.NewCoordinatorClient(cc).Status(ctx, &pb.StatusRequest{})
	cc.Close()
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || st.Message() != "not leader; leader is "+c.servers[li].GRPCAddr {
		t.Fatalf("follower answered %v", err)
	}

	cl, err := Dial(ctx, ClientConfig{Addrs: c.addrs(), HeartbeatInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Job(ctx); !errors.Is(err, ErrNoJob) {
		t.Fatalf("Job before submit: %v", err)
	}
	spec := state.JobSpec{ID: "job", Shards: 8, MinWorkers: 2}
	if err := cl.SubmitJob(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if j, err := cl.Job(ctx); err != nil || j.ID != "job" || j.ProgressEvery != state.DefaultProgressEvery {
		t.Fatalf("Job: %+v, %v", j, err)
	}

	var mu sync.Mutex
	var seen []state.Generation
	wctx, wcancel := context.WithCancel(ctx)
	gens, werr := cl.WatchGenerations(wctx, 0)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for g := range gens {
			mu.Lock()
			seen = append(seen, g)
			mu.Unlock()
		}
	}()
	waitGen := func(n uint64) state.Generation {
		t.Helper()
		var g state.Generation
		waitFor(t, 10*time.Second, "generation", func() bool {
			mu.Lock()
			defer mu.Unlock()
			if len(seen) > 0 && seen[len(seen)-1].Number >= n {
				g = seen[len(seen)-1]
				return true
			}
			return false
		})
		if g.Number != n {
			t.Fatalf("got generation %d, want %d", g.Number, n)
		}
		return g
	}

	hb := map[string]*worker{}
	for _, id := range []string{"w1", "w2"} {
		if err := cl.Register(ctx, id, "127.0.0.1:1"+id[1:]); err != nil {
			t.Fatal(err)
		}
		hb[id] = startHeartbeat(ctx, cl, id)
	}
	g := waitGen(1)
	if g.Cause.String() != "start" || len(g.Members) != 2 || len(g.ShardsOf("w1")) != 4 || len(g.ShardsOf("w2")) != 4 {
		t.Fatalf("generation 1: %+v", g)
	}
	activate := func(g state.Generation) {
		t.Helper()
		for _, m := range g.Members { // the workers switched to g's ring
			if err := cl.Activated(ctx, m.ID, g.Number); err != nil {
				t.Fatal(err)
			}
		}
	}
	activate(g)

	if err := cl.Register(ctx, "w3", "127.0.0.1:13"); err != nil {
		t.Fatal(err)
	}
	hb["w3"] = startHeartbeat(ctx, cl, "w3")
	g2 := waitGen(2)
	if g2.Cause.String() != "join:w3" || g2.Index("w3") != 2 {
		t.Fatalf("generation 2: %+v", g2)
	}
	activate(g2)
	for _, id := range []string{"w1", "w2"} { // survivors keep a subset of their shards
		kept := map[int]bool{}
		for _, s := range g.ShardsOf(id) {
			kept[s] = true
		}
		for _, s := range g2.ShardsOf(id) {
			if !kept[s] {
				t.Fatalf("%s gained shard %d on a join", id, s)
			}
		}
	}

	// Crash: w2 stops heartbeating without a Leave.
	crash := time.Now()
	hb["w2"].stop(t)
	g3 := waitGen(3)
	t.Logf("crash detected and generation committed in %v", time.Since(crash))
	if g3.Cause.String() != "crash:w2" || g3.Index("w2") >= 0 || len(g3.Members) != 2 {
		t.Fatalf("generation 3: %+v", g3)
	}
	if time.Since(crash) > c.cfgs[0].HeartbeatTimeout {
		t.Errorf("crash generation took %v, more than the heartbeat timeout", time.Since(crash))
	}
	// Reports of the removed worker are refused.
	err = cl.ReportProgress(ctx, state.Progress{WorkerID: "w2", Generation: 2, GlobalStep: 1})
	if !errors.Is(err, state.ErrUnknownWorker) || status.Code(err) != codes.NotFound {
		t.Fatalf("report of a crashed worker: %v", err)
	}

	// Graceful leave.
	if err := cl.Leave(ctx, "w3"); err != nil {
		t.Fatal(err)
	}
	g4 := waitGen(4)
	hb["w3"].stopAfterLeave(t)
	if g4.Cause.String() != "leave:w3" || len(g4.Members) != 1 || len(g4.ShardsOf("w1")) != 8 {
		t.Fatalf("generation 4: %+v", g4)
	}
	if err := cl.ReportProgress(ctx, state.Progress{WorkerID: "w1", Generation: 4, GlobalStep: 10, Stage: "ps", ParamHash: "h",
		Ranges: []state.StepRange{{Stage: "ps", From: 0, To: 10}}}); err != nil {
		t.Fatal(err)
	}

	// Kill the leader.
	li = c.leader(ctx)
	kill := time.Now()
	c.nodes[li].Close()
	c.nodes[li] = nil
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover: a new leader (%s) answered %v after the old one was killed", st.Leader, time.Since(kill))
	if st.Leader == c.servers[li].ID || st.Watermark.GlobalStep != 10 {
		t.Fatalf("status after failover: %+v", st)
	}
	// The client keeps working: a join after the failover.
	if err := cl.Register(ctx, "w4", "127.0.0.1:14"); err != nil {
		t.Fatal(err)
	}
	hb["w4"] = startHeartbeat(ctx, cl, "w4")
	g5 := waitGen(5)
	t.Logf("first generation after the leader was killed: %v", time.Since(kill))
	if g5.Cause.String() != "join:w4" || g5.Index("w1") != 0 { // w1 re-attached in time: not crashed
		t.Fatalf("generation 5: %+v", g5)
	}
	// A report of the same global step with another hash fails the job.
	err = cl.ReportProgress(ctx, state.Progress{WorkerID: "w4", Generation: 5, GlobalStep: 10, ParamHash: "other"})
	if !errors.Is(err, state.ErrJobFailed) {
		t.Fatalf("divergent report: %v", err)
	}
	select {
	case err := <-werr:
		if !errors.Is(err, state.ErrJobFailed) {
			t.Fatalf("watch ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not report the failed job")
	}
	<-watchDone
	wcancel()
	for _, id := range []string{"w1", "w4"} {
		hb[id].cancel()
		if err := <-hb[id].done; !errors.Is(err, state.ErrJobFailed) && !errors.Is(err, context.Canceled) {
			t.Errorf("heartbeat of %s: %v", id, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i, g := range seen {
		if g.Number != uint64(i+1) {
			t.Fatalf("watch saw generations %v: lost or repeated", numbers(seen))
		}
	}
	if len(seen) != 5 {
		t.Fatalf("watch saw %v", numbers(seen))
	}
}

func numbers(gs []state.Generation) []uint64 {
	var n []uint64
	for _, g := range gs {
		n = append(n, g.Number)
	}
	return n
}

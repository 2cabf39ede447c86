package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/sim"
	"github.com/causalrm/causalrm/trainer"
)

// fakeCoord is an in-memory coordinator: the test commits generations by
// hand and watches the progress reports.
type fakeCoord struct {
	mu       sync.Mutex
	gens     []state.Generation
	changed  chan struct{}
	onReport func(p state.Progress)
	reports  []state.Progress
	ckpts    [][]byte
	// onLinkFailed, when set, is called with each link-failure report.
	onLinkFailed func(id string, gen uint64, why string)
}

func newFakeCoord() *fakeCoord { return &fakeCoord{changed: make(chan struct{})} }

func (f *fakeCoord) commit(members []string, addrs map[string]string, shards int, cause string) state.Generation {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := state.ParseCause(cause)
	if err != nil {
		panic(err)
	}
	g := state.Generation{Number: uint64(len(f.gens) + 1), Cause: c, Owner: make([]int, shards)}
	for _, id := range members {
		g.Members = append(g.Members, state.Member{ID: id, Addr: addrs[id]})
	}
	for s := range g.Owner {
		g.Owner[s] = s * len(members) / shards
	}
	f.gens = append(f.gens, g)
	close(f.changed)
	f.changed = make(chan struct{})
	return g
}

func (f *fakeCoord) WatchGenerations(ctx context.Context, after uint64) (<-chan state.Generation, <-chan error) {
	out := make(chan state.Generation)
	go func() {
		defer close(out)
		next := after + 1
		for {
			f.mu.Lock()
			var pending []state.Generation
			for _, g := range f.gens {
				if g.Number >= next {
					pending = append(pending, g)
				}
			}
			ch := f.changed
			f.mu.Unlock()
			for _, g := range pending {
				select {
				case out <- g:
					next = g.Number + 1
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, make(chan error)
}

func (f *fakeCoord) ReportProgress(_ context.Context, p state.Progress) error {
	f.mu.Lock()
	f.reports = append(f.reports, p)
	cb := f.onReport
	f.mu.Unlock()
	if cb != nil {
		cb(p)
	}
	return nil
}

func (f *fakeCoord) PutCheckpoint(_ context.Context, _ state.CheckpointRecord, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ckpts = append(f.ckpts, data)
	return nil
}

func (f *fakeCoord) Activated(context.Context, string, uint64) error { return nil }

func (f *fakeCoord) LinkFailed(_ context.Context, id string, gen uint64, why string) error {
	if f.onLinkFailed != nil {
		f.onLinkFailed(id, gen, why)
	}
	return nil
}

// elasticData makes a fresh copy of the test's dataset (the trainer
// quantizes its embeddings in place, so every worker needs its own).
func elasticData(t *testing.T) *shard.Dataset {
	t.Helper()
	c := sim.DefaultConfig()
	c.TrainRows, c.TestRows, c.Dim, c.Latent, c.Seed = 600, 100, 12, 4, 7
	ds, err := sim.Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func elasticConfig() trainer.Config {
	cfg := trainer.DefaultConfig()
	cfg.Hidden, cfg.Batch, cfg.MaxEpochs, cfg.Patience, cfg.Shards = []int{8, 4}, 32, 4, 4, 12
	cfg.Method = causal.CausalDR
	return cfg
}

// elasticNode is one in-process elastic worker.
type elasticNode struct {
	id     string
	host   *collective.Host
	e      *Elastic
	tr     *trainer.Trainer
	cancel context.CancelFunc
	done   chan error
	model  []float32
}

func startNode(t *testing.T, fc *fakeCoord, id string, lis net.Listener) *elasticNode {
	return startNodeWith(t, fc, id, lis, elasticConfig(), "")
}

func startNodeWith(t *testing.T, fc *fakeCoord, id string, lis net.Listener, cfg trainer.Config, lossy collective.Codec) *elasticNode {
	host, err := collective.NewHost(collective.DefaultHostConfig(), lis)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewElastic(ElasticConfig{ID: id, RingID: "job", Host: host, Coord: fc, Codec: collective.CodecS2, LossyCodec: lossy,
		Shards: cfg.Shards, ProgressEvery: 5, OpTimeout: 20 * time.Second, ReconfigureTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := trainer.New(cfg, elasticData(t), e, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.Attach(tr)
	return &elasticNode{id: id, host: host, e: e, tr: tr, done: make(chan error, 1)}
}

func (n *elasticNode) run(ctx context.Context) {
	ctx, n.cancel = context.WithCancel(ctx)
	go func() {
		err := n.e.Begin(ctx, 20*time.Second, nil)
		if err == nil {
			var res *trainer.StageResult
			res, err = n.tr.Reward(ctx, elasticConfig().Method)
			if err == nil {
				n.model = append([]float32(nil), res.Model.Params...)
				_, _, err = n.tr.Test(ctx, res.Model)
			}
			if err == nil {
				err = n.e.Finish(ctx)
			}
		}
		n.done <- err
	}()
}

func listeners(t *testing.T, ids ...string) (map[string]net.Listener, map[string]string) {
	lis, addrs := map[string]net.Listener{}, map[string]string{}
	for _, id := range ids {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis[id], addrs[id] = l, l.Addr().String()
	}
	return lis, addrs
}

func referenceModel(t *testing.T) []float32 {
	tr, err := trainer.New(elasticConfig(), elasticData(t), trainer.Local{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tr.Reward(context.Background(), elasticConfig().Method)
	if err != nil {
		t.Fatal(err)
	}
	return res.Model.Params
}

func sameBits(a, b []float32) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d parameters, want %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] && !(a[i] != a[i] && b[i] != b[i]) {
			return fmt.Errorf("parameter %d: %v, one process %v", i, a[i], b[i])
		}
	}
	return nil
}

// A worker crashes mid-stage, another joins later and a third leaves: the
// survivors reconcile without restarting, the joiner takes a live peer's
// state, and the model is the one-process model, bit for bit.
func TestElasticCrashJoinLeaveMatchesOneProcess(t *testing.T) {
	want := referenceModel(t)
	fc := newFakeCoord()
	shards := elasticConfig().Shards
	lis, addrs := listeners(t, "a", "b", "c", "d")
	nodes := map[string]*elasticNode{}
	for _, id := range []string{"a", "b", "c"} {
		nodes[id] = startNode(t, fc, id, lis[id])
	}
	var once [3]sync.Once
	ctx := context.Background()
	var dMu sync.Mutex
	var d *elasticNode
	fc.onReport = func(p state.Progress) {
		t.Logf("report %s g=%d %s e%d s%d ranges=%v", p.WorkerID, p.GlobalStep, p.Stage, p.Epoch, p.Step, p.Ranges)
		if p.WorkerID != "a" {
			return
		}
		switch {
		case p.GlobalStep >= 100:
			once[2].Do(func() { fc.commit([]string{"a", "d"}, addrs, shards, "leave:b") })
		case p.GlobalStep >= 20 && p.GlobalStep < 50:
			once[0].Do(func() { // crash c: its goroutine stops, its host goes away
				nodes["c"].cancel()
				nodes["c"].host.Close()
				fc.commit([]string{"a", "b"}, addrs, shards, "crash:c")
			})
		case p.GlobalStep >= 50:
			once[1].Do(func() {
				n := startNode(t, fc, "d", lis["d"])
				n.run(ctx)
				dMu.Lock()
				d = n
				dMu.Unlock()
				fc.commit([]string{"a", "b", "d"}, addrs, shards, "join:d")
			})
		}
	}
	fc.commit([]string{"a", "b", "c"}, addrs, shards, "start")
	for _, id := range []string{"a", "b", "c"} {
		nodes[id].run(ctx)
	}
	if err := <-nodes["a"].done; err != nil {
		t.Fatalf("a: %v", err)
	}
	if err := <-nodes["b"].done; !errors.Is(err, ErrLeft) {
		t.Fatalf("b: want a graceful leave, got %v", err)
	}
	<-nodes["c"].done
	dMu.Lock()
	defer dMu.Unlock()
	if d == nil {
		t.Fatal("the join never happened: training ended before step 80")
	}
	if err := <-d.done; err != nil {
		t.Fatalf("d: %v", err)
	}
	nodes["d"] = d
	for _, id := range []string{"a", "d"} {
		if err := sameBits(nodes[id].model, want); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	for _, n := range nodes {
		n.e.Close()
		n.host.Close()
	}
}

// Survivors one call apart settle it: the one that completed the call
// sends its result; the one behind finishes with it, the one ahead redoes
// its pending call. Both then agree on the next call.
func TestSettleSharesTheCompletedCall(t *testing.T) {
	lis, addrs := listeners(t, "a", "b")
	fc := newFakeCoord()
	g := fc.commit([]string{"a", "b"}, addrs, 4, "start")
	es := map[string]*Elastic{}
	for _, id := range []string{"a", "b"} {
		host, err := collective.NewHost(collective.DefaultHostConfig(), lis[id])
		if err != nil {
			t.Fatal(err)
		}
		defer host.Close()
		e, err := NewElastic(ElasticConfig{ID: id, RingID: "job", Host: host, Coord: fc, Codec: collective.CodecNone, Shards: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		if err := e.openRing(g); err != nil {
			t.Fatal(err)
		}
		es[id] = e
	}
	es["a"].done, es["a"].last = 7, []int64{11, -22, 33} // a completed call 7
	es["b"].done = 6                                     // b did not
	var wg sync.WaitGroup
	res := map[string][]int64{}
	errs := map[string]error{}
	var mu sync.Mutex
	for id, n := range map[string]int{"a": 5, "b": 3} { // a's pending call 8 has 5 words, b's call 7 has 3
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := es[id].settle(context.Background(), n)
			mu.Lock()
			res[id], errs[id] = r, err
			mu.Unlock()
		}()
	}
	wg.Wait()
	if errs["a"] != nil || errs["b"] != nil {
		t.Fatalf("settle: a %v, b %v", errs["a"], errs["b"])
	}
	if res["a"] != nil {
		t.Fatalf("a is ahead: it must redo its pending call, got a result %v", res["a"])
	}
	if fmt.Sprint(res["b"]) != fmt.Sprint([]int64{11, -22, 33}) {
		t.Fatalf("b finished call 7 with %v, a's result was [11 -22 33]", res["b"])
	}
}

// Checkpoints fall due every N steps, and by time at progress reports.
func TestCheckpointDue(t *testing.T) {
	c := &checkpointer{every: 20}
	if !c.due(40) || c.due(30) {
		t.Fatal("every 20 steps: due at 40, not at 30")
	}
	c = &checkpointer{seconds: 0.05}
	if c.due(10) {
		t.Fatal("due before any time passed")
	}
	time.Sleep(60 * time.Millisecond)
	if !c.due(15) {
		t.Fatal("not due 60 ms after the clock started, with a 50 ms interval")
	}
}

// With --reduce fast and the int8 codec, a worker leaving at a step
// boundary hands its error-feedback residual to the donor, which adds it
// to its own: nothing the codec dropped is lost.
func TestElasticLossyLeaveHandsOverResidual(t *testing.T) {
	fc := newFakeCoord()
	cfg := elasticConfig()
	cfg.Reduce = "fast"
	lis, addrs := listeners(t, "a", "b", "c")
	nodes := map[string]*elasticNode{}
	for _, id := range []string{"a", "b", "c"} {
		nodes[id] = startNodeWith(t, fc, id, lis[id], cfg, collective.CodecInt8)
	}
	var mu sync.Mutex
	var before, after, leaver []float32
	record := func(role string, b, a []float32) {
		mu.Lock()
		defer mu.Unlock()
		if role == "leaver" {
			leaver = append([]float32(nil), b...)
			return
		}
		before, after = b, a
	}
	nodes["a"].e.testHandover, nodes["c"].e.testHandover = record, record
	var started []float32 // what a's ring of generation 2 starts with
	nodes["a"].e.Activation = func(g state.Generation) {
		if g.Number == 2 {
			mu.Lock()
			started = nodes["a"].e.ring.Residual()
			mu.Unlock()
		}
	}
	var once sync.Once
	fc.onReport = func(p state.Progress) {
		if p.WorkerID == "a" && p.GlobalStep >= 25 {
			once.Do(func() { fc.commit([]string{"a", "b"}, addrs, cfg.Shards, "leave:c") })
		}
	}
	fc.commit([]string{"a", "b", "c"}, addrs, cfg.Shards, "start")
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		nodes[id].run(ctx)
	}
	if err := <-nodes["c"].done; !errors.Is(err, ErrLeft) {
		t.Fatalf("c: want a graceful leave, got %v", err)
	}
	for _, id := range []string{"a", "b"} {
		if err := <-nodes[id].done; err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	for _, n := range nodes {
		n.e.Close()
		n.host.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(leaver) == 0 || len(before) != len(leaver) || len(after) != len(leaver) {
		t.Fatalf("residuals: leaver %d, donor before %d, after %d elements", len(leaver), len(before), len(after))
	}
	nonzero := 0
	for i := range leaver {
		if leaver[i] != 0 {
			nonzero++
		}
		if want := before[i] + leaver[i]; after[i] != want {
			t.Fatalf("element %d: donor has %v after the leave, want its %v + the leaver's %v", i, after[i], before[i], leaver[i])
		}
	}
	if nonzero == 0 {
		t.Fatal("the leaver's residual is all zero: the test shows nothing")
	}
	if fmt.Sprint(started) != fmt.Sprint(after) {
		t.Fatal("the donor's new ring does not start with the combined residual")
	}
}

package worker

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
)

// The start deadlock: a member of the start generation that first looks
// after a later generation has added a joiner must begin on the start
// generation's ring (it holds the initial state), not wait for a state
// that only its own ring could publish. Here a and b start, c joins, and
// b looks only after both generations exist (as a worker paused while the
// others register would). Without the rule b waits for c's state, c for
// the switch of a ring that waits for b: nobody trains. With it, the
// three train the one-process bits.
func TestBeginAfterAJoinStartsOnTheStartRing(t *testing.T) {
	want := referenceModel(t)
	fc := newFakeCoord()
	shards := elasticConfig().Shards
	lis, addrs := listeners(t, "a", "b", "c")
	nodes := startNodes(t, fc, lis, "a", "b", "c")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fc.commit([]string{"a", "b"}, addrs, shards, "start")
	nodes["a"].run(ctx)
	fc.commit([]string{"a", "b", "c"}, addrs, shards, "join:c")
	// b has seen both generations before it begins.
	deadline := time.Now().Add(10 * time.Second)
	for nodes["b"].e.gens.newest() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	nodes["b"].run(ctx)
	nodes["c"].run(ctx)
	for _, id := range []string{"a", "b", "c"} {
		if err := <-nodes[id].done; err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if err := sameBits(nodes[id].model, want); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
}

// A worker new to the ring that never gets the state (its ring cannot
// switch) fails within its wait, saying what it waited for, instead of
// waiting forever.
func TestBeginJoinerGivesUpNamingTheGeneration(t *testing.T) {
	fc := newFakeCoord()
	shards := elasticConfig().Shards
	lis, addrs := listeners(t, "a", "c")
	a := startNode(t, fc, "a", lis["a"]) // registered, never runs
	c := startNode(t, fc, "c", lis["c"])
	defer func() {
		for _, n := range []*elasticNode{a, c} {
			n.e.Close()
			n.host.Close()
		}
	}()
	fc.commit([]string{"a"}, addrs, shards, "start")
	fc.commit([]string{"a", "c"}, addrs, shards, "join:c")
	start := time.Now()
	err := c.e.Begin(context.Background(), 500*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), "joining generation 2") || !strings.Contains(err.Error(), "[a]") {
		t.Fatalf("got %v, want a failure naming generation 2 and member a", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("gave up after %v", d)
	}
}

// A second crash during the reconciliation of a first one ends the
// settlement at once (as a crash ends any call in flight), instead of the
// survivor waiting for the dead member until its operation timeout: a and
// c survive b's crash, a opens the new ring and settles, c dies before it
// answers, and the generation that removes c arrives. a then finishes with
// the one-process bits, long before the 20 s operation timeout.
func TestCrashDuringReconciliation(t *testing.T) {
	want := referenceModel(t)
	fc := newFakeCoord()
	shards := elasticConfig().Shards
	lis, addrs := listeners(t, "a", "b", "c")
	nodes := startNodes(t, fc, lis, "a", "b", "c")
	crash := func(id string) {
		nodes[id].cancel()
		nodes[id].host.Close()
	}
	var once, second sync.Once
	var crashedAt time.Time
	nodes["a"].e.Activation = func(g state.Generation) {
		if g.Number == 2 { // a is on the ring of {a, c}: c dies before settling
			second.Do(func() {
				crash("c")
				go fc.commit([]string{"a"}, addrs, shards, "crash:c")
			})
		}
	}
	fc.onReport = func(p state.Progress) {
		if p.WorkerID == "a" && p.GlobalStep >= 20 {
			once.Do(func() {
				crashedAt = time.Now()
				crash("b")
				fc.commit([]string{"a", "c"}, addrs, shards, "crash:b")
			})
		}
	}
	ctx := context.Background()
	fc.commit([]string{"a", "b", "c"}, addrs, shards, "start")
	for _, id := range []string{"a", "b", "c"} {
		nodes[id].run(ctx)
	}
	if err := <-nodes["a"].done; err != nil {
		t.Fatalf("a: %v", err)
	}
	<-nodes["b"].done
	<-nodes["c"].done
	if crashedAt.IsZero() {
		t.Fatal("training ended before the crashes")
	}
	if d := time.Since(crashedAt); d > 15*time.Second {
		t.Fatalf("a finished %v after the crashes: the settlement waited for the dead member", d)
	}
	if err := sameBits(nodes["a"].model, want); err != nil {
		t.Fatal(err)
	}
}

// Two joins in quick succession: the ring switches to the first join's
// generation (the newest its member has seen), and a joiner that already
// sees the second must take the state published for the first, not wait
// for one of the second, which only its own ring could publish. Found by
// causalrm chaos (two replacements 56 ms apart: the ring stood still 30 s,
// then reconciled).
func TestJoinAfterANewerJoinTakesTheRingsGeneration(t *testing.T) {
	want := referenceModel(t)
	fc := newFakeCoord()
	shards := elasticConfig().Shards
	lis, addrs := listeners(t, "a", "b", "c")
	nodes := startNodes(t, fc, lis, "a", "b", "c")
	var once sync.Once
	nodes["a"].e.Activation = func(g state.Generation) {
		if g.Number == 2 { // a's ring is now {a, b}; c joins before b looks
			once.Do(func() { fc.commit([]string{"a", "b", "c"}, addrs, shards, "join:c") })
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fc.commit([]string{"a"}, addrs, shards, "start")
	nodes["a"].run(ctx)
	fc.commit([]string{"a", "b"}, addrs, shards, "join:b")
	deadline := time.Now().Add(10 * time.Second)
	for nodes["b"].e.gens.newest() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	nodes["b"].run(ctx)
	nodes["c"].run(ctx)
	start := time.Now()
	for _, id := range []string{"a", "b", "c"} {
		if err := <-nodes[id].done; err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if err := sameBits(nodes[id].model, want); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("the job took %v after the joins: a joiner waited for a state nobody could publish", d)
	}
}

// startNodes starts an elastic node per id on its listener, closed when
// the test ends.
// runToEnd starts the nodes a, b and c of a job whose generation 1 fc
// holds and waits for them: the survivors must finish without error, c
// (lost or gone, unless a survivor) just ends.
func runToEnd(t *testing.T, fc *fakeCoord, nodes map[string]*elasticNode, addrs map[string]string, shards int, survivors ...string) {
	t.Helper()
	fc.commit([]string{"a", "b", "c"}, addrs, shards, "start")
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		nodes[id].run(ctx)
	}
	for _, id := range survivors {
		if err := <-nodes[id].done; err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	if !slices.Contains(survivors, "c") {
		<-nodes["c"].done
	}
}

func startNodes(t *testing.T, fc *fakeCoord, lis map[string]net.Listener, ids ...string) map[string]*elasticNode {
	nodes := map[string]*elasticNode{}
	for _, id := range ids {
		nodes[id] = startNode(t, fc, id, lis[id])
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.e.Close()
			n.host.Close()
		}
	})
	return nodes
}

// A joiner fetching the state from members that died (they accept no
// calls: each fetch would wait its 10 s) begins at once on a restart
// generation that lists it, instead of finishing the fetches first (chaos:
// restart-workers right after a join, 30 s lost).
func TestJoinerTakesARestartWhileFetching(t *testing.T) {
	want := referenceModel(t)
	fc := newFakeCoord()
	shards := elasticConfig().Shards
	lis, addrs := listeners(t, "a", "b", "d") // a and b never serve: dead
	fc.commit([]string{"a", "b"}, addrs, shards, "start")
	fc.commit([]string{"a", "b", "d"}, addrs, shards, "join:d")
	nodes := startNodes(t, fc, lis, "d")
	nodes["d"].run(context.Background())
	time.Sleep(500 * time.Millisecond) // d is fetching from a
	restarted := time.Now()
	fc.commit([]string{"d"}, addrs, shards, "restart,crash:a,crash:b")
	if err := <-nodes["d"].done; err != nil {
		t.Fatalf("d: %v", err)
	}
	if took := time.Since(restarted); took > 8*time.Second {
		t.Fatalf("d finished %v after the restart generation: it finished its fetches from dead members first", took)
	}
	if err := sameBits(nodes["d"].model, want); err != nil {
		t.Fatal(err)
	}
}

package worker

import (
	"context"
	"strings"
	"testing"
	"time"
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
	nodes := map[string]*elasticNode{}
	for _, id := range []string{"a", "b", "c"} {
		nodes[id] = startNode(t, fc, id, lis[id])
	}
	defer func() {
		for _, n := range nodes {
			n.e.Close()
			n.host.Close()
		}
	}()
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

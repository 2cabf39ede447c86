package worker

import (
	"sync"
	"testing"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/tcpproxy"
)

// A link of the ring corrupted while every member is alive (a bit flipped
// in the stream into b): the call fails its checksum, the members report
// the link, the coordinator relinks the same members with a new
// generation, they reconcile the call on fresh connections and finish with
// the one-process bits. Before relinks, the members waited for a crash
// generation that never came (ReconfigureTimeout) and failed.
func TestRelinkAfterCorruptedLink(t *testing.T) {
	want := referenceModel(t)
	fc := newFakeCoord()
	shards := elasticConfig().Shards
	lis, addrs := listeners(t, "a", "b", "c")
	proxy, err := tcpproxy.New(addrs["b"]) // b's predecessor dials b through it
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	ringAddrs := map[string]string{"a": addrs["a"], "b": proxy.Addr(), "c": addrs["c"]}
	nodes := startNodes(t, fc, lis, "a", "b", "c")
	var mangled sync.Once
	var mangledAt time.Time
	fc.onReport = func(p state.Progress) {
		if p.WorkerID == "a" && p.GlobalStep >= 20 {
			mangled.Do(func() {
				mangledAt = time.Now()
				proxy.MangleNext(tcpproxy.Flip, 12345)
			})
		}
	}
	var mu sync.Mutex
	relinked := map[uint64]bool{}
	fc.onLinkFailed = func(id string, gen uint64, why string) {
		mu.Lock()
		defer mu.Unlock()
		if relinked[gen] {
			return
		}
		relinked[gen] = true
		t.Logf("%s reported generation %d: %s", id, gen, why)
		go fc.commit([]string{"a", "b", "c"}, ringAddrs, shards, "relink:"+id)
	}
	runToEnd(t, fc, nodes, ringAddrs, shards, "a", "b", "c")
	if mangledAt.IsZero() {
		t.Fatal("training ended before the link was mangled")
	}
	mu.Lock()
	n := len(relinked)
	mu.Unlock()
	if n == 0 {
		t.Fatal("nobody reported the corrupted link")
	}
	if err := sameBits(nodes["a"].model, want); err != nil {
		t.Fatal(err)
	}
}

// A leaver stopped mid-call (a second SIGTERM): the coordinators commit its
// leave, not a crash, and the survivors' call has failed. They ask for a
// relink of the leave generation and reconcile on it, with the one-process
// bits. Before, they waited for a crash generation that never came.
func TestLeaverGoneMidCall(t *testing.T) {
	want := referenceModel(t)
	fc := newFakeCoord()
	shards := elasticConfig().Shards
	lis, addrs := listeners(t, "a", "b", "c")
	nodes := startNodes(t, fc, lis, "a", "b", "c")
	var left sync.Once
	fc.onReport = func(p state.Progress) {
		if p.WorkerID == "a" && p.GlobalStep >= 20 {
			left.Do(func() {
				nodes["c"].cancel() // gone mid-call, after asking to leave
				nodes["c"].host.Close()
				go fc.commit([]string{"a", "b"}, addrs, shards, "leave:c")
			})
		}
	}
	relinkOnReport(t, fc, addrs, shards, "a", "b")
	runToEnd(t, fc, nodes, addrs, shards, "a", "b")
	if err := sameBits(nodes["a"].model, want); err != nil {
		t.Fatal(err)
	}
}

// A joiner that leaves before it ever trains (a SIGTERM right after its
// join is committed): the members switched to the join's ring wait for it,
// and the coordinators commit a leave, not a crash. The members' call
// fails at the op timeout; they ask for a relink of the leave generation
// and finish on it with the one-process bits. Before, a leave generation
// was not one a reconciliation accepted: they waited until
// ReconfigureTimeout and failed.
func TestJoinerLeavesBeforeTraining(t *testing.T) {
	want := referenceModel(t)
	fc := newFakeCoord()
	shards := elasticConfig().Shards
	lis, addrs := listeners(t, "a", "b", "c", "d") // d listens, never serves
	nodes := startNodes(t, fc, lis, "a", "b", "c")
	for _, n := range nodes {
		n.e.cfg.OpTimeout = 3 * time.Second
	}
	var joined sync.Once
	fc.onReport = func(p state.Progress) {
		if p.WorkerID == "a" && p.GlobalStep >= 20 {
			joined.Do(func() {
				go func() {
					fc.commit([]string{"a", "b", "c", "d"}, addrs, shards, "join:d")
					time.Sleep(200 * time.Millisecond)
					fc.commit([]string{"a", "b", "c"}, addrs, shards, "leave:d")
				}()
			})
		}
	}
	relinkOnReport(t, fc, addrs, shards, "a", "b", "c")
	runToEnd(t, fc, nodes, addrs, shards, "a", "b", "c")
	if err := sameBits(nodes["a"].model, want); err != nil {
		t.Fatal(err)
	}
}

// relinkOnReport makes fc answer the first link report of its current
// generation as the leader does: a relink generation of members (a report
// of an older generation is stale and refused).
func relinkOnReport(t *testing.T, fc *fakeCoord, addrs map[string]string, shards int, members ...string) {
	var mu sync.Mutex
	relinked := map[uint64]bool{}
	fc.onLinkFailed = func(id string, gen uint64, why string) {
		mu.Lock()
		defer mu.Unlock()
		fc.mu.Lock()
		current := uint64(len(fc.gens))
		fc.mu.Unlock()
		if relinked[gen] || gen != current {
			return
		}
		relinked[gen] = true
		t.Logf("%s reported generation %d: %s", id, gen, why)
		go fc.commit(members, addrs, shards, "relink:"+id)
	}
}

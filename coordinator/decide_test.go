package coordinator

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
)

// Helpers of the decide table: workers, members and generations by id.

func dw(id string, st state.WorkerStatus) state.Worker {
	return state.Worker{ID: id, Addr: id + ":7000", Status: st}
}

// activated is an active worker that has trained in a ring.
func activated(id string) state.Worker {
	w := dw(id, state.WorkerActive)
	w.Activated = 1
	return w
}

func dm(ids ...string) []state.Member {
	var ms []state.Member
	for _, id := range ids {
		ms = append(ms, state.Member{ID: id, Addr: id + ":7000"})
	}
	return ms
}

func dcause(text string) state.Cause {
	c, err := state.ParseCause(text)
	if err != nil {
		panic(err)
	}
	return c
}

const decideShards = 8

// dgen is generation n of members ids, balanced from prev.
func dgen(prev state.Generation, n uint64, cause string, ids ...string) state.Generation {
	ms := dm(ids...)
	return state.Generation{Number: n, Members: ms, Owner: state.Rebalance(prev, ms, decideShards), Cause: dcause(cause)}
}

func dead(ids ...string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

func djob(min int) *state.JobSpec {
	return &state.JobSpec{ID: "j", Shards: decideShards, MinWorkers: min}
}

var (
	decideNow    = time.Unix(1_000_000, 0)
	decideWindow = decideConfig{BatchWindow: time.Second}
	decidePast   = observations{changeSince: decideNow.Add(-2 * time.Second)}
	dRunning     = state.JobStatus{Phase: state.JobRunning}
	dPending     = state.JobStatus{Phase: state.JobPending}

	dg1     = dgen(state.Generation{}, 1, "start", "a", "b")
	dg1abc  = dgen(state.Generation{}, 1, "start", "a", "b", "c")
	dg1a    = dgen(state.Generation{}, 1, "start", "a")
	dg2join = dgen(dg1, 2, "join:c", "a", "b", "c") // c joined; it has not trained yet
	dckpts  = []state.CheckpointRecord{{ID: 1, GlobalStep: 10}, {ID: 2, GlobalStep: 20}}
)

// decideCases are the leader's membership decisions, case by case, with
// hand-written plans (in the manner of torchft's quorum tests).
var decideCases = []struct {
	name string
	s    *state.State
	obs  observations
	cfg  decideConfig
	want plan
}{
	{
		name: "no job",
		s:    &state.State{Workers: []state.Worker{dw("a", state.WorkerPending)}},
		cfg:  decideWindow,
		want: plan{},
	},
	{
		name: "job done: nothing to manage",
		s: &state.State{Job: djob(1), Status: state.JobStatus{Phase: state.JobDone},
			Workers: []state.Worker{dw("a", state.WorkerPending)}},
		obs:  observations{dead: dead("a")},
		cfg:  decideWindow,
		want: plan{},
	},
	{
		name: "first generation waits for MinWorkers",
		s:    &state.State{Job: djob(3), Status: dPending, Workers: []state.Worker{dw("a", state.WorkerPending), dw("b", state.WorkerPending)}},
		cfg:  decideWindow,
		want: plan{},
	},
	{
		name: "start at MinWorkers, without waiting for the batch window",
		s:    &state.State{Job: djob(2), Status: dPending, Workers: []state.Worker{dw("a", state.WorkerPending), dw("b", state.WorkerPending)}},
		cfg:  decideWindow,
		want: plan{gen: &state.Generation{Number: 1, Members: dm("a", "b"), Owner: []int{0, 1, 0, 1, 0, 1, 0, 1},
			Cause: state.Cause{{Kind: state.ChangeStart}}}},
	},
	{
		name: "start deregisters a dead pending worker and starts without it",
		s: &state.State{Job: djob(2), Status: dPending,
			Workers: []state.Worker{dw("a", state.WorkerPending), dw("b", state.WorkerPending), dw("c", state.WorkerPending)}},
		obs:  observations{dead: dead("c")},
		cfg:  decideWindow,
		want: plan{deregister: []string{"c"}, gen: &state.Generation{Number: 1, Members: dm("a", "b"), Owner: []int{0, 1, 0, 1, 0, 1, 0, 1}, Cause: dcause("start")}},
	},
	{
		name: "running, nothing changed",
		s:    &state.State{Job: djob(2), Status: dRunning, Workers: []state.Worker{activated("a"), activated("b")}, Generations: []state.Generation{dg1}},
		cfg:  decideWindow,
		want: plan{},
	},
	{
		name: "dead pending worker deregistered, no generation",
		s: &state.State{Job: djob(2), Status: dRunning, Workers: []state.Worker{activated("a"), activated("b"), dw("c", state.WorkerPending)},
			Generations: []state.Generation{dg1}},
		obs:  observations{dead: dead("c")},
		cfg:  decideWindow,
		want: plan{deregister: []string{"c"}},
	},
	{
		name: "join first seen: waits for the batch window",
		s: &state.State{Job: djob(2), Status: dRunning, Workers: []state.Worker{activated("a"), activated("b"), dw("c", state.WorkerPending)},
			Generations: []state.Generation{dg1}},
		cfg:  decideWindow,
		want: plan{pending: true},
	},
	{
		name: "join inside the batch window: still pending",
		s: &state.State{Job: djob(2), Status: dRunning, Workers: []state.Worker{activated("a"), activated("b"), dw("c", state.WorkerPending)},
			Generations: []state.Generation{dg1}},
		obs:  observations{changeSince: decideNow.Add(-999 * time.Millisecond)},
		cfg:  decideWindow,
		want: plan{pending: true},
	},
	{
		name: "joins batched: after the window, one generation adds both",
		s: &state.State{Job: djob(2), Status: dRunning,
			Workers:     []state.Worker{activated("a"), activated("b"), dw("c", state.WorkerPending), dw("d", state.WorkerPending)},
			Generations: []state.Generation{dg1}},
		obs:  decidePast,
		cfg:  decideWindow,
		want: plan{gen: &state.Generation{Number: 2, Members: dm("a", "b", "c", "d"), Owner: state.Rebalance(dg1, dm("a", "b", "c", "d"), decideShards), Cause: dcause("join:c,join:d")}},
	},
	{
		name: "no batch window: a join applies at once",
		s: &state.State{Job: djob(2), Status: dRunning, Workers: []state.Worker{activated("a"), activated("b"), dw("c", state.WorkerPending)},
			Generations: []state.Generation{dg1}},
		cfg:  decideConfig{},
		want: plan{gen: &state.Generation{Number: 2, Members: dm("a", "b", "c"), Owner: dg2join.Owner, Cause: dcause("join:c")}},
	},
	{
		name: "crash removes the member and adds no joiner",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:     []state.Worker{activated("a"), activated("b"), activated("c"), dw("d", state.WorkerPending)},
			Generations: []state.Generation{dg1abc}},
		obs:  observations{dead: dead("b"), changeSince: decidePast.changeSince},
		cfg:  decideWindow,
		want: plan{gen: &state.Generation{Number: 2, Members: dm("a", "c"), Owner: state.Rebalance(dg1abc, dm("a", "c"), decideShards), Cause: dcause("crash:b")}},
	},
	{
		name: "leave removes the member; joiners come in the same generation",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:     []state.Worker{activated("a"), dw("b", state.WorkerLeaving), dw("c", state.WorkerPending)},
			Generations: []state.Generation{dg1}},
		obs:  decidePast,
		cfg:  decideWindow,
		want: plan{gen: &state.Generation{Number: 2, Members: dm("a", "c"), Owner: state.Rebalance(dg1, dm("a", "c"), decideShards), Cause: dcause("leave:b,join:c")}},
	},
	{
		name: "relink waits while a member has not beaten since the report",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:     []state.Worker{activated("a"), activated("b"), activated("c")},
			Generations: []state.Generation{dg1abc},
			Relink:      &state.RelinkRequest{Generation: 1, WorkerID: "b", Time: decideNow.Add(-time.Second).UnixNano()}},
		obs: observations{changeSince: decidePast.changeSince, lastBeat: map[string]time.Time{
			"a": decideNow, "b": decideNow, "c": decideNow.Add(-1500 * time.Millisecond)}},
		cfg:  decideConfig{BatchWindow: time.Second, RelinkWait: 2 * time.Second},
		want: plan{pending: true},
	},
	{
		name: "relink of the same members once every member beat since the report; a joiner waits",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:     []state.Worker{activated("a"), activated("b"), activated("c"), dw("d", state.WorkerPending)},
			Generations: []state.Generation{dg1abc},
			Relink:      &state.RelinkRequest{Generation: 1, WorkerID: "b", Time: decideNow.Add(-time.Second).UnixNano()}},
		obs: observations{changeSince: decidePast.changeSince, lastBeat: map[string]time.Time{
			"a": decideNow, "b": decideNow, "c": decideNow.Add(-500 * time.Millisecond)}},
		cfg:  decideConfig{BatchWindow: time.Second, RelinkWait: 2 * time.Second},
		want: plan{gen: &state.Generation{Number: 2, Members: dm("a", "b", "c"), Owner: dg1abc.Owner, Cause: dcause("relink:b")}},
	},
	{
		name: "relink after RelinkWait even without fresh beats",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:     []state.Worker{activated("a"), activated("b")},
			Generations: []state.Generation{dg1},
			Relink:      &state.RelinkRequest{Generation: 1, WorkerID: "a", Time: decideNow.Add(-3 * time.Second).UnixNano()}},
		obs:  observations{changeSince: decidePast.changeSince},
		cfg:  decideConfig{BatchWindow: time.Second, RelinkWait: 2 * time.Second},
		want: plan{gen: &state.Generation{Number: 2, Members: dm("a", "b"), Owner: dg1.Owner, Cause: dcause("relink:a")}},
	},
	{
		name: "a crash goes before a pending relink, which it makes moot",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:     []state.Worker{activated("a"), activated("b"), activated("c")},
			Generations: []state.Generation{dg1abc},
			Relink:      &state.RelinkRequest{Generation: 1, WorkerID: "a", Time: decideNow.UnixNano()}},
		obs:  observations{dead: dead("b"), changeSince: decidePast.changeSince},
		cfg:  decideConfig{BatchWindow: time.Second, RelinkWait: 2 * time.Second},
		want: plan{gen: &state.Generation{Number: 2, Members: dm("a", "c"), Owner: state.Rebalance(dg1abc, dm("a", "c"), decideShards), Cause: dcause("crash:b")}},
	},
	{
		name: "a relink drops a member whose join has not taken effect (unready)",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:     []state.Worker{activated("a"), activated("b"), dw("c", state.WorkerActive)},
			Generations: []state.Generation{dg1, dg2join},
			Relink:      &state.RelinkRequest{Generation: 2, WorkerID: "a", Time: decideNow.Add(-3 * time.Second).UnixNano()}},
		obs:  observations{changeSince: decidePast.changeSince},
		cfg:  decideConfig{BatchWindow: time.Second, RelinkWait: 2 * time.Second},
		want: plan{gen: &state.Generation{Number: 3, Members: dm("a", "b"), Owner: state.Rebalance(dg2join, dm("a", "b"), decideShards), Cause: dcause("unready:c,relink:a")}},
	},
	{
		name: "the job fails after MaxRelinks relinks in a row at the same step",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:      []state.Worker{activated("a"), activated("b")},
			Generations:  []state.Generation{dg1},
			Watermark:    state.Watermark{GlobalStep: 7},
			RelinkStreak: &state.RelinkStreak{Count: state.MaxRelinks, GlobalStep: 7},
			Relink:       &state.RelinkRequest{Generation: 1, WorkerID: "a", Message: "shape mismatch", Time: decideNow.Add(-3 * time.Second).UnixNano()}},
		obs:  observations{changeSince: decidePast.changeSince},
		cfg:  decideConfig{BatchWindow: time.Second, RelinkWait: 2 * time.Second},
		want: plan{fail: fmt.Sprintf("the ring failed at global step 7 after %d relinks in a row (the same call fails on fresh connections: not a link fault); last report by a: shape mismatch", state.MaxRelinks)},
	},
	{
		name: "a relink streak with a step committed since relinks again",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:      []state.Worker{activated("a"), activated("b")},
			Generations:  []state.Generation{dg1},
			Watermark:    state.Watermark{GlobalStep: 8},
			RelinkStreak: &state.RelinkStreak{Count: state.MaxRelinks, GlobalStep: 7},
			Relink:       &state.RelinkRequest{Generation: 1, WorkerID: "a", Time: decideNow.Add(-3 * time.Second).UnixNano()}},
		obs:  observations{changeSince: decidePast.changeSince},
		cfg:  decideConfig{BatchWindow: time.Second, RelinkWait: 2 * time.Second},
		want: plan{gen: &state.Generation{Number: 2, Members: dm("a", "b"), Owner: dg1.Owner, Cause: dcause("relink:a")}},
	},
	{
		name: "a relink of an older generation is stale",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:     []state.Worker{activated("a"), activated("b"), activated("c")},
			Generations: []state.Generation{dg1, dg2join},
			Relink:      &state.RelinkRequest{Generation: 1, WorkerID: "a", Time: decideNow.Add(-time.Minute).UnixNano()}},
		obs:  observations{changeSince: decidePast.changeSince},
		cfg:  decideConfig{BatchWindow: time.Second, RelinkWait: 2 * time.Second},
		want: plan{},
	},
	{
		name: "crash and leave together",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:     []state.Worker{activated("a"), dw("b", state.WorkerLeaving), activated("c")},
			Generations: []state.Generation{dg1abc}},
		obs:  observations{dead: dead("c"), changeSince: decidePast.changeSince},
		cfg:  decideWindow,
		want: plan{gen: &state.Generation{Number: 2, Members: dm("a"), Owner: make([]int, decideShards), Cause: dcause("crash:c,leave:b")}},
	},
	{
		name: "crash drops a member whose join has not taken effect (unready)",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:     []state.Worker{activated("a"), activated("b"), dw("c", state.WorkerActive)},
			Generations: []state.Generation{dg1, dg2join}},
		obs:  observations{dead: dead("b"), changeSince: decidePast.changeSince},
		cfg:  decideWindow,
		want: plan{gen: &state.Generation{Number: 3, Members: dm("a"), Owner: make([]int, decideShards), Cause: dcause("crash:b,unready:c")}},
	},
	{
		name: "members of the start generation hold the state before they trained",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:     []state.Worker{dw("a", state.WorkerActive), dw("b", state.WorkerActive), dw("c", state.WorkerActive)},
			Generations: []state.Generation{dg1abc}},
		obs:  observations{dead: dead("c"), changeSince: decidePast.changeSince},
		cfg:  decideWindow,
		want: plan{gen: &state.Generation{Number: 2, Members: dm("a", "b"), Owner: state.Rebalance(dg1abc, dm("a", "b"), decideShards), Cause: dcause("crash:c")}},
	},
	{
		name: "every member crashed: restart with a rewind to the latest checkpoint at or below the watermark",
		s: &state.State{Job: djob(2), Status: dRunning,
			Workers:     []state.Worker{activated("a"), activated("b"), dw("d", state.WorkerPending), dw("e", state.WorkerPending)},
			Generations: []state.Generation{dg1}, Checkpoints: dckpts, Watermark: state.Watermark{GlobalStep: 25}},
		obs: observations{dead: dead("a", "b"), changeSince: decidePast.changeSince},
		cfg: decideWindow,
		want: plan{
			rewind: &state.Command{Op: state.OpRewind, GlobalStep: 20, CheckpointID: 2},
			gen: &state.Generation{Number: 2, Members: dm("d", "e"), Owner: []int{0, 1, 0, 1, 0, 1, 0, 1},
				Cause: dcause("restart,crash:a,crash:b")},
		},
	},
	{
		name: "restart: a latest checkpoint beyond the watermark is not used",
		s: &state.State{Job: djob(1), Status: dRunning,
			Workers:     []state.Worker{activated("a"), activated("b"), dw("d", state.WorkerPending)},
			Generations: []state.Generation{dg1}, Checkpoints: dckpts, Watermark: state.Watermark{GlobalStep: 15}},
		obs: observations{dead: dead("a", "b"), changeSince: decidePast.changeSince},
		cfg: decideWindow,
		want: plan{
			rewind: &state.Command{Op: state.OpRewind},
			gen:    &state.Generation{Number: 2, Members: dm("d"), Owner: make([]int, decideShards), Cause: dcause("restart,crash:a,crash:b")},
		},
	},
	{
		name: "restart: the unready members and the joiners begin together",
		s: &state.State{Job: djob(2), Status: dRunning,
			Workers:     []state.Worker{activated("a"), dw("c", state.WorkerActive), dw("d", state.WorkerPending)},
			Generations: []state.Generation{dg1a, dgen(dg1a, 2, "join:c", "a", "c")},
			Watermark:   state.Watermark{GlobalStep: 5}},
		obs: observations{dead: dead("a"), changeSince: decidePast.changeSince},
		cfg: decideWindow,
		want: plan{
			rewind: &state.Command{Op: state.OpRewind},
			gen: &state.Generation{Number: 3, Members: dm("c", "d"), Owner: []int{0, 1, 0, 1, 0, 1, 0, 1},
				Cause: dcause("restart,crash:a,unready:c")},
		},
	},
	{
		name: "restart waits for MinWorkers; the leader looks isolated",
		s: &state.State{Job: djob(2), Status: dRunning,
			Workers:     []state.Worker{activated("a"), activated("b"), dw("d", state.WorkerPending)},
			Generations: []state.Generation{dg1}, Checkpoints: dckpts, Watermark: state.Watermark{GlobalStep: 25}},
		obs:  observations{dead: dead("a", "b"), changeSince: decidePast.changeSince},
		cfg:  decideWindow,
		want: plan{isolated: true},
	},
	{
		name: "isolated is known inside the batch window too",
		s:    &state.State{Job: djob(2), Status: dRunning, Workers: []state.Worker{activated("a"), activated("b")}, Generations: []state.Generation{dg1}},
		obs:  observations{dead: dead("a", "b")},
		cfg:  decideWindow,
		want: plan{isolated: true, pending: true},
	},
	{
		name: "not isolated while one member is heard",
		s:    &state.State{Job: djob(2), Status: dRunning, Workers: []state.Worker{activated("a"), activated("b")}, Generations: []state.Generation{dg1}},
		obs:  observations{dead: dead("a")},
		cfg:  decideWindow,
		want: plan{pending: true},
	},
}

// TestDecide runs decideCases: decide gives the plan, leaves the state as
// it was, and gives the same plan again.
func TestDecide(t *testing.T) {
	for _, tc := range decideCases {
		t.Run(tc.name, func(t *testing.T) {
			before, err := json.Marshal(tc.s)
			if err != nil {
				t.Fatal(err)
			}
			got := decide(decideNow, tc.s, tc.obs, tc.cfg)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("decide:\n got %s\nwant %s", showPlan(got), showPlan(tc.want))
			}
			if after, _ := json.Marshal(tc.s); string(after) != string(before) {
				t.Fatalf("decide changed the state:\n%s\n%s", before, after)
			}
			// decide is a function of its arguments.
			if again := decide(decideNow, tc.s, tc.obs, tc.cfg); !reflect.DeepEqual(again, got) {
				t.Fatalf("decide again: %s", showPlan(again))
			}
		})
	}
}

func showPlan(p plan) string {
	s := fmt.Sprintf("{isolated:%v pending:%v deregister:%q", p.isolated, p.pending, p.deregister)
	if p.rewind != nil {
		s += fmt.Sprintf(" rewind:{step %d checkpoint %d}", p.rewind.GlobalStep, p.rewind.CheckpointID)
	}
	if p.gen != nil {
		s += fmt.Sprintf(" gen:{%d %q members %v owner %v}", p.gen.Number, p.gen.Cause.String(), p.gen.Members, p.gen.Owner)
	}
	return s + "}"
}

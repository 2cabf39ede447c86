package trainer

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/causalrm/causalrm/causal"
)

// memGroup is an in-memory reducer shared by n holders: each collective call
// blocks until all n have made it, then every holder gets the same result
// (summed in rank order). It stands in for the network ring so that the
// trainer's distributed logic is tested on its own.
//
// With plan set it is elastic: plan is asked, once per completed call
// (in call order, under the group's lock), whether the membership changes
// there; see groupAction.
type memGroup struct {
	n    int
	mu   sync.Mutex
	cond *sync.Cond
	in   [][]any      // contributions per op number, by rank
	out  []*memResult // combined result per op number
	plan func(op int) *groupAction
}

type memResult struct {
	val any
	act *groupAction
}

// groupAction is an ownership change at one call. redo: every holder gets
// Own(parts[rank]) and ErrRedo instead of the result (and calls again).
// Otherwise the call completes for everybody and then the ownership moves:
// a holder with told[rank] gets Own(parts[rank]) inside the call before it
// returns nil; the others get it at the start of their next call, which
// returns ErrRedo at once (they were already past the completed call, as a
// survivor of a failure is).
type groupAction struct {
	redo  bool
	parts [][]int
	told  []bool
}

func newMemGroup(n int) *memGroup {
	g := &memGroup{n: n, in: make([][]any, 0)}
	g.cond = sync.NewCond(&g.mu)
	return g
}

type memMember struct {
	g       *memGroup
	rank    int
	ops     int
	tr      *Trainer // the holder's trainer, for Own (elastic groups)
	pending []int    // an ownership to take at the next call
	moved   bool     // pending is set
	redos   int      // ErrRedo returned
	moves   int      // ownership changes taken
}

func (g *memGroup) member(rank int) *memMember { return &memMember{g: g, rank: rank} }

// exchange deposits v as this member's contribution to op number m.ops and
// returns the combined value once every member has contributed.
func (m *memMember) exchange(v any, combine func([]any) any) *memResult {
	g := m.g
	g.mu.Lock()
	defer g.mu.Unlock()
	op := m.ops
	m.ops++
	for len(g.in) <= op {
		g.in = append(g.in, make([]any, g.n))
	}
	g.in[op][m.rank] = v
	full := true
	for _, x := range g.in[op] {
		full = full && x != nil
	}
	if full {
		for len(g.out) <= op {
			g.out = append(g.out, nil)
		}
		res := &memResult{val: combine(g.in[op])}
		if g.plan != nil {
			res.act = g.plan(op)
		}
		g.out[op] = res
		g.cond.Broadcast()
	}
	for len(g.out) <= op || g.out[op] == nil {
		g.cond.Wait()
	}
	return g.out[op]
}

// call runs one collective call with the group's elastic behaviour.
func (m *memMember) call(v any, combine func([]any) any, fill func(any)) error {
	if m.moved {
		p := m.pending
		m.pending, m.moved = nil, false
		m.moves++
		if err := m.tr.Own(p); err != nil {
			return err
		}
		m.redos++
		return fmt.Errorf("memGroup rank %d: ownership moved after the last call: %w", m.rank, ErrRedo)
	}
	res := m.exchange(v, combine)
	act := res.act
	if act != nil && act.redo {
		m.moves++
		if err := m.tr.Own(act.parts[m.rank]); err != nil {
			return err
		}
		m.redos++
		return fmt.Errorf("memGroup rank %d: membership changed: %w", m.rank, ErrRedo)
	}
	fill(res.val)
	if act != nil {
		if act.told[m.rank] {
			m.moves++
			return m.tr.Own(act.parts[m.rank])
		}
		m.pending, m.moved = act.parts[m.rank], true
	}
	return nil
}

func (m *memMember) MaxFloat64(_ context.Context, v []float64) error {
	return m.call(append([]float64(nil), v...), func(xs []any) any {
		out := append([]float64(nil), xs[0].([]float64)...)
		for _, x := range xs[1:] {
			for i, e := range x.([]float64) {
				out[i] = max(out[i], e)
			}
		}
		return out
	}, func(r any) { copy(v, r.([]float64)) })
}

func (m *memMember) SumInt64(_ context.Context, v []int64) error {
	return m.call(append([]int64(nil), v...), func(xs []any) any {
		out := make([]int64, len(xs[0].([]int64)))
		for _, x := range xs {
			for i, e := range x.([]int64) {
				out[i] += e
			}
		}
		return out
	}, func(r any) { copy(v, r.([]int64)) })
}

func (m *memMember) SumFloat32(_ context.Context, v []float32) error {
	return m.call(append([]float32(nil), v...), func(xs []any) any {
		out := make([]float32, len(xs[0].([]float32)))
		for _, x := range xs {
			for i, e := range x.([]float32) {
				out[i] += e
			}
		}
		return out
	}, func(r any) { copy(v, r.([]float32)) })
}

// N holders owning disjoint shard sets train the same bits as one process
// holding everything, for every estimator: the design's universal oracle.
func TestShardedHoldersMatchSingleProcess(t *testing.T) {
	cfg := smallConfig()
	cfg.Hidden = []int{16, 8}
	cfg.Batch = 128
	cfg.MaxEpochs = 3
	cfg.Shards = 8
	cfg.Propensity = "learn"
	cfg.FlipRates = nil
	for _, m := range causal.AllMethods() {
		want := func() []byte {
			tr, err := New(cfg, smallData(t, 900, 24, 4), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			res, err := tr.Reward(context.Background(), m)
			if err != nil {
				t.Fatal(err)
			}
			return paramBytes(res.Model.Params)
		}()
		for _, n := range []int{2, 3} {
			g := newMemGroup(n)
			got := make([][]byte, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for rank := 0; rank < n; rank++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tr, err := holderTrainer(t, cfg, g, rank, n)
					if err != nil {
						errs[rank] = err
						return
					}
					res, err := tr.Reward(context.Background(), m)
					if err != nil {
						errs[rank] = err
						return
					}
					got[rank] = paramBytes(res.Model.Params)
				}()
			}
			wg.Wait()
			for rank := 0; rank < n; rank++ {
				if errs[rank] != nil {
					t.Fatalf("%s, %d holders, rank %d: %v", m, n, rank, errs[rank])
				}
				if !bytes.Equal(got[rank], want) {
					t.Fatalf("%s: %d holders, rank %d trained other bits than one process", m, n, rank)
				}
			}
		}
	}
}

func paramBytes(p []float32) []byte {
	var b bytes.Buffer
	for _, v := range p {
		fmt.Fprintf(&b, "%08x", math.Float32bits(v))
	}
	return b.Bytes()
}

// holderTrainer is rank's trainer of a group of n holders on the small
// data, owning the shards s with s mod n == rank.
func holderTrainer(t *testing.T, cfg Config, g *memGroup, rank, n int) (*Trainer, error) {
	tr, err := New(cfg, smallData(t, 900, 24, 4), g.member(rank), nil)
	if err != nil {
		return nil, err
	}
	var mine []int
	for s := rank; s < cfg.Shards; s += n {
		mine = append(mine, s)
	}
	return tr, tr.Own(mine)
}

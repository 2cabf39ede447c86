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
type memGroup struct {
	n    int
	mu   sync.Mutex
	cond *sync.Cond
	in   [][]any // contributions per op number, by rank
	out  []any   // combined result per op number
}

func newMemGroup(n int) *memGroup {
	g := &memGroup{n: n, in: make([][]any, 0)}
	g.cond = sync.NewCond(&g.mu)
	return g
}

type memMember struct {
	g    *memGroup
	rank int
	ops  int
}

func (g *memGroup) member(rank int) *memMember { return &memMember{g: g, rank: rank} }

// exchange deposits v as this member's contribution to op number m.ops and
// returns the combined value once every member has contributed.
func (m *memMember) exchange(v any, combine func([]any) any) any {
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
		g.out[op] = combine(g.in[op])
		g.cond.Broadcast()
	}
	for len(g.out) <= op || g.out[op] == nil {
		g.cond.Wait()
	}
	return g.out[op]
}

func (m *memMember) MaxFloat64(_ context.Context, v []float64) error {
	r := m.exchange(append([]float64(nil), v...), func(xs []any) any {
		out := append([]float64(nil), xs[0].([]float64)...)
		for _, x := range xs[1:] {
			for i, e := range x.([]float64) {
				out[i] = max(out[i], e)
			}
		}
		return out
	}).([]float64)
	copy(v, r)
	return nil
}

func (m *memMember) SumInt64(_ context.Context, v []int64) error {
	r := m.exchange(append([]int64(nil), v...), func(xs []any) any {
		out := make([]int64, len(xs[0].([]int64)))
		for _, x := range xs {
			for i, e := range x.([]int64) {
				out[i] += e
			}
		}
		return out
	}).([]int64)
	copy(v, r)
	return nil
}

func (m *memMember) SumFloat32(_ context.Context, v []float32) error {
	r := m.exchange(append([]float32(nil), v...), func(xs []any) any {
		out := make([]float32, len(xs[0].([]float32)))
		for _, x := range xs {
			for i, e := range x.([]float32) {
				out[i] += e
			}
		}
		return out
	}).([]float32)
	copy(v, r)
	return nil
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
					tr, err := New(cfg, smallData(t, 900, 24, 4), g.member(rank), nil)
					if err == nil {
						var mine []int
						for s := rank; s < cfg.Shards; s += n {
							mine = append(mine, s)
						}
						err = tr.Own(mine)
					}
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

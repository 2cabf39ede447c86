package collective

import (
	"math/bits"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/mem"
)

// dirtyPool is a gRPC buffer pool that does not zero the buffers it hands
// out again. gRPC's default pool clears every reused buffer, which for
// multi-megabyte segment streams was a quarter of the CPU time of a
// loopback all-reduce; gRPC overwrites every byte of the length it asks
// for before reading it, so nothing stale is ever read. Buffers are kept
// in power-of-two classes from 256 B to 16 MiB.
//
// The classes of ring chunks (64 KiB to 1 MiB) also keep a stash that the
// garbage collector does not empty (sync.Pool does at every other GC, and a
// reallocated chunk buffer costs its zeroing and page faults): at most
// stashBytes in all, last in first out, so that the buffer handed out is the
// one most likely still in cache. A ring's peak of buffers in flight (its
// inbox, the segments queued for the successor) is what stays stashed.
type dirtyPool struct {
	classes [maxClass + 1]sync.Pool
	stash   [maxClass + 1]stack
}

var stashed atomic.Int64 // bytes in the stashes

type stack struct {
	mu   sync.Mutex
	bufs []*[]byte // cap: the most kept
}

func (s *stack) pop() *[]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.bufs)
	if n == 0 {
		return nil
	}
	b := s.bufs[n-1]
	s.bufs[n-1] = nil
	s.bufs = s.bufs[:n-1]
	stashed.Add(-int64(cap(*b)))
	return b
}

func (s *stack) push(b *[]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.bufs) == cap(s.bufs) {
		return false
	}
	if n := int64(cap(*b)); stashed.Add(n) > stashBytes {
		stashed.Add(-n)
		return false
	}
	s.bufs = append(s.bufs, b)
	return true
}

const stashMin, stashMax, stashBytes = 16, 20, 32 << 20

func newDirtyPool() *dirtyPool {
	p := &dirtyPool{}
	for c := stashMin; c <= stashMax; c++ {
		p.stash[c].bufs = make([]*[]byte, 0, stashBytes>>c)
	}
	return p
}

const minClass, maxClass = 8, 24

var _ mem.BufferPool = (*dirtyPool)(nil)

var sharedPool = newDirtyPool()

func classOf(n int) int {
	if n <= 1<<minClass {
		return minClass
	}
	return bits.Len(uint(n - 1))
}

func (p *dirtyPool) Get(length int) *[]byte {
	c := classOf(length)
	if c > maxClass {
		b := make([]byte, length)
		return &b
	}
	if b := p.stash[c].pop(); b != nil { // none outside the stashed classes
		*b = (*b)[:length]
		return b
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		*b = (*b)[:length]
		return b
	}
	b := make([]byte, length, 1<<c)
	return &b
}

func (p *dirtyPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minClass || c > 1<<maxClass || c&(c-1) != 0 {
		return
	}
	k := bits.Len(uint(c)) - 1
	if !p.stash[k].push(b) {
		p.classes[k].Put(b)
	}
}

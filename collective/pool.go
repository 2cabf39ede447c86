package collective

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// dirtyPool is a gRPC buffer pool that does not zero the buffers it hands
// out again. gRPC's default pool clears every reused buffer, which for
// multi-megabyte segment streams was a quarter of the CPU time of a
// loopback all-reduce; gRPC overwrites every byte of the length it asks
// for before reading it, so nothing stale is ever read. Buffers are kept
// in power-of-two classes from 256 B to 16 MiB.
//
// The classes of ring chunks (64 KiB to 1 MiB) also keep a small stash that
// the garbage collector does not empty (sync.Pool does at every other GC,
// and a reallocated chunk buffer costs its zeroing): at most stashBytes
// per class.
type dirtyPool struct {
	classes [maxClass + 1]sync.Pool
	stash   [maxClass + 1]chan *[]byte
}

const stashMin, stashMax, stashBytes = 16, 20, 16 << 20

func newDirtyPool() *dirtyPool {
	p := &dirtyPool{}
	for c := stashMin; c <= stashMax; c++ {
		p.stash[c] = make(chan *[]byte, stashBytes>>c)
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
	select {
	case b := <-p.stash[c]: // nil channel outside the stashed classes
		*b = (*b)[:length]
		return b
	default:
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
	select {
	case p.stash[k] <- b:
	default:
		p.classes[k].Put(b)
	}
}

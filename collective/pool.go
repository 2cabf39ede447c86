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
type dirtyPool struct {
	classes [maxClass + 1]sync.Pool
}

const minClass, maxClass = 8, 24

var _ mem.BufferPool = (*dirtyPool)(nil)

var sharedPool = &dirtyPool{}

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
	p.classes[bits.Len(uint(c))-1].Put(b)
}

package collective

import (
	"sync"
	"sync/atomic"
)

// sendQueue is the unbounded FIFO between the op goroutine and the sender
// goroutine. Being unbounded (it holds at most ~2x one vector per op) means
// the op goroutine never blocks on a send, which is what keeps the ring
// free of send/receive deadlocks whatever the buffer sizes.
type sendQueue struct {
	mu     sync.Mutex
	items  []outSegment
	head   int
	closed bool // no more pushes; pop drains what is left, then reports false
	dead   bool // the stream failed: drop everything
	notify chan struct{}
	pushed uint64 // segments accepted so far

	// written counts the segments the sender has handed to the kernel, in
	// push order; wrote is signalled each time it grows. A segment whose
	// payload aliases the caller's vector (zero-copy) is done with once
	// written reaches its push number.
	written atomic.Uint64
	wrote   chan struct{}
}

func newSendQueue() *sendQueue {
	return &sendQueue{notify: make(chan struct{}, 1), wrote: make(chan struct{}, 1)}
}

// markWritten records that the sender has written n more segments.
func (q *sendQueue) markWritten(n int) {
	q.written.Add(uint64(n))
	select {
	case q.wrote <- struct{}{}:
	default:
	}
}

func (q *sendQueue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// push queues s and returns its push number (from 1), or 0 if the queue no
// longer takes segments.
func (q *sendQueue) push(s outSegment) uint64 {
	q.mu.Lock()
	if q.closed || q.dead {
		q.mu.Unlock()
		return 0
	}
	q.items = append(q.items, s)
	q.pushed++
	n := q.pushed
	q.mu.Unlock()
	q.wake()
	return n
}

// pop blocks until a segment is queued; false once closed and drained, or
// dead.
func (q *sendQueue) pop() (outSegment, bool) {
	for {
		q.mu.Lock()
		if q.dead {
			q.mu.Unlock()
			return outSegment{}, false
		}
		if q.head < len(q.items) {
			s := q.items[q.head]
			q.items[q.head] = outSegment{}
			q.head++
			if q.head == len(q.items) {
				q.items, q.head = q.items[:0], 0
			}
			q.mu.Unlock()
			return s, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return outSegment{}, false
		}
		<-q.notify
	}
}

// popAll blocks until a segment is queued, then appends every queued one
// to dst; false once closed and drained, or dead.
func (q *sendQueue) popAll(dst []outSegment) ([]outSegment, bool) {
	for {
		q.mu.Lock()
		if q.dead {
			q.mu.Unlock()
			return dst, false
		}
		if q.head < len(q.items) {
			dst = append(dst, q.items[q.head:]...)
			clear(q.items)
			q.items, q.head = q.items[:0], 0
			q.mu.Unlock()
			return dst, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return dst, false
		}
		<-q.notify
	}
}

func (q *sendQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.wake()
}

func (q *sendQueue) abandon() {
	q.mu.Lock()
	q.dead = true
	q.items, q.head = nil, 0
	q.mu.Unlock()
	q.wake()
}

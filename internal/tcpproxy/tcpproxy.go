// Package tcpproxy is a user-space TCP proxy that can be cut: fault
// injection without network namespaces (causalrm chaos, and the tests that
// cut a coordinator off from its workers).
package tcpproxy

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards TCP connections from its own address on 127.0.0.1 to a
// target. Clients dial the proxy, so a fault can cut the target off from
// them (every connection dropped, new ones refused) while whatever does
// not go through the proxy still reaches it.
type Proxy struct {
	lis    net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]bool
	cut    bool
	wg     sync.WaitGroup

	delay  atomic.Int64  // nanoseconds each chunk is held (SetDelay)
	mangle atomic.Uint64 // pending one-shot Mangle and its seed (MangleNext)
}

// Mangle is a one-shot change to the byte stream, as a faulty link or a
// buggy middlebox would make it: the receiver's framing must notice.
type Mangle uint8

// The manglings MangleNext applies to the next chunk forwarded.
const (
	// Flip inverts one bit of the chunk.
	Flip Mangle = iota + 1
	// Duplicate forwards the chunk twice.
	Duplicate
	// Swap forwards the chunk after the one that follows it (when one
	// follows within 200 ms; else the chunk goes on unchanged).
	Swap
	// Drop forwards nothing of the chunk.
	Drop
)

func (m Mangle) String() string {
	switch m {
	case Flip:
		return "flip"
	case Duplicate:
		return "duplicate"
	case Swap:
		return "swap"
	case Drop:
		return "drop"
	}
	return "none"
}

// SetDelay holds every chunk forwarded (in both directions) for d before it
// goes on: a slow link. 0 ends it.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// MangleNext applies m to the next chunk forwarded in either direction;
// seed picks the bit a Flip inverts.
func (p *Proxy) MangleNext(m Mangle, seed uint32) {
	p.mangle.Store(uint64(m)<<32 | uint64(seed))
}

// New starts a proxy to target on a free port of 127.0.0.1.
func New(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{lis: l, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.mu.Unlock()
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		if p.cut { // cut while dialling
			p.mu.Unlock()
			in.Close()
			out.Close()
			continue
		}
		p.conns[in], p.conns[out] = true, true
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(p.delay.Load()); d > 0 {
				time.Sleep(d)
			}
			if werr := p.forward(dst, src, buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// forward writes chunk to dst, mangled when a mangling is pending.
func (p *Proxy) forward(dst, src net.Conn, chunk []byte) error {
	v := p.mangle.Swap(0)
	switch Mangle(v >> 32) {
	case Flip:
		bit := uint32(v) % uint32(8*len(chunk))
		chunk[bit/8] ^= 1 << (bit % 8)
	case Duplicate:
		if _, err := dst.Write(chunk); err != nil {
			return err
		}
	case Drop:
		return nil
	case Swap:
		held := append([]byte(nil), chunk...)
		next := make([]byte, 32<<10)
		_ = src.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := src.Read(next)
		_ = src.SetReadDeadline(time.Time{})
		if n > 0 {
			if _, werr := dst.Write(next[:n]); werr != nil {
				return werr
			}
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			_, _ = dst.Write(held)
			return err
		}
		chunk = held
	}
	_, err := dst.Write(chunk)
	return err
}

// Partition cuts every connection through the proxy and refuses new ones
// (cut true), or lets them through again (cut false).
func (p *Proxy) Partition(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
}

// Close stops the proxy and every connection through it.
func (p *Proxy) Close() {
	p.lis.Close()
	p.Partition(true)
	p.wg.Wait()
}

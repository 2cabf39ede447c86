// Package tcpproxy is a user-space TCP proxy that can be cut: fault
// injection without network namespaces (causalrm chaos, and the tests that
// cut a coordinator off from its workers).
package tcpproxy

import (
	"net"
	"sync"
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
			if _, werr := dst.Write(buf[:n]); werr != nil {
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

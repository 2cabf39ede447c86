package tcpproxy

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// The proxy forwards both ways; cut, it drops the connections through it
// and refuses new ones; healed, it forwards again.
func TestForwardCutHeal(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
	p, err := New(echo.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	roundTrip := func() error {
		c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && got != "ping\n" {
			t.Fatalf("echo %q", got)
		}
		return err
	}
	if err := roundTrip(); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	held, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	time.Sleep(50 * time.Millisecond) // the proxy has dialled the target
	p.Partition(true)
	held.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := held.Read(make([]byte, 1)); err == nil {
		t.Fatal("a connection survived the cut")
	}
	if err := roundTrip(); err == nil {
		t.Fatal("a new connection went through the cut")
	}
	p.Partition(false)
	if err := roundTrip(); err != nil {
		t.Fatalf("after healing: %v", err)
	}
}

// Each mangling changes the stream as documented, once, and the stream is
// forwarded unchanged afterwards; SetDelay holds chunks.
func TestMangleAndDelay(t *testing.T) {
	sink, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	got := make(chan []byte, 1)
	go func() {
		for {
			c, err := sink.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var all []byte
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					all = append(all, buf[:n]...)
					if err != nil {
						got <- all
						return
					}
				}
			}()
		}
	}()
	p, err := New(sink.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// send writes chunks 100 ms apart (each its own read at the proxy),
	// with m pending before the first, and returns what arrived.
	send := func(m Mangle, chunks ...string) string {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		if m != 0 {
			p.MangleNext(m, 11)
		}
		for _, ch := range chunks {
			c.Write([]byte(ch))
			time.Sleep(100 * time.Millisecond)
		}
		c.Close()
		select {
		case b := <-got:
			return string(b)
		case <-time.After(5 * time.Second):
			t.Fatal("nothing arrived")
			return ""
		}
	}
	for _, tc := range []struct {
		m    Mangle
		want string
	}{
		{0, "AAAABBBB"},
		{Duplicate, "AAAAAAAABBBB"},
		{Swap, "BBBBAAAA"},
		{Drop, "BBBB"},
		{Flip, "AIAABBBB"}, // bit 11 of "AAAA": byte 1, bit 3 ('A' ^ 8 = 'I')
	} {
		if s := send(tc.m, "AAAA", "BBBB"); s != tc.want {
			t.Errorf("%v: got %q, want %q", tc.m, s, tc.want)
		}
	}
	p.SetDelay(300 * time.Millisecond)
	start := time.Now()
	if s := send(0, "AAAA"); s != "AAAA" {
		t.Errorf("delayed: got %q", s)
	}
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Errorf("a delayed chunk arrived after %v", el)
	}
	p.SetDelay(0)
}

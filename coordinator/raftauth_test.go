package coordinator

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// rogueRaft sends real raft RPCs to target from a transport that knows no
// token: a RequestVote of a far higher term (which makes a raft node step
// down and adopt the term) and an AppendEntries claiming leadership.
func rogueRaft(t *testing.T, target string) (voteErr, appendErr error) {
	t.Helper()
	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("rogue"), Addr: []byte(tr.LocalAddr())}
	var vr raft.RequestVoteResponse
	voteErr = tr.RequestVote("x", raft.ServerAddress(target), &raft.RequestVoteRequest{
		RPCHeader: hdr, Term: 1 << 40, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40}, &vr)
	var ar raft.AppendEntriesResponse
	appendErr = tr.AppendEntries("x", raft.ServerAddress(target), &raft.AppendEntriesRequest{
		RPCHeader: hdr, Term: 1 << 41, PrevLogEntry: 0, PrevLogTerm: 0, LeaderCommitIndex: 0}, &ar)
	return voteErr, appendErr
}

func raftTerm(n *Node) uint64 {
	v, _ := strconv.ParseUint(n.raft.Stats()["term"], 10, 64)
	return v
}

// With a job token, raft connections that do not prove it are refused
// before raft reads them: the leader keeps leading at the same term and
// the group keeps committing. Without a token (the control) the same RPCs
// depose the leader, so the test can tell the difference.
func TestRaftRefusesUnauthenticatedRPCs(t *testing.T) {
	for _, tc := range []struct {
		name      string
		token     string
		wantDepos bool
	}{
		{"with token", "s3cret", false},
		{"control without token", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t, 3, func(cfg *Config) { cfg.Token = tc.token })
			defer c.close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			li := c.leader(ctx)
			term := raftTerm(c.nodes[li])
			voteErr, appendErr := rogueRaft(t, c.servers[li].RaftAddr)
			time.Sleep(300 * time.Millisecond)
			deposed := c.nodes[li].raft.State() != raft.Leader || raftTerm(c.nodes[li]) != term
			if deposed != tc.wantDepos {
				t.Fatalf("deposed=%v (state %v, term %d → %d; vote err %v, append err %v), want %v",
					deposed, c.nodes[li].raft.State(), term, raftTerm(c.nodes[li]), voteErr, appendErr, tc.wantDepos)
			}
			if tc.wantDepos {
				return
			}
			if voteErr == nil || appendErr == nil {
				t.Fatalf("the rogue RPCs got answers: vote %v, append %v", voteErr, appendErr)
			}
			// The group still commits, through the same leader.
			if err := c.nodes[li].raft.Barrier(5 * time.Second).Error(); err != nil {
				t.Fatalf("commit after the rogue RPCs: %v", err)
			}
			if c.nodes[li].raft.State() != raft.Leader || raftTerm(c.nodes[li]) != term {
				t.Fatal("the leader changed")
			}
		})
	}
}

// The handshake proves the token both ways: the right token passes, a
// wrong one fails on both sides, and a silent client cannot stall Accept.
func TestRaftHandshake(t *testing.T) {
	pair := func(ctok, stok string) (cerr, serr error) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		done := make(chan error, 1)
		go func() { done <- serverHandshake(b, []byte(stok)) }()
		cerr = clientHandshake(a, []byte(ctok))
		if cerr != nil {
			a.Close()
		}
		return cerr, <-done
	}
	if c, s := pair("tok", "tok"); c != nil || s != nil {
		t.Fatalf("same token: client %v, server %v", c, s)
	}
	if _, s := pair("other", "tok"); !errors.Is(s, ErrRaftAuth) {
		t.Fatalf("wrong client token: server %v", s)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st := &raftStream{Listener: l, token: []byte("tok")}
	defer st.Close()
	silent, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if _, err := st.Accept(); err != nil { // returns at once: the handshake waits for first use
		t.Fatal(err)
	}
	go func() {
		if c, err := st.Accept(); err == nil {
			buf := make([]byte, 1)
			c.Read(buf)
			c.Close()
		}
	}()
	c, err := st.Dial(raft.ServerAddress(l.Addr().String()), time.Second)
	if err != nil {
		t.Fatalf("a good dial behind a silent one: %v", err)
	}
	c.Close()
}

package worker

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOwnedShardsPartition(t *testing.T) {
	for _, s := range []int{1, 7, 64} {
		for n := 1; n <= s && n <= 9; n++ {
			seen := make([]int, s)
			for r := 0; r < n; r++ {
				own := OwnedShards(r, n, s)
				if len(own) == 0 {
					t.Fatalf("s=%d n=%d: rank %d owns nothing", s, n, r)
				}
				for i, id := range own {
					seen[id]++
					if i > 0 && id != own[i-1]+1 {
						t.Fatalf("s=%d n=%d rank %d: not contiguous %v", s, n, r, own)
					}
				}
			}
			for id, c := range seen {
				if c != 1 {
					t.Fatalf("s=%d n=%d: shard %d owned %d times", s, n, id, c)
				}
			}
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Rank: 1, Peers: []string{"a", "b"}, Shards: 4, Codec: collective.CodecNone}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Config{
		{Rank: 2, Peers: []string{"a", "b"}, Shards: 4},
		{Rank: 0, Peers: []string{"a", "b", "c"}, Shards: 2},
		{Rank: 0, Peers: []string{"a"}, Shards: 2, Codec: collective.CodecInt8},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: want ErrConfig, got %v", bad, err)
		}
	}
}

// Workers each load the embeddings of their shards only and agree on the
// grid the whole data gives.
func TestStartLoadsOwnRowsAndAgreesOnGrid(t *testing.T) {
	c := sim.DefaultConfig()
	c.TrainRows, c.TestRows, c.Dim, c.Latent = 300, 60, 12, 4
	ds, err := sim.Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	path := t.TempDir() + "/d.safetensors"
	if err := shard.WriteSafetensors(path, ds); err != nil {
		t.Fatal(err)
	}
	want := nn.ColumnExps(ds.Train.D, ds.Train.X, ds.Val.X, ds.Test.X)
	const n = 3
	lis := make([]net.Listener, n)
	peers := make([]string, n)
	for i := range lis {
		lis[i], _ = net.Listen("tcp", "127.0.0.1:0")
		peers[i] = lis[i].Addr().String()
	}
	ws := make([]*Worker, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := 0; r < n; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws[r], errs[r] = Start(context.Background(), Config{Rank: r, Peers: peers, Generation: 1,
				Codec: collective.CodecNone, Shards: 6, Listener: lis[r]}, shard.LoadSpec{Train: path})
		}()
	}
	wg.Wait()
	loaded := 0
	for r, w := range ws {
		if errs[r] != nil {
			t.Fatalf("rank %d: %v", r, errs[r])
		}
		for j := range want {
			if w.XExp[j] != want[j] {
				t.Fatalf("rank %d: grid of column %d is %d, the whole data gives %d", r, j, w.XExp[j], want[j])
			}
		}
		loaded += len(w.Data.Train.X) / w.Data.Train.D
	}
	for _, w := range ws {
		w.Close()
	}
	if loaded != ds.Train.N {
		t.Fatalf("workers loaded %d training rows between them, the data has %d", loaded, ds.Train.N)
	}
}

package collective

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// reducer is trainer.Reducer's method set (collective does not import the
// trainer: packages import downwards only).
type reducer interface {
	MaxFloat64(ctx context.Context, v []float64) error
	SumInt64(ctx context.Context, v []int64) error
	SumFloat32(ctx context.Context, v []float32) error
}

var _ reducer = (*Ring)(nil)

// loopback opens n listeners on 127.0.0.1 with kernel-chosen ports.
func loopback(t testing.TB, n int) ([]net.Listener, []string) {
	t.Helper()
	lis := make([]net.Listener, n)
	addrs := make([]string, n)
	for i := range lis {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis[i], addrs[i] = l, l.Addr().String()
	}
	return lis, addrs
}

// testConfig is a small-chunk config so short vectors span many chunks.
func testConfig(addrs []string, rank int) Config {
	cfg := DefaultConfig()
	cfg.RingID = "test"
	cfg.Peers = addrs
	cfg.Rank = rank
	cfg.Generation = 7
	cfg.ChunkBytes = 64
	cfg.MaxMessageBytes = 1 << 20
	cfg.Timeout = 20 * time.Second
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

// newRings starts an n-rank ring in this process; mut edits each config.
func newRings(t testing.TB, n int, mut func(*Config)) []*Ring {
	t.Helper()
	lis, addrs := loopback(t, n)
	rings := make([]*Ring, n)
	for i := range rings {
		cfg := testConfig(addrs, i)
		if mut != nil {
			mut(&cfg)
		}
		r, err := New(cfg, lis[i])
		if err != nil {
			t.Fatal(err)
		}
		rings[i] = r
	}
	t.Cleanup(func() { closeAll(rings) })
	return rings
}

// closeAll closes the rings concurrently (as separate processes would).
func closeAll(rings []*Ring) {
	var wg sync.WaitGroup
	for _, r := range rings {
		wg.Add(1)
		go func() { defer wg.Done(); r.Close() }()
	}
	wg.Wait()
}

// onAll runs fn on every rank concurrently and returns each rank's error.
func onAll(rings []*Ring, fn func(rank int, r *Ring) error) []error {
	errs := make([]error, len(rings))
	var wg sync.WaitGroup
	for i, r := range rings {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i, r)
		}()
	}
	wg.Wait()
	return errs
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

package collective

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
)

// Many back-to-back calls of mixed kinds and sizes, as a training loop
// makes them (small max-reduces, large sums, tiny sums), on every codec.
func TestMixedOpSequence(t *testing.T) {
	for _, codec := range []Codec{CodecNone, CodecS2, CodecZstd} {
		for _, n := range []int{2, 3} {
			rings := newRings(t, n, func(c *Config) {
				c.Codec = codec
				c.ChunkBytes = DefaultConfig().ChunkBytes // the bug this guards showed with full-size chunks
			})
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range rings {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(1, 2))
					ctx := context.Background()
					for it := 0; it < 200 && errs[i] == nil; it++ {
						mx := make([]float64, 1+rng.IntN(400))
						for j := range mx {
							mx[j] = rng.Float64()
						}
						if err := rings[i].MaxFloat64(ctx, mx); err != nil {
							errs[i] = err
							break
						}
						big := make([]int64, 1000+rng.IntN(70000))
						for j := range big {
							big[j] = int64(rng.IntN(1 << 20))
						}
						if err := rings[i].SumInt64(ctx, big); err != nil {
							errs[i] = err
							break
						}
						if err := rings[i].SumInt64(ctx, []int64{1, 2}); err != nil {
							errs[i] = err
						}
					}
				}()
			}
			wg.Wait()
			closeAll(rings)
			for i, err := range errs {
				if err != nil {
					t.Fatalf("codec %s, %d ranks, rank %d: %v", codec, n, i, err)
				}
			}
		}
	}
}

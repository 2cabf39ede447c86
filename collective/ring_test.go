package collective

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// lengths covers empty, shorter than N, around N, not divisible by N or by
// the chunk size (8 int64 per 64-byte chunk in tests), and multi-chunk.
var lengths = []int{0, 1, 2, 3, 5, 8, 9, 17, 63, 100, 257, 1001}

var losslessCodecs = []Codec{CodecNone, CodecS2, CodecZstd}

func TestSumInt64MatchesSequentialSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 3, 4} {
		for _, codec := range losslessCodecs {
			t.Run(fmt.Sprintf("N=%d/%s", n, codec), func(t *testing.T) {
				rings := newRings(t, n, func(c *Config) { c.Codec = codec })
				ctx := ctxT(t)
				calls := 0
				for _, l := range lengths {
					for rep := 0; rep < 2; rep++ {
						in := make([][]int64, n)
						want := make([]int64, l)
						for r := range in {
							in[r] = make([]int64, l)
							for i := range in[r] {
								switch rng.IntN(4) {
								case 0: // fixed-point gradient-like
									in[r][i] = int64(rng.NormFloat64() * (1 << 30))
								case 1: // extremes (sums wrap, as int64 addition does)
									in[r][i] = []int64{math.MaxInt64, math.MinInt64, -1, 0}[rng.IntN(4)]
								default:
									in[r][i] = rng.Int64() >> rng.IntN(64)
								}
								want[i] += in[r][i]
							}
						}
						got := make([][]int64, n)
						errs := onAll(rings, func(r int, ring *Ring) error {
							got[r] = slices.Clone(in[r])
							return ring.SumInt64(ctx, got[r])
						})
						calls++
						for r := range rings {
							if errs[r] != nil {
								t.Fatalf("len %d rank %d: %v", l, r, errs[r])
							}
							if !slices.Equal(got[r], want) {
								t.Fatalf("len %d rank %d: sum differs from the sequential sum\n got %v\nwant %v", l, r, head(got[r]), head(want))
							}
						}
					}
				}
				for r, ring := range rings {
					if s := ring.Seq(); s != uint64(calls) {
						t.Errorf("rank %d: Seq() = %d after %d calls", r, s, calls)
					}
					if st := ring.Stats(); st.Ops != int64(calls) || (n > 1 && st.BytesSent == 0) {
						t.Errorf("rank %d: stats %+v after %d calls", r, st, calls)
					}
				}
			})
		}
	}
}

func head[T any](v []T) []T { return v[:min(len(v), 12)] }

func TestMaxFloat64(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 2, 3, 4} {
		for _, codec := range losslessCodecs {
			t.Run(fmt.Sprintf("N=%d/%s", n, codec), func(t *testing.T) {
				rings := newRings(t, n, func(c *Config) { c.Codec = codec })
				ctx := ctxT(t)
				for _, l := range lengths {
					in := make([][]float64, n)
					want := make([]float64, l)
					for i := range want {
						want[i] = math.Inf(-1)
					}
					for r := range in {
						in[r] = make([]float64, l)
						for i := range in[r] {
							in[r][i] = rng.ExpFloat64() * math.Ldexp(1, rng.IntN(40)-20)
							want[i] = max(want[i], in[r][i])
						}
					}
					got := make([][]float64, n)
					errs := onAll(rings, func(r int, ring *Ring) error {
						got[r] = slices.Clone(in[r])
						return ring.MaxFloat64(ctx, got[r])
					})
					for r := range rings {
						if errs[r] != nil {
							t.Fatalf("len %d rank %d: %v", l, r, errs[r])
						}
						if !slices.Equal(got[r], want) {
							t.Fatalf("len %d rank %d: max differs\n got %v\nwant %v", l, r, head(got[r]), head(want))
						}
					}
				}
			})
		}
	}
}

// bitsEqual32 compares float32 slices bit for bit.
func bitsEqual32(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

func TestSumFloat32IdenticalBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{1, 2, 3, 4} {
		for _, codec := range append(slices.Clone(losslessCodecs), CodecFP16, CodecInt8) {
			t.Run(fmt.Sprintf("N=%d/%s", n, codec), func(t *testing.T) {
				rings := newRings(t, n, func(c *Config) {
					if codec.Lossy() {
						c.LossyCodec = codec
					} else {
						c.Codec = codec
					}
				})
				ctx := ctxT(t)
				for _, l := range lengths {
					in := make([][]float32, n)
					exact := make([]float64, l)
					for r := range in {
						in[r] = make([]float32, l)
						for i := range in[r] {
							in[r][i] = float32(rng.NormFloat64())
							exact[i] += float64(in[r][i])
						}
					}
					got := make([][]float32, n)
					errs := onAll(rings, func(r int, ring *Ring) error {
						got[r] = slices.Clone(in[r])
						return ring.SumFloat32(ctx, got[r])
					})
					for r := range rings {
						if errs[r] != nil {
							t.Fatalf("len %d rank %d: %v", l, r, errs[r])
						}
						if !bitsEqual32(got[r], got[0]) {
							t.Fatalf("len %d: rank %d's bits differ from rank 0's", l, r)
						}
					}
					// Lossless: float32 rounding only. Lossy: a quantization
					// step of the largest partial sum per hop, plus feedback.
					tol := 1e-5
					if codec == CodecFP16 {
						tol = 0.05
					} else if codec == CodecInt8 {
						tol = 0.5
					}
					for i := range exact {
						if d := math.Abs(float64(got[0][i]) - exact[i]); d > tol*float64(n) {
							t.Fatalf("len %d element %d: %v, exact %v", l, i, got[0][i], exact[i])
						}
					}
				}
			})
		}
	}
}

// TestLossyErrorFeedback checks that with error feedback the running sum
// of the outputs tracks the running sum of the inputs with an error that
// does not grow, where without feedback it would grow linearly: each chunk
// holds one large value and many small ones that int8/fp16 at the chunk's
// scale round to zero every time.
func TestLossyErrorFeedback(t *testing.T) {
	const n, l, calls = 3, 200, 300
	for _, codec := range []Codec{CodecInt8, CodecFP16} {
		t.Run(string(codec), func(t *testing.T) {
			rings := newRings(t, n, func(c *Config) { c.LossyCodec = codec })
			ctx := ctxT(t)
			rng := rand.New(rand.NewPCG(7, 8))
			// int8: a step of ~big/64 at the first hop, so every small value
			// rounds to 0 alone. fp16 (scaled per chunk so big sits below
			// 2^15): small is below half its smallest subnormal step.
			big, small := float32(10), float32(0.02)
			if codec == CodecFP16 {
				big, small = 1000, 1e-9
			}
			runIn := make([]float64, l)
			runOut := make([]float64, l)
			var maxErr, firstQuarterMax float64
			for call := 0; call < calls; call++ {
				in := make([][]float32, n)
				for r := range in {
					in[r] = make([]float32, l)
					for i := range in[r] {
						if i%16 == 0 {
							in[r][i] = big * float32(1+rng.Float64())
						} else {
							in[r][i] = small * float32(1+rng.Float64())
						}
						runIn[i] += float64(in[r][i])
					}
				}
				got := make([][]float32, n)
				errs := onAll(rings, func(r int, ring *Ring) error {
					got[r] = slices.Clone(in[r])
					return ring.SumFloat32(ctx, got[r])
				})
				for r := range rings {
					if errs[r] != nil {
						t.Fatalf("call %d rank %d: %v", call, r, errs[r])
					}
					if !bitsEqual32(got[r], got[0]) {
						t.Fatalf("call %d: rank %d's bits differ from rank 0's", call, r)
					}
				}
				for i := range runOut {
					runOut[i] += float64(got[0][i])
					if i%16 != 0 {
						maxErr = max(maxErr, math.Abs(runOut[i]-runIn[i]))
					}
				}
				if call == calls/4 {
					firstQuarterMax = maxErr
				}
			}
			// The error on the small elements is bounded by what the
			// residuals hold (about one quantization step of the chunk per
			// rank): it must not grow after the first quarter of the run.
			// Without feedback it would reach calls * n * small.
			if maxErr > 1.5*firstQuarterMax+1e-9 {
				t.Errorf("running-sum error grew from %g (first quarter) to %g", firstQuarterMax, maxErr)
			}
			noFeedback := float64(calls) * n * float64(small)
			if maxErr > noFeedback/10 {
				t.Errorf("running-sum error %g, not far below the %g of no feedback", maxErr, noFeedback)
			}
			// The residuals account for the whole difference.
			res := make([]float64, l)
			for _, ring := range rings {
				for i, x := range ring.Residual() {
					res[i] += float64(x)
				}
			}
			for i := range res {
				if d := math.Abs(runIn[i] - runOut[i] - res[i]); d > 1e-3*math.Max(1, math.Abs(runIn[i])*1e-4) {
					t.Fatalf("element %d: inputs %g - outputs %g = %g, residuals hold %g", i, runIn[i], runOut[i], runIn[i]-runOut[i], res[i])
				}
			}
			t.Logf("%s: max running-sum error on small elements %g (first quarter %g)", codec, maxErr, firstQuarterMax)
		})
	}
}

// TestResidualHandover: a rank leaves; a survivor adds the leaver's
// residual to its own, and the accounting (inputs = outputs + residuals)
// survives the membership change.
func TestResidualHandover(t *testing.T) {
	const l = 50
	rng := rand.New(rand.NewPCG(9, 10))
	runIn := make([]float64, l)
	runOut := make([]float64, l)
	step := func(rings []*Ring) {
		ctx := ctxT(t)
		in := make([][]float32, len(rings))
		for r := range in {
			in[r] = make([]float32, l)
			for i := range in[r] {
				in[r][i] = float32(rng.NormFloat64())
				runIn[i] += float64(in[r][i])
			}
		}
		got := make([][]float32, len(rings))
		errs := onAll(rings, func(r int, ring *Ring) error {
			got[r] = slices.Clone(in[r])
			return ring.SumFloat32(ctx, got[r])
		})
		for r, err := range errs {
			if err != nil {
				t.Fatalf("rank %d: %v", r, err)
			}
		}
		for i := range runOut {
			runOut[i] += float64(got[0][i])
		}
	}
	lossy := func(c *Config) { c.LossyCodec = CodecInt8 }
	three := newRings(t, 3, lossy)
	for range 20 {
		step(three)
	}
	res := [3][]float32{three[0].Residual(), three[1].Residual(), three[2].Residual()}
	closeAll(three)
	two := newRings(t, 2, func(c *Config) { lossy(c); c.Generation = 8 })
	merged := slices.Clone(res[0])
	for i := range merged {
		merged[i] += res[2][i] // rank 2 left; rank 0 takes its residual
	}
	two[0].SetResidual(merged)
	two[1].SetResidual(res[1])
	for range 20 {
		step(two)
	}
	for i := range runIn {
		held := float64(0)
		for _, ring := range two {
			held += float64(ring.Residual()[i])
		}
		if d := math.Abs(runIn[i] - runOut[i] - held); d > 1e-4 {
			t.Fatalf("element %d: inputs - outputs = %g, residuals hold %g", i, runIn[i]-runOut[i], held)
		}
	}
}

func TestMismatchedCallsFail(t *testing.T) {
	t.Run("lengths", func(t *testing.T) {
		rings := newRings(t, 2, func(c *Config) { c.Timeout = 5 * time.Second })
		errs := onAll(rings, func(r int, ring *Ring) error {
			return ring.SumInt64(ctxT(t), make([]int64, 10+r))
		})
		if !errors.Is(errs[0], ErrShape) && !errors.Is(errs[1], ErrShape) {
			t.Fatalf("want ErrShape on a rank, got %v / %v", errs[0], errs[1])
		}
	})
	t.Run("ops", func(t *testing.T) {
		rings := newRings(t, 2, func(c *Config) { c.Timeout = 5 * time.Second })
		errs := onAll(rings, func(r int, ring *Ring) error {
			if r == 0 {
				return ring.SumInt64(ctxT(t), make([]int64, 10))
			}
			return ring.MaxFloat64(ctxT(t), make([]float64, 10))
		})
		if !errors.Is(errs[0], ErrShape) && !errors.Is(errs[1], ErrShape) {
			t.Fatalf("want ErrShape on a rank, got %v / %v", errs[0], errs[1])
		}
		for r, err := range errs {
			if err == nil {
				t.Errorf("rank %d succeeded", r)
			}
		}
		// Broken from now on.
		if err := rings[0].SumInt64(ctxT(t), make([]int64, 3)); !errors.Is(err, ErrBroken) {
			t.Errorf("call after a failure: %v, want ErrBroken", err)
		}
	})
}

func TestTimeoutWhenAPeerNeverCalls(t *testing.T) {
	rings := newRings(t, 2, func(c *Config) { c.Timeout = 300 * time.Millisecond })
	start := time.Now()
	err := rings[0].SumInt64(ctxT(t), make([]int64, 100))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestCloseDuringCallAndNoLeaks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	lis, addrs := loopback(t, 3)
	rings := make([]*Ring, 3)
	for i := range rings {
		r, err := New(testConfig(addrs, i), lis[i])
		if err != nil {
			t.Fatal(err)
		}
		rings[i] = r
	}
	ctx := ctxT(t)
	// Some traffic, state and barriers first, so every goroutine kind runs.
	errs := onAll(rings, func(r int, ring *Ring) error {
		if err := ring.Barrier(ctx); err != nil {
			return err
		}
		return ring.SumInt64(ctx, make([]int64, 1000))
	})
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	rings[1].PublishState(1, make([]byte, 5000))
	if _, err := FetchState(ctx, rings[1].Addr(), StateRequest{RingID: "test", Codec: CodecZstd}); err != nil {
		t.Fatal(err)
	}
	// Rank 0 waits in a call its peers never make; Close ends it.
	done := make(chan error)
	go func() { done <- rings[0].SumInt64(ctx, make([]int64, 1000)) }()
	time.Sleep(50 * time.Millisecond)
	closeAll(rings)
	if err := <-done; !errors.Is(err, ErrClosed) && !errors.Is(err, ErrPeer) {
		t.Errorf("call in flight at Close: %v, want ErrClosed or ErrPeer", err)
	}
	if err := rings[0].SumInt64(ctx, make([]int64, 3)); !errors.Is(err, ErrClosed) {
		t.Errorf("call after Close: %v, want ErrClosed", err)
	}
	rings[0].Close() // idempotent
}

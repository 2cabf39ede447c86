package collective

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestLosslessCodecsRoundTrip(t *testing.T) {
	c, err := newCoder(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	rng := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{0, 1, 7, 1000, 40000} {
		i64 := make([]int64, n)
		f64 := make([]float64, n)
		f32 := make([]float32, n)
		for i := range i64 {
			i64[i] = rng.Int64() >> rng.IntN(64)
			if rng.IntN(2) == 0 {
				i64[i] = -i64[i]
			}
			f64[i] = rng.NormFloat64() * math.Ldexp(1, rng.IntN(100)-50)
			f32[i] = float32(f64[i])
		}
		if n > 3 {
			i64[0], i64[1], i64[2] = math.MinInt64, math.MaxInt64, -1
			f64[0], f32[0] = math.Copysign(0, -1), float32(math.Copysign(0, -1))
		}
		for _, codec := range losslessCodecs {
			roundTrip(t, c, codec, i64)
			roundTrip(t, c, codec, f64)
			roundTrip(t, c, codec, f32)
		}
	}
}

func roundTrip[T elem](t *testing.T, c *coder, codec Codec, v []T) {
	t.Helper()
	p := *encode(c, codec, v)
	if len(p) > maxEncodedLen(codec, len(v)*elemSize[T](), len(v)) {
		t.Fatalf("%s: %d-byte payload over its bound", codec, len(p))
	}
	got := make([]T, len(v))
	if err := decode(c, codec, got, p); err != nil {
		t.Fatalf("%s %T: %v", codec, v, err)
	}
	if !slices.Equal(asBytes(got), asBytes(v)) {
		t.Fatalf("%s %T: round trip changed bits", codec, v)
	}
	// A payload for the wrong count must not decode.
	if len(v) > 0 {
		if err := decode(c, codec, make([]T, len(v)+1), p); !errors.Is(err, ErrShape) {
			t.Fatalf("%s %T: decode into the wrong count: %v", codec, v, err)
		}
	}
}

// TestFloat16Conversion: every half widens and narrows back to itself, and
// narrowing rounds to the nearest half, ties to even.
func TestFloat16Conversion(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := f16toF32(uint16(h))
		if f != f {
			continue
		}
		if back := f32toF16(f); back != uint16(h) {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, back)
		}
	}
	if f16toF32(f32toF16(1e6)) != float32(math.Inf(1)) || f16toF32(f32toF16(65504)) != 65504 {
		t.Fatal("overflow handling")
	}
	rng := rand.New(rand.NewPCG(2, 2))
	for range 200000 {
		f := float32(rng.NormFloat64() * math.Ldexp(1, rng.IntN(40)-30))
		h := f32toF16(f)
		got := float64(f16toF32(h))
		if math.IsInf(got, 0) {
			continue
		}
		for _, nb := range []uint16{h - 1, h + 1} { // neighbours on the same side of 0
			if nb&0x7c00 == 0x7c00 || (nb^h)&0x8000 != 0 {
				continue
			}
			alt := float64(f16toF32(nb))
			dg, da := math.Abs(float64(f)-got), math.Abs(float64(f)-alt)
			if da < dg || (da == dg && h&1 == 1) {
				t.Fatalf("%v -> %v (%#04x), but %v (%#04x) is nearer or the even tie", f, got, h, alt, nb)
			}
		}
	}
}

func TestLossyDecodeRejectsNonFinite(t *testing.T) {
	y := []float32{1, -2, 3}
	for _, codec := range []Codec{CodecFP16, CodecInt8} {
		p := *encodeLossy(codec, y)
		d := make([]float32, 3)
		if err := decodeLossy(codec, d, p); err != nil {
			t.Fatalf("%s: %v", codec, err)
		}
		bad := slices.Clone(y)
		bad[1] = float32(math.NaN())
		if err := decodeLossy(codec, d, *encodeLossy(codec, bad)); !errors.Is(err, ErrNonFinite) {
			t.Errorf("%s: NaN input decodes with %v, want ErrNonFinite", codec, err)
		}
		bad[1] = float32(math.Inf(-1))
		if err := decodeLossy(codec, d, *encodeLossy(codec, bad)); !errors.Is(err, ErrNonFinite) {
			t.Errorf("%s: -Inf input decodes with %v, want ErrNonFinite", codec, err)
		}
		if err := decodeLossy(codec, make([]float32, 4), p); !errors.Is(err, ErrShape) {
			t.Errorf("%s: wrong count: %v, want ErrShape", codec, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Peers = []string{"127.0.0.1:1", "127.0.0.1:2"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	cases := map[string]func(*Config){
		"no ring id":      func(c *Config) { c.RingID = "" },
		"no peers":        func(c *Config) { c.Peers = nil },
		"rank too big":    func(c *Config) { c.Rank = 2 },
		"negative rank":   func(c *Config) { c.Rank = -1 },
		"bad address":     func(c *Config) { c.Peers = []string{"127.0.0.1"} },
		"duplicate peer":  func(c *Config) { c.Peers = []string{"127.0.0.1:1", "127.0.0.1:1"} },
		"lossy as codec":  func(c *Config) { c.Codec = CodecInt8 },
		"unknown codec":   func(c *Config) { c.Codec = "lz4" },
		"lossless lossy":  func(c *Config) { c.LossyCodec = CodecZstd },
		"tiny chunks":     func(c *Config) { c.ChunkBytes = 8 },
		"message < chunk": func(c *Config) { c.MaxMessageBytes = c.ChunkBytes },
		"inbox":           func(c *Config) { c.InboxSegments = 1 },
		"negative time":   func(c *Config) { c.Timeout = -1 },
	}
	for name, mut := range cases {
		c := ok
		c.Peers = append([]string(nil), ok.Peers...)
		mut(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

package floatbits

import (
	"encoding/binary"
	"math"
	"testing"
)

func TestHalfConversions(t *testing.T) {
	cases := []struct {
		h uint16
		f float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x3555, 0.333251953125}, {0x7bff, 65504},
		{0x0001, 5.960464477539063e-08}, {0x8000, float32(math.Copysign(0, -1))},
		{0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))},
	}
	for _, c := range cases {
		if got := Float16ToFloat32(c.h); got != c.f || math.Signbit(float64(got)) != math.Signbit(float64(c.f)) {
			t.Errorf("F16 %#04x = %v, want %v", c.h, got, c.f)
		}
	}
	for _, c := range cases {
		if got := Float32ToFloat16(c.f); got != c.h {
			t.Errorf("Float32ToFloat16(%v) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	// Rounding to nearest even, overflow and underflow.
	for _, c := range []struct {
		f float32
		h uint16
	}{{1 + 1.0/2048, 0x3c00}, {1 + 3.0/2048, 0x3c02}, {65520, 0x7c00}, {1e-9, 0}, {3e-8, 0x0001}} {
		if got := Float32ToFloat16(c.f); got != c.h {
			t.Errorf("Float32ToFloat16(%v) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	if !math.IsNaN(float64(Float16ToFloat32(0x7e00))) {
		t.Error("F16 NaN")
	}
}

func TestFloat32Bytes(t *testing.T) {
	if b := Float32Bytes(nil); b == nil || len(b) != 0 {
		t.Fatalf("Float32Bytes(nil) = %#v, want an empty non-nil slice", b)
	}
	v := []float32{1, -2.5, float32(math.Inf(1)), 5e-8}
	b := Float32Bytes(v)
	if len(b) != 4*len(v) {
		t.Fatalf("%d bytes for %d float32s", len(b), len(v))
	}
	for i, x := range v {
		if got := binary.LittleEndian.Uint32(b[4*i:]); got != math.Float32bits(x) {
			t.Errorf("element %d: bytes %#08x, want %#08x", i, got, math.Float32bits(x))
		}
	}
	if littleEndian {
		v[0] = 3 // a view: the bytes follow v
		if got := binary.LittleEndian.Uint32(b); got != math.Float32bits(3) {
			t.Errorf("not a view of v on a little-endian host: %#08x", got)
		}
	}
}

package collective

import (
	"math"
	"slices"
	"testing"
)

// ChunkCodec gives the payloads a ring sends, and decodes them back.
func TestChunkCodec(t *testing.T) {
	cc, err := NewChunkCodec(8 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cd, err := newCoder(8 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer cd.close()
	iv := []int64{0, 1, -1, 1 << 40, -(1 << 50), math.MaxInt64, math.MinInt64, 12345}
	fv := []float32{0, 1, -2.5, 1e-3, 3e4, -7, 0.25, 100}
	for _, codec := range losslessCodecs {
		p := EncodeChunk(cc, codec, iv)
		if want := *encode(cd, codec, iv); !slices.Equal(p, want) {
			t.Errorf("%s int64: payload differs from the ring's", codec)
		}
		got := make([]int64, len(iv))
		if err := DecodeChunk(cc, codec, got, p); err != nil || !slices.Equal(got, iv) {
			t.Errorf("%s int64: decoded %v, %v; want %v", codec, got, err, iv)
		}
		f := make([]float32, len(fv))
		if err := DecodeChunk(cc, codec, f, EncodeChunk(cc, codec, fv)); err != nil || !slices.Equal(f, fv) {
			t.Errorf("%s float32: decoded %v, %v; want %v", codec, f, err, fv)
		}
	}
	for _, codec := range []Codec{CodecFP16, CodecInt8} {
		p := EncodeChunk(cc, codec, fv)
		if want := *encodeLossy(codec, fv); !slices.Equal(p, want) {
			t.Errorf("%s: payload differs from the ring's", codec)
		}
		got, want := make([]float32, len(fv)), make([]float32, len(fv))
		if err := decodeLossy(codec, want, p); err != nil {
			t.Fatal(err)
		}
		if err := DecodeChunk(cc, codec, got, p); err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: decoded %v, %v; want %v", codec, got, err, want)
		}
	}
}

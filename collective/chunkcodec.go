package collective

// ChunkCodec encodes and decodes single chunks with a Ring's codecs outside
// a ring, to time them (collective/ringbench). Like a Ring's own coder it
// belongs to one goroutine at a time.
type ChunkCodec struct{ cd *coder }

// NewChunkCodec makes the codecs; maxMessageBytes bounds what the zstd
// decoder may allocate, as Config.MaxMessageBytes does a Ring's.
func NewChunkCodec(maxMessageBytes int) (*ChunkCodec, error) {
	cd, err := newCoder(maxMessageBytes)
	if err != nil {
		return nil, err
	}
	return &ChunkCodec{cd: cd}, nil
}

// Close releases the compressors.
func (c *ChunkCodec) Close() { c.cd.close() }

// EncodeChunk returns the payload a Ring sends for the chunk v under codec.
// A lossy codec takes []float32 only.
func EncodeChunk[T int64 | float64 | float32](c *ChunkCodec, codec Codec, v []T) []byte {
	if codec.Lossy() {
		return *encodeLossy(codec, any(v).([]float32))
	}
	return *encode(c.cd, codec, v)
}

// DecodeChunk fills dst, of the chunk's length, from a payload of
// EncodeChunk under the same codec.
func DecodeChunk[T int64 | float64 | float32](c *ChunkCodec, codec Codec, dst []T, payload []byte) error {
	if codec.Lossy() {
		return decodeLossy(codec, any(dst).([]float32), payload)
	}
	return decode(c.cd, codec, dst, payload)
}

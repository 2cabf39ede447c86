package collective

import (
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Codec names a wire encoding of the segments.
type Codec string

const (
	// CodecNone sends the elements as little-endian bytes.
	CodecNone Codec = "none"
	// CodecS2 sends the byte-transformed elements compressed with S2.
	CodecS2 Codec = "s2"
	// CodecZstd sends the byte-transformed elements compressed with zstd.
	CodecZstd Codec = "zstd"
	// CodecFP16 (lossy, SumFloat32 only) sends IEEE half floats scaled by a
	// power of two per chunk, with error feedback.
	CodecFP16 Codec = "fp16"
	// CodecInt8 (lossy, SumFloat32 only) sends int8 values times a float32
	// scale per chunk, with error feedback.
	CodecInt8 Codec = "int8"
)

// Lossless reports whether c is one of the exact codecs.
func (c Codec) Lossless() bool { return c == CodecNone || c == CodecS2 || c == CodecZstd }

// Lossy reports whether c is one of the opt-in lossy float32 codecs.
func (c Codec) Lossy() bool { return c == CodecFP16 || c == CodecInt8 }

// Transport names how a Ring sends its segments to its successor.
type Transport string

const (
	// TransportRaw sends length-prefixed binary frames on one persistent
	// TCP (or TLS) connection to the successor's host listener.
	TransportRaw Transport = "raw"
	// TransportGRPC sends them on a gRPC client stream (Collective.Segments).
	TransportGRPC Transport = "grpc"
)

// Config configures one rank of a ring.
type Config struct {
	// RingID names the job / ring; every message carries it.
	RingID string
	// Rank of this process in Peers.
	Rank int
	// Peers is the host:port of every rank, in ring order.
	Peers []string
	// Generation is the membership generation; messages of any other
	// generation are rejected.
	Generation uint64
	// Codec is the lossless codec of SumInt64 and MaxFloat64, and of
	// SumFloat32 when LossyCodec is empty.
	Codec Codec
	// LossyCodec, if set (fp16 or int8), is used by SumFloat32 instead,
	// with error feedback. It trades exactness for bandwidth.
	LossyCodec Codec
	// Transport is how segments go to the successor: TransportRaw (the
	// default; also when empty) or TransportGRPC. A host receives both.
	Transport Transport
	// ChunkBytes is the raw size of the chunks a part is streamed in.
	ChunkBytes int
	// MaxMessageBytes bounds every gRPC message sent or received, and
	// every raw frame received.
	MaxMessageBytes int
	// InboxSegments bounds the segments buffered from the predecessor.
	InboxSegments int
	// Timeout bounds each collective call and barrier (0: the caller's
	// context only).
	Timeout time.Duration
	// CloseTimeout bounds how long Close waits to flush queued segments.
	CloseTimeout time.Duration
	// Logger, if nil, is slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults; the caller sets RingID, Rank, Peers
// and Generation.
func DefaultConfig() Config {
	return Config{
		RingID:          "causalrm",
		Codec:           CodecNone,
		Transport:       TransportRaw,
		ChunkBytes:      256 << 10,
		MaxMessageBytes: 8 << 20,
		InboxSegments:   64,
		Timeout:         2 * time.Minute,
		CloseTimeout:    5 * time.Second,
	}
}

// Validate checks the config.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	if c.RingID == "" {
		return bad("empty RingID")
	}
	if len(c.Peers) == 0 {
		return bad("no peers")
	}
	if c.Rank < 0 || c.Rank >= len(c.Peers) {
		return bad("rank %d outside [0,%d)", c.Rank, len(c.Peers))
	}
	seen := map[string]bool{}
	for i, p := range c.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return bad("peer %d %q: %v", i, p, err)
		}
		if seen[p] {
			return bad("peer %d %q listed twice", i, p)
		}
		seen[p] = true
	}
	if !c.Codec.Lossless() {
		return bad("codec %q: want none, s2 or zstd", c.Codec)
	}
	if c.LossyCodec != "" && !c.LossyCodec.Lossy() {
		return bad("lossy codec %q: want empty, fp16 or int8", c.LossyCodec)
	}
	if c.Transport != "" && c.Transport != TransportRaw && c.Transport != TransportGRPC {
		return bad("transport %q: want raw or grpc", c.Transport)
	}
	if c.ChunkBytes < 64 || c.ChunkBytes > 64<<20 {
		return bad("ChunkBytes %d outside [64, 64 MiB]", c.ChunkBytes)
	}
	if c.MaxMessageBytes < 2*c.ChunkBytes+4096 {
		return bad("MaxMessageBytes %d below 2*ChunkBytes+4096 = %d", c.MaxMessageBytes, 2*c.ChunkBytes+4096)
	}
	if c.InboxSegments < 2 {
		return bad("InboxSegments %d < 2", c.InboxSegments)
	}
	if c.Timeout < 0 || c.CloseTimeout < 0 {
		return bad("negative timeout")
	}
	return nil
}

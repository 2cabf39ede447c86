// Package ringbench is the benchmark harness of the collective (causalrm
// bench allreduce): in-process rings on 127.0.0.1 timed against a raw TCP
// copy of the same bytes, and the bytes on the wire and speed of each codec.
package ringbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/internal/gradgen"
)

// Options configures Run.
type Options struct {
	Ranks      []int              // ring sizes (default 2, 4)
	SizesMiB   []int              // vector sizes in MiB of int64 (default 1, 4, 16)
	Codecs     []collective.Codec // lossless codecs for the all-reduce table (default none, s2, zstd)
	Iters      int                // timed calls per case, after one warm-up (default 5)
	ChunkBytes int                // 0: collective.DefaultConfig's
	// Transports are the data paths measured, each in the same run
	// (default raw, then grpc).
	Transports []collective.Transport
}

func (o *Options) defaults() {
	if len(o.Ranks) == 0 {
		o.Ranks = []int{2, 4}
	}
	if len(o.SizesMiB) == 0 {
		o.SizesMiB = []int{1, 4, 16}
	}
	if len(o.Codecs) == 0 {
		o.Codecs = []collective.Codec{collective.CodecNone, collective.CodecS2, collective.CodecZstd}
	}
	if o.Iters <= 0 {
		o.Iters = 5
	}
	if len(o.Transports) == 0 {
		o.Transports = []collective.Transport{collective.TransportRaw, collective.TransportGRPC}
	}
}

// AllReduceResult is one row of the all-reduce table.
type AllReduceResult struct {
	Ranks int
	Bytes int // vector size
	Codec collective.Codec
	// Transport is the data path (collective.Config.Transport).
	Transport collective.Transport
	Seconds   float64 // per call (mean of the timed calls)
	// AlgBW is Bytes/Seconds; BusBW is AlgBW * 2(n-1)/n, the rate each rank
	// moves data at (NCCL's bus bandwidth).
	AlgBW, BusBW float64
	// WireRatio is the bytes each rank sent over the raw bytes it would
	// send uncompressed (2(n-1)/n * Bytes).
	WireRatio float64
	// TCPCopyBW is a raw loopback TCP copy measured in the same run: n
	// concurrent 127.0.0.1 connections in a ring, each copying
	// 2(n-1)/n * Bytes, reported as Bytes over that time (the algbw a
	// purely bandwidth-bound ring would reach on these sockets).
	TCPCopyBW float64
}

// AllReduce runs SumInt64 on in-process rings on 127.0.0.1 loopback
// listeners and measures it next to a raw TCP copy of the same bytes.
func AllReduce(ctx context.Context, opts Options) ([]AllReduceResult, error) {
	opts.defaults()
	var out []AllReduceResult
	for _, n := range opts.Ranks {
		for _, mib := range opts.SizesMiB {
			size := mib << 20
			tcp, err := loopbackRingCopy(ctx, n, size*2*(n-1)/n, opts.Iters)
			if err != nil {
				return nil, err
			}
			for _, codec := range opts.Codecs {
				for _, tr := range opts.Transports {
					o := opts
					o.Transports = []collective.Transport{tr}
					res, err := benchOne(ctx, n, size, codec, o)
					if err != nil {
						return nil, err
					}
					res.Transport = tr
					res.TCPCopyBW = float64(size) / tcp
					out = append(out, res)
				}
			}
		}
	}
	return out, nil
}

func benchRings(n int, mut func(*collective.Config)) ([]*collective.Ring, error) {
	lis := make([]net.Listener, n)
	addrs := make([]string, n)
	closeLis := func() {
		for _, l := range lis {
			if l != nil {
				l.Close()
			}
		}
	}
	for i := range lis {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeLis()
			return nil, err
		}
		lis[i], addrs[i] = l, l.Addr().String()
	}
	rings := make([]*collective.Ring, n)
	for i := range rings {
		cfg := collective.DefaultConfig()
		cfg.RingID, cfg.Rank, cfg.Peers, cfg.Generation = "bench", i, addrs, 1
		cfg.Logger = slog.New(slog.DiscardHandler)
		if mut != nil {
			mut(&cfg)
		}
		r, err := collective.New(cfg, lis[i])
		if err != nil {
			for _, r := range rings[:i] {
				r.Close()
			}
			for _, l := range lis[i:] {
				l.Close()
			}
			return nil, err
		}
		rings[i] = r
	}
	return rings, nil
}

func closeRings(rings []*collective.Ring) {
	var wg sync.WaitGroup
	for _, r := range rings {
		wg.Add(1)
		go func() { defer wg.Done(); r.Close() }()
	}
	wg.Wait()
}

// runAll calls fn on every rank at once and returns the first error.
func runAll(rings []*collective.Ring, fn func(rank int, r *collective.Ring) error) error {
	errs := make([]error, len(rings))
	var wg sync.WaitGroup
	for i, r := range rings {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = fn(i, r) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func benchOne(ctx context.Context, n, size int, codec collective.Codec, opts Options) (AllReduceResult, error) {
	rings, err := benchRings(n, func(c *collective.Config) {
		c.Codec = codec
		c.Transport = opts.Transports[0]
		if opts.ChunkBytes > 0 {
			c.ChunkBytes = opts.ChunkBytes
			c.MaxMessageBytes = max(c.MaxMessageBytes, 2*opts.ChunkBytes+4096)
		}
	})
	if err != nil {
		return AllReduceResult{}, err
	}
	defer closeRings(rings)
	elems := size / 8
	src := make([][]int64, n)
	bufs := make([][]int64, n)
	for r := range src {
		src[r] = gradgen.FixedPoint(elems, uint64(r+1))
		bufs[r] = make([]int64, elems)
	}
	// One call, timed without refilling the inputs.
	call := func() (time.Duration, error) {
		for r := range bufs {
			copy(bufs[r], src[r])
		}
		start := time.Now()
		err := runAll(rings, func(r int, ring *collective.Ring) error { return ring.SumInt64(ctx, bufs[r]) })
		return time.Since(start), err
	}
	if _, err := call(); err != nil { // warm-up: connections, buffers
		return AllReduceResult{}, err
	}
	before := rings[0].Stats()
	var total time.Duration
	for range opts.Iters {
		d, err := call()
		if err != nil {
			return AllReduceResult{}, err
		}
		total += d
	}
	after := rings[0].Stats()
	sec := total.Seconds() / float64(opts.Iters)
	moved := float64(size) * 2 * float64(n-1) / float64(n)
	res := AllReduceResult{
		Ranks: n, Bytes: size, Codec: codec, Seconds: sec,
		AlgBW:     float64(size) / sec,
		WireRatio: float64(after.BytesSent-before.BytesSent) / float64(opts.Iters) / moved,
	}
	res.BusBW = res.AlgBW * 2 * float64(n-1) / float64(n)
	return res, nil
}

// loopbackRingCopy returns the seconds n concurrent 127.0.0.1 TCP
// connections (rank i to rank i+1) take to each copy bytes, best of iters.
func loopbackRingCopy(ctx context.Context, n, bytes, iters int) (float64, error) {
	lis := make([]net.Listener, n)
	conns := make([]net.Conn, 0, 2*n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		for _, l := range lis {
			if l != nil {
				l.Close()
			}
		}
	}()
	var d net.Dialer
	senders := make([]net.Conn, n)
	receivers := make([]net.Conn, n)
	for i := range lis {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		lis[i] = l
		c, err := d.DialContext(ctx, "tcp", l.Addr().String())
		if err != nil {
			return 0, err
		}
		s, err := l.Accept()
		if err != nil {
			c.Close()
			return 0, err
		}
		senders[i], receivers[i] = c, s
		conns = append(conns, c, s)
	}
	buf := make([]byte, 256<<10)
	best := math.Inf(1)
	for range iters {
		var wg sync.WaitGroup
		errs := make([]error, 2*n)
		start := time.Now()
		for i := range n {
			wg.Add(2)
			go func() {
				defer wg.Done()
				for left := bytes; left > 0; {
					k, err := senders[i].Write(buf[:min(left, len(buf))])
					if err != nil {
						errs[2*i] = err
						return
					}
					left -= k
				}
			}()
			go func() {
				defer wg.Done()
				rb := make([]byte, 256<<10)
				for left := bytes; left > 0; {
					k, err := receivers[i].Read(rb[:min(left, len(rb))])
					if err != nil {
						errs[2*i+1] = err
						return
					}
					left -= k
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return 0, err
		}
		best = min(best, time.Since(start).Seconds())
	}
	return best, nil
}

// CodecResult is one row of the codec table.
type CodecResult struct {
	Data  string // "int64 fixed point" or "float32"
	Codec collective.Codec
	// WireVsFloat32 is the bytes sent on the ring over the float32 size of
	// the same elements (4 bytes each).
	WireVsFloat32 float64
	// EncodeMBps and DecodeMBps are one core's rates on the raw bytes.
	EncodeMBps, DecodeMBps float64
}

// Codecs measures the bytes on the wire of a 2-rank all-reduce of a
// realistic gradient (gradgen.FixedPoint for the exact codecs, gradgen.Float32
// for float32) per codec, and each codec's single-core speed.
func Codecs(ctx context.Context, elems int) ([]CodecResult, error) {
	var out []CodecResult
	type job struct {
		data  string
		codec collective.Codec
	}
	jobs := []job{
		{"int64 fixed point", collective.CodecNone}, {"int64 fixed point", collective.CodecS2}, {"int64 fixed point", collective.CodecZstd},
		{"float32", collective.CodecNone}, {"float32", collective.CodecS2}, {"float32", collective.CodecZstd},
		{"float32", collective.CodecFP16}, {"float32", collective.CodecInt8},
	}
	cd, err := collective.NewChunkCodec(8 << 20)
	if err != nil {
		return nil, err
	}
	defer cd.Close()
	for _, j := range jobs {
		rings, err := benchRings(2, func(c *collective.Config) {
			if j.codec.Lossy() {
				c.LossyCodec = j.codec
			} else {
				c.Codec = j.codec
			}
		})
		if err != nil {
			return nil, err
		}
		var enc, dec float64
		if j.data == "float32" {
			err = runAll(rings, func(r int, ring *collective.Ring) error {
				return ring.SumFloat32(ctx, gradgen.Float32(elems, uint64(r+1)))
			})
			enc, dec = codecSpeed(cd, j.codec, gradgen.Float32(elems, 9))
		} else {
			err = runAll(rings, func(r int, ring *collective.Ring) error {
				return ring.SumInt64(ctx, gradgen.FixedPoint(elems, uint64(r+1)))
			})
			enc, dec = codecSpeed(cd, j.codec, gradgen.FixedPoint(elems, 9))
		}
		st := rings[0].Stats()
		closeRings(rings)
		if err != nil {
			return nil, err
		}
		// Elements rank 0 sent: its raw bytes over the element size.
		es := 8.0
		if j.data == "float32" {
			es = 4
		}
		out = append(out, CodecResult{
			Data: j.data, Codec: j.codec,
			WireVsFloat32: float64(st.BytesSent) / (float64(st.RawBytesSent) / es * 4),
			EncodeMBps:    enc, DecodeMBps: dec,
		})
	}
	return out, nil
}

// codecSpeed times one encode and decode of v in chunks of 256 KiB.
func codecSpeed[T int64 | float32](cd *collective.ChunkCodec, codec collective.Codec, v []T) (encMBps, decMBps float64) {
	size := 8 // bytes per element
	if _, ok := any(v).([]float32); ok {
		size = 4
	}
	chunk := (256 << 10) / size
	var payloads [][]byte
	start := time.Now()
	for lo := 0; lo < len(v); lo += chunk {
		c := v[lo:min(lo+chunk, len(v))]
		payloads = append(payloads, collective.EncodeChunk(cd, codec, c))
	}
	enc := time.Since(start).Seconds()
	dst := make([]T, chunk)
	start = time.Now()
	for i, lo := 0, 0; lo < len(v); i, lo = i+1, lo+chunk {
		d := dst[:min(chunk, len(v)-lo)]
		_ = collective.DecodeChunk(cd, codec, d, payloads[i])
	}
	dec := time.Since(start).Seconds()
	mb := float64(len(v)*size) / 1e6
	return mb / enc, mb / dec
}

// Run runs both benchmarks and prints their tables to w.
func Run(ctx context.Context, w io.Writer, opts Options) error {
	rows, err := AllReduce(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "ring all-reduce of int64 vectors (SumInt64, in-process ranks on 127.0.0.1, GOMAXPROCS=%d)\n", runtime.GOMAXPROCS(0))
	fmt.Fprintf(w, "%5s %6s %-5s %-4s %9s %9s %9s %10s %11s %7s\n", "ranks", "MiB", "codec", "path", "ms/call", "algbw", "busbw", "wire/raw", "tcp algbw", "vs tcp")
	for _, r := range rows {
		fmt.Fprintf(w, "%5d %6d %-5s %-4s %9.2f %7.0fMB/s %7.0fMB/s %10.3f %9.0fMB/s %6.0f%%\n", r.Ranks, r.Bytes>>20, r.Codec, r.Transport,
			r.Seconds*1e3, r.AlgBW/1e6, r.BusBW/1e6, r.WireRatio, r.TCPCopyBW/1e6, 100*r.AlgBW/r.TCPCopyBW)
	}
	codecs, err := Codecs(ctx, 1<<20)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nbytes on the wire per codec (2-rank all-reduce of 1Mi elements), relative to float32 (4 bytes/element)\n")
	fmt.Fprintf(w, "%-18s %-5s %9s %12s %12s\n", "data", "codec", "wire/f32", "encode", "decode")
	for _, c := range codecs {
		fmt.Fprintf(w, "%-18s %-5s %9.3f %8.0fMB/s %8.0fMB/s\n", c.Data, c.Codec, c.WireVsFloat32, c.EncodeMBps, c.DecodeMBps)
	}
	return nil
}

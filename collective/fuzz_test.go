package collective

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/causalrm/causalrm/internal/fuzzcheck"
	"io"
	"math"
	"sync"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/causalrm/causalrm/proto/collectivepb"
)

// Fuzz targets of the decoders of bytes a peer sends: the raw data plane's
// frames, hello and reply (readFrame, readHello, readRawReply), the gRPC
// codec's segment parser (wireCodec.Unmarshal / parseSegment), and the
// payload codecs (decode, decodeLossy). Each must return a value or an
// error, never panic, never hang, and never allocate more than the bound
// stated at its target; the corpus under testdata/fuzz/ holds the inputs
// that found the bugs fixed so far and runs with every `go test`.

// Frame kinds of FuzzFrame: the first byte of an input picks the decoder.
const (
	fuzzRawFrames = iota // raw frames, one after another
	fuzzGRPC             // one gRPC Segment message
	fuzzHello            // a raw connection's hello
	fuzzReply            // the raw server's reply
	fuzzKinds
)

const (
	fuzzRingID = "fuzz-ring"
	fuzzToken  = "fuzz-token"
	// fuzzLimit is the frame limit (MaxMessageBytes) of FuzzFrame.
	fuzzLimit = 1 << 20
)

func fuzzSegments() []*pb.Segment {
	return []*pb.Segment{
		{RingId: fuzzRingID, Generation: 3, OpSeq: 7, Phase: pb.Phase_PHASE_REDUCE_SCATTER, Step: 1, Chunk: 2,
			SenderRank: 1, Codec: pb.Codec_CODEC_NONE, ElemType: pb.ElemType_ELEM_INT64, Op: pb.ReduceOp_REDUCE_SUM,
			VectorLen: 100, ElemCount: 2, Payload: []byte{1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{RingId: fuzzRingID, Generation: 3, OpSeq: 8, Phase: pb.Phase_PHASE_ALL_GATHER, Codec: pb.Codec_CODEC_ZSTD,
			ElemType: pb.ElemType_ELEM_FLOAT32, VectorLen: 1, ElemCount: 1, Payload: []byte("zstd-ish")},
		{RingId: "other", Generation: 1, Phase: pb.Phase_PHASE_ABORT, SenderRank: 2, AbortReason: "collective: shape mismatch: boom"},
		{},
	}
}

func fuzzCRC(s *pb.Segment) *pb.Segment {
	s.Crc32C = crc32c(s.Payload)
	return s
}

// FuzzFrame feeds a peer's bytes to the decoders of the data plane. The
// first byte picks one: raw frames as serveRaw reads them off a
// connection (readFrame, up to 8 in a row), one gRPC message as the
// Segments stream's codec receives it (wireCodec.Unmarshal), a raw hello
// (readHello) or the raw server's reply (readRawReply).
//
// Allocation bound per input: 256 KiB + 64 bytes per input byte + 2x the
// payload lengths that the headers of the raw frames read claim (a
// frame's payload buffer, of the length its header gives once the frame
// is checked against the limit, comes from sharedPool's power-of-two
// classes before the payload arrives); nothing else is allocated from a
// length the input claims.
func FuzzFrame(f *testing.F) {
	for _, s := range fuzzSegments() {
		fuzzCRC(s)
		raw := append([]byte{fuzzRawFrames}, appendFrame(nil, s)...)
		f.Add(append(raw, s.Payload...))
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{fuzzGRPC}, b...))
	}
	var two []byte
	for _, s := range fuzzSegments()[:2] {
		two = append(append(two, appendFrame(nil, fuzzCRC(s))...), s.Payload...)
	}
	f.Add(append([]byte{fuzzRawFrames}, two...))
	f.Add(append([]byte{fuzzHello}, appendHello(fuzzToken, fuzzRingID, 3, 1)...))
	f.Add(append([]byte{fuzzHello}, appendHello("", "", 0, 0)...))
	var reply bytes.Buffer
	rawReply(&reply, nil)
	f.Add(append([]byte{fuzzReply}, reply.Bytes()...))
	reply.Reset()
	rawReply(&reply, toStatus(ErrStaleGeneration))
	f.Add(append([]byte{fuzzReply}, reply.Bytes()...))

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		kind, body := data[0]%fuzzKinds, data[1:]
		claimed := 0
		if kind == fuzzRawFrames {
			claimed = fuzzClaimed(body)
		}
		limit := uint64(256<<10 + 64*len(data) + 2*claimed)
		var check func()
		n := fuzzcheck.Alloc(limit, nil, func() {
			check = nil
			switch kind {
			case fuzzRawFrames:
				check = fuzzRawFrame(t, body)
			case fuzzGRPC:
				check = fuzzGRPCSegment(t, body)
			case fuzzHello:
				id, gen, err := readHello(bufio.NewReaderSize(bytes.NewReader(body), 16<<10), fuzzToken)
				if err == nil {
					check = func() {
						// The decoded hello encodes to the bytes read (less the rank).
						want := appendHello(fuzzToken, id, gen, 0)
						if len(body) < len(want) || !bytes.Equal(body[:len(want)-4], want[:len(want)-4]) {
							t.Fatalf("hello (%q, %d) does not encode to the bytes it was read from", id, gen)
						}
					}
				}
			case fuzzReply:
				readRawReply(bytes.NewReader(body))
			}
		})
		if n > limit {
			t.Fatalf("decoding %d bytes (kind %d, %d bytes of payloads claimed) allocated %d bytes, bound %d", len(data), kind, claimed, n, limit)
		}
		if check != nil {
			check()
		}
	})
}

// fuzzRawFramesRead is how many frames fuzzRawFrame reads at most.
const fuzzRawFramesRead = 8

// fuzzClaimed is the payload bytes that the headers of the frames
// fuzzRawFrame reads from b claim, frames within the limit.
func fuzzClaimed(b []byte) int {
	claimed := 0
	for range fuzzRawFramesRead {
		if len(b) < rawHeaderLen {
			break
		}
		le := binary.LittleEndian
		total := int64(le.Uint32(b))
		if pay := total - (rawHeaderLen - 4) - int64(le.Uint16(b[52:])) - int64(le.Uint32(b[56:])); total+4 <= fuzzLimit && pay > 0 {
			claimed += int(pay)
		}
		if int64(len(b)) < 4+total {
			break
		}
		b = b[4+total:]
	}
	return claimed
}

// fuzzRawFrame reads up to fuzzRawFramesRead frames from b as serveRaw
// does; the check it returns compares each with the bytes it came from.
func fuzzRawFrame(t *testing.T, b []byte) func() {
	br := bufio.NewReaderSize(bytes.NewReader(b), 16<<10)
	var hdr [rawHeaderLen]byte
	var got []*inSegment
	var fail error
	off := 0
	for range fuzzRawFramesRead {
		in := new(inSegment)
		err := readFrame(br, &hdr, fuzzLimit, fuzzRingID, in)
		if err != nil {
			in.release()
			if errors.Is(err, io.EOF) && off != len(b) {
				fail = errors.New("io.EOF inside a frame")
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrOversized) && !errors.Is(err, errWire) {
				fail = err
			}
			break
		}
		got = append(got, in)
		off += 4 + int(binary.LittleEndian.Uint32(b[off:]))
	}
	return func() {
		if fail != nil {
			t.Fatalf("readFrame: unexpected error %v", fail)
		}
		off := 0
		for i, in := range got {
			s := &in.seg
			enc := append(appendFrame(nil, s), s.Payload...)
			src := bytes.Clone(b[off : off+len(enc)])
			src[54], src[55] = 0, 0 // reserved
			if !bytes.Equal(enc, src) {
				t.Fatalf("frame %d decodes to %+v, which encodes to other bytes", i, s)
			}
			if !in.hasCRC || in.crc != crc32c(s.Payload) {
				t.Fatalf("frame %d: payload crc %08x, computed %v %08x", i, crc32c(s.Payload), in.hasCRC, in.crc)
			}
			off += len(enc)
			in.release()
		}
	}
}

// fuzzGRPCSegment decodes b as the Segments stream's codec does and
// checks the result against the generic protobuf decoder.
func fuzzGRPCSegment(t *testing.T, b []byte) func() {
	var in inSegment
	err := wireCodec{}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &in)
	if err != nil {
		if !errors.Is(err, errWire) {
			return func() { t.Fatalf("Unmarshal: error %v does not wrap errWire", err) }
		}
		return nil
	}
	return func() {
		defer in.release()
		var want pb.Segment
		if err := proto.Unmarshal(b, &want); err != nil {
			// The generic decoder also checks that strings are UTF-8;
			// the ring compares ring ids byte-wise and only prints
			// abort reasons.
			return
		}
		if !segmentsEqual(&in.seg, &want) {
			t.Fatalf("parseSegment gives %+v, proto.Unmarshal %+v", &in.seg, &want)
		}
		// What it parsed goes back out as the same segment.
		out, err := wireCodec{}.Marshal(&outSegment{seg: &in.seg})
		if err != nil {
			t.Fatal(err)
		}
		var again inSegment
		if err := (wireCodec{}).Unmarshal(out, &again); err != nil {
			t.Fatalf("re-encoded segment: %v", err)
		}
		defer again.release()
		if !segmentsEqual(&in.seg, &again.seg) {
			t.Fatalf("segment %+v re-encodes as %+v", &in.seg, &again.seg)
		}
	}
}

func segmentsEqual(a, b *pb.Segment) bool {
	return a.RingId == b.RingId && a.Generation == b.Generation && a.OpSeq == b.OpSeq && a.Phase == b.Phase &&
		a.Step == b.Step && a.Chunk == b.Chunk && a.SenderRank == b.SenderRank && a.Codec == b.Codec &&
		a.ElemType == b.ElemType && a.Op == b.Op && a.VectorLen == b.VectorLen && a.ElemCount == b.ElemCount &&
		bytes.Equal(a.Payload, b.Payload) && a.Crc32C == b.Crc32C && a.AbortReason == b.AbortReason
}

// fuzzCodecs is the order of FuzzSegment's codec byte.
var fuzzCodecs = []Codec{CodecNone, CodecS2, CodecZstd, CodecFP16, CodecInt8}

// fuzzMaxElems bounds a FuzzSegment chunk (a ring chunk of up to 256 KiB
// of int64s).
const fuzzMaxElems = 1 << 15

// fuzzZstdBlock is zstd's largest block: the decoder appends a whole
// block to the output before it checks the output against its cap, so a
// frame that outgrows a chunk may allocate up to one block beyond it
// (transiently) before decode refuses it.
const fuzzZstdBlock = 128 << 10

// fuzzRLEFrame is a zstd frame without a content size whose n blocks are
// each one byte run-length encoded to a whole block (128 KiB).
func fuzzRLEFrame(n int) []byte {
	p := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 15 << 3} // no content size, 32 MiB window
	for i := range n {
		last := byte(0)
		if i == n-1 {
			last = 1
		}
		p = append(p, last|1<<1, 0x00, 0x10, 'A') // RLE, 128 KiB
	}
	return p
}

// fuzzCoder is the coder of FuzzSegment, warmed up: the zstd decoder
// allocates its block buffers at its first blocks, once per coder.
var fuzzCoder = sync.OnceValue(func() *coder {
	c, err := newCoder(8 << 20) // the default MaxMessageBytes
	if err != nil {
		panic(err)
	}
	v := make([]int64, fuzzMaxElems)
	for i := range v {
		v[i] = int64(i*i) % 1000003
	}
	decode(c, CodecZstd, v, *encode(c, CodecZstd, v))
	decode(c, CodecZstd, v[:1], fuzzRLEFrame(3))
	return c
})

// FuzzSegment decodes a segment payload under each codec as op.handle
// does once a segment passed its header checks: the payload's length
// against maxEncodedLen of the chunk, then decode (none, s2, zstd) or
// decodeLossy (fp16, int8) into the chunk, then checkFinite. An input is
// a codec byte, an element type byte, a little-endian u16 element count
// (the chunk's, which the receiver knows from the op, not from the
// payload) and the payload.
//
// Allocation bound: 64 KiB + 64 bytes per input byte + 2 * the chunk's
// raw size (the coder's scratch buffer, which the ring keeps anyway), and
// under zstd 2 * 128 KiB more (the block the decoder appends past the
// chunk before it stops); nothing is allocated from a size the payload
// claims (an s2 or zstd header's decoded length or window size), and
// nothing is decoded beyond the chunk but that one block.
func FuzzSegment(f *testing.F) {
	c := fuzzCoder()
	i64 := []int64{0, 1, -1, math.MaxInt64, math.MinInt64, 1 << 40, -12345, 7, 7, 7}
	f64 := []float64{0, 1.5, -2.25, math.SmallestNonzeroFloat64, math.MaxFloat64, 1e-300, 3, 3, 3}
	f32 := []float32{0, 1.5, -2.25, math.SmallestNonzeroFloat32, math.MaxFloat32, 1e-30, 3, 3, 3, -0.001}
	seed := func(codec, et byte, n int, payload []byte) {
		f.Add(append([]byte{codec, et, byte(n), byte(n >> 8)}, payload...))
	}
	for ci, codec := range fuzzCodecs {
		if codec.Lossy() {
			seed(byte(ci), 2, len(f32), *encodeLossy(codec, f32))
			seed(byte(ci), 2, 0, *encodeLossy(codec, nil))
			continue
		}
		seed(byte(ci), 0, len(i64), *encode(c, codec, i64))
		seed(byte(ci), 1, len(f64), *encode(c, codec, f64))
		seed(byte(ci), 2, len(f32), *encode(c, codec, f32))
		seed(byte(ci), 0, 0, *encode(c, codec, []int64{}))
		long := make([]int64, 3000)
		for i := range long {
			long[i] = int64(i * i % 1000)
		}
		seed(byte(ci), 0, len(long), *encode(c, codec, long))
	}
	// zstd frames of run-length blocks: 256 KiB for a chunk of 8 bytes
	// and of 256 KiB, and 12.5 MiB (past the decoder's memory limit).
	seed(2, 0, 1, fuzzRLEFrame(2))
	seed(2, 0, fuzzMaxElems, fuzzRLEFrame(2))
	seed(2, 0, fuzzMaxElems, fuzzRLEFrame(100))

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 {
			return
		}
		codec := fuzzCodecs[int(data[0])%len(fuzzCodecs)]
		n := int(binary.LittleEndian.Uint16(data[2:])) % (fuzzMaxElems + 1)
		payload := data[4:]
		switch data[1] % 3 {
		case 0:
			if codec.Lossy() {
				return // lossy codecs are of float32 sums only
			}
			fuzzDecode(t, c, codec, make([]int64, n), payload)
		case 1:
			if codec.Lossy() {
				return
			}
			fuzzDecode(t, c, codec, make([]float64, n), payload)
		default:
			fuzzDecode(t, c, codec, make([]float32, n), payload)
		}
	})
}

func fuzzDecode[T elem](t *testing.T, c *coder, codec Codec, dst []T, payload []byte) {
	raw := len(dst) * elemSize[T]()
	if len(payload) > maxEncodedLen(codec, raw, len(dst)) {
		return // ErrOversized in op.handle
	}
	limit := uint64(64<<10 + 64*len(payload) + 2*raw)
	if codec == CodecZstd {
		limit += 2 * fuzzZstdBlock
	}
	var err error
	n := fuzzcheck.Alloc(limit, nil, func() {
		if codec.Lossy() {
			err = decodeLossy(codec, any(dst).([]float32), payload)
		} else {
			err = decode(c, codec, dst, payload)
		}
		if err == nil {
			err = checkFinite(dst)
		}
	})
	if n > limit {
		t.Fatalf("%s: decoding %d bytes into %d elements allocated %d bytes, bound %d", codec, len(payload), len(dst), n, limit)
	}
	if err != nil {
		if !errors.Is(err, ErrShape) && !errors.Is(err, ErrNonFinite) {
			t.Fatalf("%s: error %v wraps neither ErrShape nor ErrNonFinite", codec, err)
		}
		return
	}
	if codec.Lossy() {
		return // checkFinite passed: every value is finite
	}
	// A lossless payload that decoded is the values: they encode and
	// decode to the same bits (and under none, to the same bytes).
	p := encode(c, codec, dst)
	defer sharedPool.Put(p)
	if codec == CodecNone && !bytes.Equal(*p, payload) {
		t.Fatalf("none: %d bytes decode to values that encode to other bytes", len(payload))
	}
	again := make([]T, len(dst))
	if err := decode(c, codec, again, *p); err != nil {
		t.Fatalf("%s: re-encoded values do not decode: %v", codec, err)
	}
	if !bytes.Equal(asBytes(again), asBytes(dst)) {
		t.Fatalf("%s: values change across a re-encode", codec)
	}
}

// Package collective is the worker-to-worker collective layer: a ring
// all-reduce (reduce-scatter then all-gather, each part streamed in
// pipelined chunks) that implements trainer.Reducer, with lossless codecs for
// the exact int64 sums and opt-in lossy float32 codecs with error feedback,
// a barrier, and the state transfer a joining worker takes its replica from.
//
// New makes a Ring that owns its server. An elastic worker instead makes one
// Host (NewHost) for its whole life, on one address, and a Ring per
// membership generation with Host.Ring: the host routes each incoming
// stream and barrier to the ring of its (ring id, generation), holds those
// of a generation it has not made yet until it does (HostConfig.WaitForRing)
// and rejects those of a generation it has had with ErrStaleGeneration. The
// host also serves the published state snapshot, with or without a ring,
// and optionally requires mTLS and a bearer token on every call.
//
// Segments go to the successor over the raw data plane by default
// (Config.Transport): one persistent TCP (or TLS) connection carrying
// length-prefixed binary frames, which the host tells from gRPC by its first
// bytes on the same listener, with the same token, TLS, routing and fencing;
// barriers and state transfer are gRPC. Transport "grpc" sends the segments
// on a gRPC stream instead. A host receives both.
//
// Every rank of a ring ends a call with the same bits: int64 sums are
// integer additions (associative, so the result is the sequential sum
// whatever the ring size), and in the all-gather every rank receives the
// bytes the owner of a part encoded, so float results agree too.
//
// Where things are:
//
//	ring.go                  Ring: New, the collective calls (SumInt64,
//	                         MaxFloat64, SumFloat32), residual, Close, state
//	                         of the ring (broken, closing), Stats,
//	                         PublishState; Barrier is in server.go
//	ring_reduce.go           one all-reduce: allReduce and op (parts, chunks,
//	                         the reduce-scatter and all-gather sends)
//	ring_handle.go           op.handle: the checks on a received segment and
//	                         how it is applied and forwarded
//	segment.go               outSegment and inSegment, a segment in flight
//	                         and its pooled payload buffer
//	queue.go, pool.go        the send queue to the successor; the payload
//	                         buffer pool
//	transport_raw.go         raw data plane: frame, hello and reply formats
//	transport_raw_server.go  raw data plane, host side: the listener that
//	                         tells raw from gRPC connections, serveRaw
//	transport_raw_client.go  raw data plane, sender side: dialRaw, sendRaw
//	transport_grpc.go        gRPC data plane, sender side (sendGRPC, the
//	                         client connections) and the segments' gRPC codec
//	server.go                the gRPC service: Segments (receiving side of
//	                         the gRPC data plane), Barrier
//	host.go                  Host: the server of a process's rings, routing
//	                         and fencing by (ring id, generation)
//	state.go                 state transfer: the published snapshot, its
//	                         service and FetchState
//	codec.go                 the codecs' wire layouts and shared helpers
//	                         (element types, CRC-32C, raw byte views)
//	codec_lossless.go        none, s2 and zstd (byte-plane shuffle)
//	codec_lossy.go           fp16 and int8, for SumFloat32 with error feedback
//	chunkcodec.go            ChunkCodec: the codecs outside a ring, for
//	                         benchmarks (collective/ringbench)
//	config.go                Config, Codec, Transport
//	stats.go                 Stats and their counters
//	errors.go                the sentinel errors and their gRPC statuses
//
// The benchmark harness (causalrm bench allreduce) is collective/ringbench.
package collective

package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/causalrm/causalrm/internal/fuzzcheck"
	"reflect"
	"sync"
	"testing"
)

// Fuzz targets of the decoders of bytes the coordinator reads from raft:
// snapshots (Decode, as fsm.Restore reads them) and log entries
// (DecodeCommand then Apply, as fsm.Apply does). Each must return a value
// or an error, never panic, never hang, and never allocate more than the
// bound stated at its target; the corpus under testdata/fuzz/ holds the
// inputs that found the bugs fixed so far and runs with every `go test`.

// fuzzJSONFactor is the allocation allowed per input byte. The JSON part
// of a snapshot or command is decoded by encoding/json into slices of
// records: `{},` (3 bytes) is a zero record of up to 96 bytes
// (CheckpointRecord), and a slice grown one element at a time allocates
// up to ~5x its final size (1.25x steps), so 3 bytes of input may cost
// ~160 bytes; raw blob and upload data cost at most 3x their size.
const fuzzJSONFactor = 256

func fuzzMust(s *State, c Command) {
	if _, err := s.Apply(c); err != nil {
		panic(fmt.Sprintf("fuzz seed: apply %v: %v", c.Op, err))
	}
}

func fuzzSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// fuzzCommands are real commands, in an order that applies cleanly to an
// empty state; fuzzStates applies them.
func fuzzCommands() []Command {
	ms := []Member{{"a", "127.0.0.1:1"}, {"b", "127.0.0.1:2"}}
	data := bytes.Repeat([]byte{0, 255, 7}, 20)
	return []Command{
		{Op: OpSubmit, Time: 1, Job: &JobSpec{ID: "j", Shards: 4, MinWorkers: 2, CheckpointEverySteps: 5, Config: json.RawMessage(`{"lr":0.001}`)}},
		{Op: OpRegister, Time: 2, Member: &ms[0]},
		{Op: OpRegister, Time: 3, Member: &ms[1]},
		{Op: OpRegister, Time: 4, Member: &Member{"c", "127.0.0.1:3"}},
		{Op: OpSetGeneration, Time: 5, Generation: &Generation{Number: 1, Members: ms, Owner: Rebalance(Generation{}, ms, 4), Cause: Cause{{Kind: ChangeStart}}}},
		{Op: OpActivate, Time: 6, WorkerID: "a", Generation: &Generation{Number: 1}},
		{Op: OpReportProgress, Time: 7, Progress: &Progress{WorkerID: "a", Generation: 1, GlobalStep: 10, Stage: "ps", Epoch: 1, Step: 10,
			ParamHash: "h1", RowsPerSec: 12.5, Ranges: []StepRange{{"ps", 1, 0, 10}}}},
		{Op: OpPutCheckpointChunk, Time: 8, UploadID: "u1", Data: data[:25]},
		{Op: OpPutCheckpointChunk, Time: 9, UploadID: "u1", Offset: 25, Data: data[25:]},
		{Op: OpCommitCheckpoint, Time: 10, UploadID: "u1", Checkpoint: &CheckpointRecord{GlobalStep: 10, Stage: "ps", Epoch: 1, Step: 10,
			Size: int64(len(data)), SHA256: fuzzSHA(data), Location: LocationRaft}},
		{Op: OpCommitCheckpoint, Time: 11, Checkpoint: &CheckpointRecord{GlobalStep: 10, Stage: "ps", Size: 99, Location: "dir:/tmp/ck"}},
		{Op: OpPutCheckpointChunk, Time: 12, UploadID: "u2", Data: []byte{1, 2, 3}},
		{Op: OpReportProgress, Time: 13, Progress: &Progress{WorkerID: "b", Generation: 1, GlobalStep: 20, Stage: "ps", Epoch: 1, Step: 20,
			ParamHash: "h2", Ranges: []StepRange{{"ps", 1, 10, 20}}}},
		{Op: OpReportProgress, Time: 14, Progress: &Progress{WorkerID: "a", Generation: 1, GlobalStep: 20, ParamHash: "h2"}},
		{Op: OpLeave, Time: 15, WorkerID: "b"},
		{Op: OpRewind, Time: 16, GlobalStep: 10, CheckpointID: 1},
		{Op: OpDeregister, Time: 17, WorkerID: "c"},
		{Op: OpFail, Time: 18, Message: "boom"},
		{Op: OpRewind, Time: 19, GlobalStep: 0},
		{Op: OpFinish, Time: 20, RewardSHA: "abc"},
	}
}

// fuzzStates returns the encodings of an empty state and of the states
// after every command of fuzzCommands, and the commands' encodings.
var fuzzStates = sync.OnceValues(func() ([][]byte, [][]byte) {
	s := &State{}
	enc := func() []byte {
		b, err := s.MarshalBinary()
		if err != nil {
			panic(err)
		}
		return b
	}
	states := [][]byte{enc()}
	var cmds [][]byte
	for _, c := range fuzzCommands() {
		fuzzMust(s, c)
		states = append(states, enc())
		b, err := EncodeCommand(c)
		if err != nil {
			panic(err)
		}
		cmds = append(cmds, b)
	}
	return states, cmds
})

// fuzzBases are the states FuzzCommand applies a command to: an empty
// one, one mid-job (workers, a generation, progress, a raft checkpoint and
// an unfinished upload) and the finished job.
func fuzzBases() [][]byte {
	states, _ := fuzzStates()
	return [][]byte{states[0], states[13], states[len(states)-1]}
}

// FuzzSnapshot restores a state from snapshot bytes as fsm.Restore does
// (Decode), and checks that a restored state encodes canonically (decode
// of its encoding gives the same bytes) and takes every command of
// fuzzCommands without a panic.
//
// Allocation bound of Decode: 64 KiB + fuzzJSONFactor (256) bytes per
// input byte; nothing is allocated from a length the input claims before
// that many bytes have arrived.
func FuzzSnapshot(f *testing.F) {
	states, _ := fuzzStates()
	for _, b := range states {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s *State
		var err error
		limit := uint64(64<<10 + fuzzJSONFactor*len(data))
		n := fuzzcheck.Alloc(limit, nil, func() { s, err = Decode(bytes.NewReader(data)) })
		if n > limit {
			t.Fatalf("decoding %d bytes allocated %d bytes, bound %d", len(data), n, limit)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		enc, err := s.MarshalBinary()
		if err != nil {
			t.Fatalf("a decoded state does not encode: %v", err)
		}
		d, err := Decode(bytes.NewReader(enc))
		if err != nil {
			t.Fatalf("a decoded state's encoding does not decode: %v", err)
		}
		if again, _ := d.MarshalBinary(); !bytes.Equal(again, enc) {
			t.Fatalf("a decoded state's encoding is not canonical:\n%q\n%q", enc, again)
		}
		for _, c := range fuzzCommands() {
			s.Apply(c)
		}
	})
}

// FuzzCommand decodes a raft log entry as fsm.Apply does (DecodeCommand)
// and applies it to each of fuzzBases, twice from separately decoded
// copies: Apply must not panic, must be deterministic (same result, same
// error, same state bytes) and must leave the state unchanged when it
// returns an error (except ErrJobFailed from a report that failed the
// job, as Apply documents).
//
// Allocation bound of DecodeCommand then Apply: 64 KiB + fuzzJSONFactor
// (256) bytes per input byte + 3x the base state's encoding (a command
// may copy a state's slices once).
func FuzzCommand(f *testing.F) {
	_, cmds := fuzzStates()
	for _, b := range cmds {
		f.Add(b)
	}
	bases := fuzzBases()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		for bi, base := range bases {
			var out [2]struct {
				v   any
				err error
				enc []byte
			}
			for k := range out {
				var s *State
				var c Command
				var err error
				prepare := func() {
					if s, err = Decode(bytes.NewReader(base)); err != nil {
						t.Fatal(err)
					}
				}
				limit := uint64(64<<10 + fuzzJSONFactor*len(data) + 3*len(base))
				n := fuzzcheck.Alloc(limit, prepare, func() {
					if c, err = DecodeCommand(data); err != nil {
						return
					}
					out[k].v, out[k].err = s.Apply(c)
				})
				if err != nil {
					t.Fatalf("the command decoded once, not again: %v", err)
				}
				if n > limit {
					t.Fatalf("base %d: decoding and applying %d bytes (%v) allocated %d bytes, bound %d", bi, len(data), c.Op, n, limit)
				}
				if out[k].enc, err = s.MarshalBinary(); err != nil {
					t.Fatalf("base %d: %v leaves a state that does not encode: %v", bi, c.Op, err)
				}
				if c.Op == OpPutCheckpointChunk && out[k].err == nil && !fuzzChunkHeld(s, c) {
					t.Fatalf("base %d: chunk of %d bytes at offset %d of upload %q accepted, but the upload does not hold it",
						bi, len(c.Data), c.Offset, c.UploadID)
				}
			}
			a, b := out[0], out[1]
			if !reflect.DeepEqual(a.v, b.v) || fmt.Sprint(a.err) != fmt.Sprint(b.err) || !bytes.Equal(a.enc, b.enc) {
				t.Fatalf("base %d: %v is not deterministic: %v, %v vs %v, %v", bi, c.Op, a.v, a.err, b.v, b.err)
			}
			if a.err != nil && !errors.Is(a.err, ErrJobFailed) && !bytes.Equal(a.enc, base) {
				t.Fatalf("base %d: %v failed (%v) but changed the state", bi, c.Op, a.err)
			}
		}
	})
}

// fuzzChunkHeld reports whether the chunk of an accepted
// PutCheckpointChunk is in s: within the upload's bytes, or the upload is
// committed already.
func fuzzChunkHeld(s *State, c Command) bool {
	for _, b := range s.Blobs {
		if b.UploadID == c.UploadID {
			return true
		}
	}
	for _, u := range s.Uploads {
		if u.ID == c.UploadID {
			return c.Offset >= 0 && c.Offset <= u.Size && int64(len(c.Data)) <= u.Size-c.Offset &&
				bytes.Equal(u.Data[c.Offset:c.Offset+int64(len(c.Data))], c.Data)
		}
	}
	return false
}

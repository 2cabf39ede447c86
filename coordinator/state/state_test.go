package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func mustApply(t *testing.T, s *State, c Command) any {
	t.Helper()
	v, err := s.Apply(c)
	if err != nil {
		t.Fatalf("apply %v: %v", c.Op, err)
	}
	return v
}

func job(shards, min int) *JobSpec {
	return &JobSpec{ID: "j", Shards: shards, MinWorkers: min, Config: json.RawMessage(`{"lr":0.001}`)}
}

// running returns a state with a job, workers a and b in generation 1.
func running(t *testing.T) *State {
	t.Helper()
	s := &State{}
	mustApply(t, s, Command{Op: OpSubmit, Time: 1, Job: job(4, 2)})
	mustApply(t, s, Command{Op: OpRegister, Time: 2, Member: &Member{"a", "127.0.0.1:1"}})
	mustApply(t, s, Command{Op: OpRegister, Time: 3, Member: &Member{"b", "127.0.0.1:2"}})
	ms := []Member{{"a", "127.0.0.1:1"}, {"b", "127.0.0.1:2"}}
	mustApply(t, s, Command{Op: OpSetGeneration, Time: 4, Generation: &Generation{Number: 1, Members: ms, Owner: Rebalance(Generation{}, ms, 4), Cause: Cause{{Kind: ChangeStart}}}})
	return s
}

func TestValidateNamesField(t *testing.T) {
	good := JobSpec{ID: "j", Shards: 8, MinWorkers: 2}
	cases := []struct {
		field string
		mut   func(*JobSpec)
	}{
		{"id", func(j *JobSpec) { j.ID = "" }},
		{"shards", func(j *JobSpec) { j.Shards = 0 }},
		{"shards", func(j *JobSpec) { j.Shards = 1<<16 + 1 }},
		{"min_workers", func(j *JobSpec) { j.MinWorkers = 0 }},
		{"min_workers", func(j *JobSpec) { j.MinWorkers = 9 }},
		{"progress_every", func(j *JobSpec) { j.ProgressEvery = -1 }},
		{"checkpoint_every_steps", func(j *JobSpec) { j.CheckpointEverySteps = -1 }},
		{"checkpoint_every_seconds", func(j *JobSpec) { j.CheckpointEverySeconds = -1 }},
		{"checkpoint_keep", func(j *JobSpec) { j.CheckpointKeep = -3 }},
		{"config", func(j *JobSpec) { j.Config = json.RawMessage("{") }},
	}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		j := good
		c.mut(&j)
		err := j.Validate()
		if err == nil || !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), fmt.Sprintf("field %q", c.field)) {
			t.Errorf("%s: got %v", c.field, err)
		}
	}
	j := good
	j.Shards = 0
	if got := j.Validate().Error(); got != `invalid job spec: field "shards": must be 1..65536, got 0` {
		t.Errorf("message %q", got)
	}
	s := &State{}
	if _, err := s.Apply(Command{Op: OpSubmit, Job: &j}); !errors.Is(err, ErrInvalidSpec) || s.Job != nil {
		t.Fatalf("apply of a bad spec: %v, job %v", err, s.Job)
	}
}

func TestProgressRules(t *testing.T) {
	s := running(t)
	rep := func(w string, gs uint64, hash string, rs ...StepRange) error {
		_, err := s.Apply(Command{Op: OpReportProgress, Time: 10, Progress: &Progress{WorkerID: w, Generation: 1, GlobalStep: gs, Stage: "ps", ParamHash: hash, Ranges: rs}})
		return err
	}
	r := func(e, f, to int) StepRange { return StepRange{"ps", e + 1, f, to} } // epochs are 1-based
	if err := rep("a", 10, "h10", r(0, 0, 10)); err != nil {
		t.Fatal(err)
	}
	if err := rep("b", 10, "h10", r(0, 0, 10)); err != nil {
		t.Fatal(err)
	}
	if err := rep("b", 20, "h20", r(0, 10, 16), r(1, 0, 4)); err != nil {
		t.Fatal(err)
	}
	before, _ := s.MarshalBinary()
	// Duplicate of the same worker: no-op even with other contents.
	if err := rep("b", 20, "other", r(0, 0, 3)); err != nil {
		t.Fatal(err)
	}
	after, _ := s.MarshalBinary()
	if !bytes.Equal(before, after) {
		t.Fatal("duplicate report changed the state")
	}
	want := []StepRange{r(0, 0, 16), r(1, 0, 4)}
	if got := s.StepLog(); !reflect.DeepEqual(got, want) {
		t.Fatalf("log %v, want %v", got, want)
	}
	if err := CheckExactlyOnce(s.StepLog()[:1], map[string]int{"ps": 16}, map[string]int{"ps": 1}); err != nil {
		t.Fatal(err)
	}
	if err := CheckExactlyOnce(s.StepLog(), map[string]int{"ps": 16}, map[string]int{"ps": 2}); err == nil || !strings.Contains(err.Error(), "epoch 2 step 4 committed 0 times") {
		t.Fatalf("gap not found: %v", err)
	}
	if err := CheckExactlyOnce(append(s.StepLog()[:1], r(0, 15, 16)), map[string]int{"ps": 16}, map[string]int{"ps": 1}); err == nil || !strings.Contains(err.Error(), "step 15 committed 2 times") {
		t.Fatalf("repeat not found: %v", err)
	}
	// Stale: unknown worker, future generation, not a member.
	if err := rep("zz", 30, "x", r(1, 4, 5)); !errors.Is(err, ErrUnknownWorker) {
		t.Fatalf("unknown worker: %v", err)
	}
	_, err := s.Apply(Command{Op: OpReportProgress, Progress: &Progress{WorkerID: "a", Generation: 7, GlobalStep: 30}})
	if !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("future generation: %v", err)
	}
	// Divergent hash.
	err = rep("a", 20, "h20-bad", r(0, 10, 16), r(1, 0, 4))
	if !errors.Is(err, ErrJobFailed) || !strings.Contains(err.Error(), "divergent parameter hashes at global step 20: worker b has h20, worker a has h20-bad") {
		t.Fatalf("divergence: %v", err)
	}
	if s.Status.Phase != JobFailed {
		t.Fatalf("status %+v", s.Status)
	}
	if err := rep("b", 30, "h", r(1, 4, 5)); !errors.Is(err, ErrJobFailed) {
		t.Fatalf("report to a failed job: %v", err)
	}

	// Overlap.
	s = running(t)
	if err := rep("a", 10, "h", r(0, 0, 10)); err != nil {
		t.Fatal(err)
	}
	err = rep("b", 15, "h", r(0, 8, 13))
	if !errors.Is(err, ErrJobFailed) || !strings.Contains(err.Error(), `step 8 of stage "ps" epoch 1`) || !strings.Contains(err.Error(), "worker b") {
		t.Fatalf("overlap: %v", err)
	}
}

func TestRewind(t *testing.T) {
	s := running(t)
	for i, w := range []string{"a", "b", "a"} {
		_, err := s.Apply(Command{Op: OpReportProgress, Progress: &Progress{WorkerID: w, Generation: 1, GlobalStep: uint64(10 * (i + 1)), ParamHash: fmt.Sprint(i),
			Ranges: []StepRange{{"ps", 1, 10 * i, 10 * (i + 1)}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	mustApply(t, s, Command{Op: OpRewind, GlobalStep: 15, Time: 99})
	if got := s.StepLog(); !reflect.DeepEqual(got, []StepRange{{"ps", 1, 0, 15}}) || s.Watermark.GlobalStep != 15 {
		t.Fatalf("log %v wm %+v", got, s.Watermark)
	}
	if len(s.Rewinds) != 1 || s.Rewinds[0] != (Rewind{From: 30, To: 15, Time: 99}) {
		t.Fatalf("rewinds %+v", s.Rewinds)
	}
	// Steps after the rewind can be committed again, once.
	mustApply(t, s, Command{Op: OpReportProgress, Progress: &Progress{WorkerID: "b", Generation: 1, GlobalStep: 30, Ranges: []StepRange{{"ps", 1, 15, 30}}}})
	if err := CheckExactlyOnce(s.StepLog(), map[string]int{"ps": 30}, map[string]int{"ps": 1}); err != nil {
		t.Fatal(err)
	}
}

func TestMembership(t *testing.T) {
	s := running(t)
	if _, err := s.Apply(Command{Op: OpRegister, Member: &Member{"a", "elsewhere:1"}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("re-register elsewhere: %v", err)
	}
	mustApply(t, s, Command{Op: OpRegister, Member: &Member{"a", "127.0.0.1:1"}})
	mustApply(t, s, Command{Op: OpLeave, WorkerID: "b"})
	if w, _ := s.Worker("b"); w.Status != WorkerLeaving {
		t.Fatalf("b %+v", w)
	}
	g, _ := s.Current()
	stale := g.Clone()
	stale.Cause = Cause{{Kind: ChangeJoin, Member: "other"}}
	if _, err := s.Apply(Command{Op: OpSetGeneration, Generation: &stale}); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("stale generation: %v", err)
	}
	mustApply(t, s, Command{Op: OpSetGeneration, Generation: &g}) // replay is a no-op
	ms := []Member{{"a", "127.0.0.1:1"}}
	mustApply(t, s, Command{Op: OpSetGeneration, Generation: &Generation{Number: 2, Members: ms, Owner: Rebalance(g, ms, 4), Cause: Cause{{Kind: ChangeLeave, Member: "b"}}}})
	if w, _ := s.Worker("b"); w.Status != WorkerGone {
		t.Fatalf("b %+v", w)
	}
	if _, err := s.Apply(Command{Op: OpReportProgress, Progress: &Progress{WorkerID: "b", Generation: 1, GlobalStep: 5}}); !errors.Is(err, ErrUnknownWorker) {
		t.Fatalf("report of a removed worker: %v", err)
	}
	if _, err := s.Apply(Command{Op: OpSetGeneration, Generation: &Generation{Number: 3, Members: []Member{{"zz", "x"}}, Owner: make([]int, 4)}}); !errors.Is(err, ErrUnknownWorker) {
		t.Fatalf("generation with an unknown worker: %v", err)
	}
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func putCheckpoint(t *testing.T, s *State, upload string, step uint64, data []byte) CheckpointRecord {
	t.Helper()
	for off := 0; off < len(data); off += 7 {
		end := min(off+7, len(data))
		mustApply(t, s, Command{Op: OpPutCheckpointChunk, UploadID: upload, Offset: int64(off), Data: data[off:end]})
		// Replayed chunk: no-op.
		mustApply(t, s, Command{Op: OpPutCheckpointChunk, UploadID: upload, Offset: int64(off), Data: data[off:end]})
	}
	rec := &CheckpointRecord{GlobalStep: step, Stage: "ps", Size: int64(len(data)), SHA256: sha(data), Location: LocationRaft}
	return mustApply(t, s, Command{Op: OpCommitCheckpoint, UploadID: upload, Checkpoint: rec, Time: int64(step)}).(CheckpointRecord)
}

func TestCheckpointCompaction(t *testing.T) {
	s := running(t)
	var recs []CheckpointRecord
	for i := range 4 {
		data := bytes.Repeat([]byte{byte(i)}, 30+i)
		recs = append(recs, putCheckpoint(t, s, fmt.Sprint("u", i), uint64(10*i), data))
	}
	if len(s.Checkpoints) != 2 || len(s.Blobs) != 2 || s.Checkpoints[0].ID != recs[2].ID || s.Checkpoints[1].ID != 4 {
		t.Fatalf("kept %+v blobs %d", s.Checkpoints, len(s.Blobs))
	}
	if _, ok := s.Blob(recs[1].ID); ok {
		t.Fatal("compacted blob kept")
	}
	b, ok := s.Blob(recs[3].ID)
	if !ok || !bytes.Equal(b, bytes.Repeat([]byte{3}, 33)) {
		t.Fatal("latest blob wrong")
	}
	// Commit replay returns the same record.
	r := mustApply(t, s, Command{Op: OpCommitCheckpoint, UploadID: "u3", Checkpoint: &CheckpointRecord{Location: LocationRaft}}).(CheckpointRecord)
	if r != recs[3] {
		t.Fatalf("replayed commit %+v", r)
	}
	// Bad checksum: refused, nothing stored.
	mustApply(t, s, Command{Op: OpPutCheckpointChunk, UploadID: "bad", Data: []byte("abc")})
	_, err := s.Apply(Command{Op: OpCommitCheckpoint, UploadID: "bad", Checkpoint: &CheckpointRecord{Size: 3, SHA256: sha([]byte("abd")), Location: LocationRaft}})
	if !errors.Is(err, ErrChecksumMismatch) || len(s.Checkpoints) != 2 {
		t.Fatalf("bad sum: %v", err)
	}
	if s.Uploads[0].ID != "bad" {
		t.Fatalf("uploads %+v", s.Uploads)
	}
}

// full returns a state holding every record type.
func full(t *testing.T) *State {
	s := running(t)
	mustApply(t, s, Command{Op: OpRegister, Member: &Member{"c", "127.0.0.1:3"}, Time: 5})
	mustApply(t, s, Command{Op: OpReportProgress, Progress: &Progress{WorkerID: "a", Generation: 1, GlobalStep: 10, ParamHash: "h", RowsPerSec: 12.5, Ranges: []StepRange{{"ps", 0, 0, 10}},
		Losses: []EpochLoss{{"ps", 1, 0.5, 0.25}}}})
	putCheckpoint(t, s, "u1", 10, bytes.Repeat([]byte{0, 255, 7}, 100))
	mustApply(t, s, Command{Op: OpPutCheckpointChunk, UploadID: "u2", Data: []byte{1, 2, 3}})
	mustApply(t, s, Command{Op: OpReportProgress, Progress: &Progress{WorkerID: "b", Generation: 1, GlobalStep: 20, ParamHash: "h2", Ranges: []StepRange{{"ps", 0, 10, 20}}}})
	mustApply(t, s, Command{Op: OpRewind, GlobalStep: 10, CheckpointID: 1, Time: 50})
	mustApply(t, s, Command{Op: OpFail, Message: "boom", Time: 60})
	return s
}

func roundTrip(t *testing.T, s *State) *State {
	t.Helper()
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := d.MarshalBinary()
	if !bytes.Equal(b, b2) {
		t.Fatal("encoding is not deterministic across a round trip")
	}
	return d
}

func TestSnapshotRoundTripPerRecord(t *testing.T) {
	s := full(t)
	d := roundTrip(t, s)
	checks := map[string]func(a, b *State) bool{
		"job":     func(a, b *State) bool { return reflect.DeepEqual(a.Job, b.Job) && a.Job != nil },
		"status":  func(a, b *State) bool { return a.Status == b.Status && a.Status.Phase == JobFailed },
		"workers": func(a, b *State) bool { return reflect.DeepEqual(a.Workers, b.Workers) && len(a.Workers) == 3 },
		"generations": func(a, b *State) bool {
			return reflect.DeepEqual(a.Generations, b.Generations) && len(a.Generations) == 1
		},
		"log":         func(a, b *State) bool { return reflect.DeepEqual(a.Log, b.Log) && len(a.Log) == 1 },
		"watermark":   func(a, b *State) bool { return a.Watermark == b.Watermark && a.Watermark.GlobalStep == 10 },
		"recent":      func(a, b *State) bool { return reflect.DeepEqual(a.Recent, b.Recent) && len(a.Recent) == 1 },
		"lastreports": func(a, b *State) bool { return reflect.DeepEqual(a.LastReports, b.LastReports) },
		"rewinds":     func(a, b *State) bool { return reflect.DeepEqual(a.Rewinds, b.Rewinds) && len(a.Rewinds) == 1 },
		"checkpoints": func(a, b *State) bool {
			return reflect.DeepEqual(a.Checkpoints, b.Checkpoints) && len(a.Checkpoints) == 1
		},
		"blobs":   func(a, b *State) bool { return reflect.DeepEqual(a.Blobs, b.Blobs) && len(a.Blobs[0].Data) == 300 },
		"uploads": func(a, b *State) bool { return reflect.DeepEqual(a.Uploads, b.Uploads) && len(a.Uploads) == 1 },
		"nextid":  func(a, b *State) bool { return a.NextCheckpointID == b.NextCheckpointID && a.NextCheckpointID == 1 },
	}
	for name, ok := range checks {
		if !ok(s, d) {
			t.Errorf("%s did not round-trip", name)
		}
	}
	if !reflect.DeepEqual(s, d) {
		t.Error("state did not round-trip")
	}
	// Blobs are stored raw: the encoding is not much bigger than the data.
	big := running(t)
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	putCheckpoint(t, big, "u", 1, data[:1<<16])
	b, _ := big.MarshalBinary()
	if len(b) > 1<<16+4096 {
		t.Fatalf("snapshot of a 64 KiB blob is %d bytes", len(b))
	}
	if _, err := Decode(bytes.NewReader(b[:len(b)-1])); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated snapshot: %v", err)
	}
}

func TestCommandRoundTrip(t *testing.T) {
	cmds := []Command{
		{Op: OpSubmit, Time: 1, Job: job(3, 1)},
		{Op: OpRegister, Member: &Member{"a", "x:1"}},
		{Op: OpLeave, WorkerID: "a"},
		{Op: OpSetGeneration, Generation: &Generation{Number: 2, Members: []Member{{"a", "x"}}, Owner: []int{0, 0}, Cause: Cause{{Kind: ChangeCrash, Member: "b"}}}},
		{Op: OpReportProgress, Progress: &Progress{WorkerID: "a", Ranges: []StepRange{{"s", 1, 2, 3}}, RowsPerSec: 1.5}},
		{Op: OpPutCheckpointChunk, UploadID: "u", Offset: 5, Data: []byte{0, 1, 2, 255}},
		{Op: OpCommitCheckpoint, UploadID: "u", Checkpoint: &CheckpointRecord{Size: 3, Location: "dir:/x"}},
		{Op: OpRewind, GlobalStep: 4, CheckpointID: 2},
		{Op: OpFail, Message: "m"},
		{Op: OpFinish, RewardSHA: "abc"},
	}
	for _, c := range cmds {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		d, err := DecodeCommand(b)
		if err != nil || !reflect.DeepEqual(c, d) {
			t.Errorf("%v: got %+v, %v", c.Op, d, err)
		}
	}
	if _, err := DecodeCommand([]byte{9, 9}); !errors.Is(err, ErrCorrupt) {
		t.Fatal(err)
	}
}

// minimalMoves is the fewest kept-shard moves that balance: targets give
// the larger share to the members with the most kept shards.
func minimalMoves(load []int, shards int) int {
	n := len(load)
	q, r := shards/n, shards%n
	sorted := append([]int(nil), load...)
	for i := range sorted { // descending
		for j := i + 1; j < len(sorted); j++ {
			if sorted[j] > sorted[i] {
				sorted[i], sorted[j] = sorted[j], sorted[i]
			}
		}
	}
	moves := 0
	for i, l := range sorted {
		t := q
		if i < r {
			t++
		}
		moves += max(0, l-t)
	}
	return moves
}

func TestRebalanceProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 300 {
		shards := 1 + rng.IntN(80)
		var g Generation
		next := 0
		for step := range 12 {
			var members []Member
			for _, m := range g.Members {
				if rng.IntN(4) != 0 {
					members = append(members, m)
				}
			}
			for range rng.IntN(3) {
				members = append(members, Member{ID: fmt.Sprint("w", next)})
				next++
			}
			if len(members) == 0 {
				members = append(members, Member{ID: fmt.Sprint("w", next)})
				next++
			}
			if len(members) > shards {
				members = members[:shards]
			}
			owner := Rebalance(g, members, shards)
			if again := Rebalance(g, members, shards); !reflect.DeepEqual(owner, again) {
				t.Fatal("not deterministic")
			}
			load := make([]int, len(members))
			kept := make([]int, len(members))
			moved := 0
			for s, o := range owner {
				load[o]++
				if s < len(g.Owner) {
					prevID := g.Members[g.Owner[s]].ID
					if i := (Generation{Members: members}).Index(prevID); i >= 0 {
						kept[i]++
						if i != o {
							moved++
						}
					}
				}
			}
			lo, hi := shards, 0
			for _, l := range load {
				lo, hi = min(lo, l), max(hi, l)
			}
			if hi-lo > 1 {
				t.Fatalf("trial %d step %d: loads %v not balanced", trial, step, load)
			}
			if want := minimalMoves(kept, shards); moved != want {
				t.Fatalf("trial %d step %d: moved %d shards of survivors, minimum %d (kept %v)", trial, step, moved, want, kept)
			}
			g = Generation{Number: g.Number + 1, Members: members, Owner: owner}
		}
	}
}

// A report without a hash (a stage end) does not disagree with one that
// has it, and the first hash given for a step is what later ones must match.
func TestProgressEmptyHash(t *testing.T) {
	s := running(t)
	rep := func(w string, gs uint64, hash string, rs ...StepRange) error {
		_, err := s.Apply(Command{Op: OpReportProgress, Time: 10, Progress: &Progress{WorkerID: w, Generation: 1, GlobalStep: gs, Stage: "ps", ParamHash: hash, Ranges: rs}})
		return err
	}
	if err := rep("a", 10, "", StepRange{"ps", 1, 0, 10}); err != nil {
		t.Fatal(err)
	}
	if err := rep("b", 10, "h10", StepRange{"ps", 1, 0, 10}); err != nil {
		t.Fatalf("a hash after no hash: %v", err)
	}
	if s.Status.Phase == JobFailed {
		t.Fatalf("job failed: %s", s.Status.Message)
	}
	if h := s.Recent[len(s.Recent)-1]; h.GlobalStep != 10 || h.ParamHash != "h10" || h.WorkerID != "b" {
		t.Fatalf("the first hash given for step 10 is not the one kept: %+v", h)
	}
	s = running(t)
	if err := rep("a", 10, "h10", StepRange{"ps", 1, 0, 10}); err != nil {
		t.Fatal(err)
	}
	if err := rep("b", 10, ""); err != nil || s.Status.Phase == JobFailed {
		t.Fatalf("no hash after a hash: %v %s", err, s.Status.Message)
	}
}

// A relink request counts for the current generation only, from a member,
// first report wins; it survives a snapshot round trip and Clone.
func TestRelinkRequest(t *testing.T) {
	s := running(t)
	gen := func(n uint64) *Generation { return &Generation{Number: n} }
	if _, err := s.Apply(Command{Op: OpRelink, WorkerID: "a", Generation: gen(2)}); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("relink of a future generation: %v", err)
	}
	if _, err := s.Apply(Command{Op: OpRelink, WorkerID: "zz", Generation: gen(1)}); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("relink by a non-member: %v", err)
	}
	if _, err := s.Apply(Command{Op: OpRelink, WorkerID: "a"}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("relink without a generation: %v", err)
	}
	mustApply(t, s, Command{Op: OpRelink, Time: 10, WorkerID: "b", Generation: gen(1), Message: "checksum mismatch"})
	mustApply(t, s, Command{Op: OpRelink, Time: 11, WorkerID: "a", Generation: gen(1)})
	want := RelinkRequest{Generation: 1, WorkerID: "b", Message: "checksum mismatch", Time: 10}
	if s.Relink == nil || *s.Relink != want {
		t.Fatalf("relink %+v, want %+v", s.Relink, want)
	}
	c := s.Clone()
	s.Relink.WorkerID = "changed"
	if c.Relink == nil || *c.Relink != want {
		t.Fatalf("clone shares or lost the relink: %+v", c.Relink)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil || back.Relink == nil || *back.Relink != want {
		t.Fatalf("round trip: %+v %v", back.Relink, err)
	}
	// The next generation makes it stale: a report of generation 1 is refused.
	g, _ := s.Current()
	ms := g.Members
	mustApply(t, s, Command{Op: OpSetGeneration, Generation: &Generation{Number: 2, Members: ms, Owner: g.Owner, Cause: Cause{{Kind: ChangeRelink, Member: "b"}}}})
	if _, err := s.Apply(Command{Op: OpRelink, WorkerID: "a", Generation: gen(1)}); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("relink of the old generation: %v", err)
	}
}

// Relink generations in a row at one committed step make a streak; a
// committed step or another kind of generation ends it.
func TestRelinkStreak(t *testing.T) {
	s := running(t)
	next := func(kind ChangeKind) {
		t.Helper()
		g, _ := s.Current()
		mustApply(t, s, Command{Op: OpSetGeneration, Generation: &Generation{Number: g.Number + 1, Members: g.Members, Owner: g.Owner,
			Cause: Cause{{Kind: kind, Member: "a"}}}})
	}
	next(ChangeRelink)
	next(ChangeRelink)
	if k := s.RelinkStreak; k == nil || *k != (RelinkStreak{Count: 2, GlobalStep: 0}) {
		t.Fatalf("two relinks: %+v", k)
	}
	s.Watermark.GlobalStep = 5 // a step committed
	next(ChangeRelink)
	if k := s.RelinkStreak; k == nil || *k != (RelinkStreak{Count: 1, GlobalStep: 5}) {
		t.Fatalf("after progress: %+v", k)
	}
	next(ChangeJoin)
	if s.RelinkStreak != nil {
		t.Fatalf("a join kept the streak: %+v", s.RelinkStreak)
	}
}

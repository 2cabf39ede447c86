package coordinator

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	pb "github.com/causalrm/causalrm/proto/coordinatorpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func startSingle(t *testing.T, dataDir, token string) *Node {
	t.Helper()
	return startSolo(t, freeAddr(t), dataDir, func(c *Config) { c.Token = token })
}

func TestAuthAndRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n := startSingle(t, "", "s3cret")
	defer n.Close()

	// Wrong or missing token: Unauthenticated, nothing applied.
	for _, tok := range []string{"", "wrong"} {
		cc, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		cctx := ctx
		if tok != "" {
			cctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
		}
		api := pb.NewCoordinatorClient(cc)
		_, err = api.SubmitJob(cctx, &pb.SubmitJobRequest{Job: specToPB(state.JobSpec{ID: "x", Shards: 2, MinWorkers: 1})})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("token %q: submit answered %v", tok, err)
		}
		hb, err := api.Heartbeat(cctx)
		if err == nil {
			_ = hb.Send(&pb.Beat{WorkerId: "w"})
			_, err = hb.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("token %q: heartbeat answered %v", tok, err)
		}
		cc.Close()
	}
	if _, err := Dial(ctx, ClientConfig{Addrs: []string{n.GRPCAddr()}, Token: "wrong", Timeout: 2 * time.Second}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("dial with a wrong token: %v", err)
	}
	if st := n.State(); st.Job != nil || len(st.Workers) != 0 {
		t.Fatalf("unauthenticated calls reached the FSM: %+v", st)
	}

	cl, err := Dial(ctx, ClientConfig{Addrs: []string{n.GRPCAddr()}, Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Malformed spec: refused by the client and by the server, naming the field.
	bad := state.JobSpec{ID: "j", Shards: 0, MinWorkers: 1}
	if err := cl.SubmitJob(ctx, bad); !errors.Is(err, state.ErrInvalidSpec) || !strings.Contains(err.Error(), `field "shards"`) {
		t.Fatalf("client-side: %v", err)
	}
	err = cl.do(ctx, func(ctx context.Context, api pb.CoordinatorClient) error {
		_, err := api.SubmitJob(ctx, &pb.SubmitJobRequest{Job: specToPB(state.JobSpec{ID: "j", Shards: 4, MinWorkers: 1, Config: []byte("{nope")})})
		return err
	})
	if status.Code(err) != codes.InvalidArgument || !errors.Is(err, state.ErrInvalidSpec) || !strings.Contains(err.Error(), `field "config"`) {
		t.Fatalf("server-side: %v", err)
	}
	if n.State().Job != nil {
		t.Fatal("a malformed spec was applied")
	}

	if err := cl.SubmitJob(ctx, state.JobSpec{ID: "j", Shards: 4, MinWorkers: 1}); err != nil {
		t.Fatal(err)
	}
	if err := cl.SubmitJob(ctx, state.JobSpec{ID: "other", Shards: 4, MinWorkers: 1}); !errors.Is(err, state.ErrJobExists) {
		t.Fatalf("second job: %v", err)
	}
	if err := cl.Register(ctx, "w1", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	hctx, hcancel := context.WithCancel(ctx)
	w := startHeartbeat(hctx, cl, "w1")
	defer func() { hcancel(); <-w.done }()
	waitFor(t, 5*time.Second, "generation 1", func() bool { s := n.State(); return s.CurrentNumber() == 1 })

	// Unknown worker, stale (future) generation, non-member of a generation.
	cases := []struct {
		p    state.Progress
		want error
	}{
		{state.Progress{WorkerID: "ghost", Generation: 1, GlobalStep: 1}, state.ErrUnknownWorker},
		{state.Progress{WorkerID: "w1", Generation: 9, GlobalStep: 1}, state.ErrStaleGeneration},
		{state.Progress{WorkerID: "w1", Generation: 0, GlobalStep: 1}, state.ErrStaleGeneration},
	}
	for _, c := range cases {
		if err := cl.ReportProgress(ctx, c.p); !errors.Is(err, c.want) {
			t.Errorf("report %+v: %v, want %v", c.p, err, c.want)
		}
	}
	if got := n.State(); got.Watermark.GlobalStep != 0 || len(got.Log) != 0 {
		t.Fatalf("refused reports changed progress: %+v", got.Watermark)
	}
	// A heartbeat of an unknown worker is refused for good.
	if err := cl.Heartbeat(ctx, "ghost"); !errors.Is(err, state.ErrUnknownWorker) {
		t.Fatalf("heartbeat of an unknown worker: %v", err)
	}
	if _, _, err := cl.LatestCheckpoint(ctx); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("no checkpoint: %v", err)
	}
	if err := cl.Fail(ctx, "operator said so"); err != nil {
		t.Fatal(err)
	}
	if err := cl.ReportProgress(ctx, state.Progress{WorkerID: "w1", Generation: 1, GlobalStep: 1}); !errors.Is(err, state.ErrJobFailed) || !strings.Contains(err.Error(), "operator said so") {
		t.Fatalf("report to a failed job: %v", err)
	}
}

func TestCheckpoint64MiBSurvivesRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB through raft")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	dir := t.TempDir()
	n := startSingle(t, dir, "")
	cl, err := Dial(ctx, ClientConfig{Addrs: []string{n.GRPCAddr()}, Timeout: 40 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.SubmitJob(ctx, state.JobSpec{ID: "j", Shards: 4, MinWorkers: 1}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 64<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cl.PutCheckpoint(ctx, state.CheckpointRecord{GlobalStep: 100, Stage: "ps", Epoch: 1, Step: 3}, data); err != nil {
		t.Fatal(err)
	}
	t.Logf("64 MiB checkpoint stored through raft in %v", time.Since(start))
	small := []byte("second checkpoint")
	if err := cl.PutCheckpoint(ctx, state.CheckpointRecord{GlobalStep: 200, Stage: "ps"}, small); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	n.Close()

	n = startSingle(t, dir, "") // restart: existing state, no second bootstrap
	defer n.Close()
	cl, err = Dial(ctx, ClientConfig{Addrs: []string{n.GRPCAddr()}, Timeout: 40 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rec, got, err := cl.LatestCheckpoint(ctx)
	if err != nil || rec.GlobalStep != 200 || !bytes.Equal(got, small) {
		t.Fatalf("latest after restart: %+v %q %v", rec, got, err)
	}
	rec, got, err = cl.GetCheckpoint(ctx, rec.ID-1)
	if err != nil || rec.GlobalStep != 100 || rec.Stage != "ps" || rec.Epoch != 1 || rec.Step != 3 || !bytes.Equal(got, data) {
		t.Fatalf("64 MiB checkpoint after restart: %+v (%d bytes) %v", rec, len(got), err)
	}
	if st, _ := cl.Status(ctx); len(st.Servers) != 1 || st.LastCheckpoint == nil || st.LastCheckpoint.ID != 2 {
		t.Fatalf("status %+v", st)
	}
}

func TestCheckpointDirStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n := startSingle(t, "", "")
	defer n.Close()
	dir := t.TempDir()
	cl, err := Dial(ctx, ClientConfig{Addrs: []string{n.GRPCAddr()}, CheckpointDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.SubmitJob(ctx, state.JobSpec{ID: "j", Shards: 4, MinWorkers: 1}); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("params"), 1000)
	if err := cl.PutCheckpoint(ctx, state.CheckpointRecord{GlobalStep: 7}, data); err != nil {
		t.Fatal(err)
	}
	rec, got, err := cl.LatestCheckpoint(ctx)
	if err != nil || !strings.HasPrefix(rec.Location, "dir:") || !bytes.Equal(got, data) {
		t.Fatalf("%+v %v", rec, err)
	}
	if st := n.State(); len(st.Blobs) != 0 {
		t.Fatal("a dir checkpoint's data is in the raft state")
	}
	// A corrupted file is detected.
	path := filepath.Join(dir, strings.TrimPrefix(rec.Location, "dir:"))
	if err := os.WriteFile(path, append(data[:len(data)-1], 'X'), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := cl.LatestCheckpoint(ctx); !errors.Is(err, state.ErrChecksumMismatch) {
		t.Fatalf("corrupted file: %v", err)
	}
}

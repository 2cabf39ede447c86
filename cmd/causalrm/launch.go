package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/coordinator/state"
)

// runElastic is `train --workers N` with exact reduction: an embedded
// single-node coordinator (raft in memory) on 127.0.0.1 and N elastic
// worker processes, exactly what a multi-node job runs, supervised by this
// command; worker i runs on its device of devs (nil: the CPU). A worker
// that dies while the job runs is replaced (elasticPool), as a cluster
// would; the job's failure or ctrl-C stops everyone, and nothing is written
// unless the job succeeds.
// workerRestarts is how many times train --workers replaces the worker of
// one slot.
const workerRestarts = 3

func runElastic(ctx context.Context, job *Job, n int, devs *workerDevices, force bool, statusAddr string, stdout, log io.Writer) error {
	staging, wjob, err := stageWorkers(job, n, force, log)
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	final := job.Out
	wjob.Out = filepath.Join(staging, "out")
	spec, err := jobSpecFor(&wjob, "local", n, 10, 0)
	if err != nil {
		return err
	}
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	token := hex.EncodeToString(tok)

	raftLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	raftAddr := raftLis.Addr().String()
	raftLis.Close()
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	cfg := coordinator.DefaultConfig()
	cfg.ID, cfg.RaftAddr, cfg.GRPCListener, cfg.Bootstrap, cfg.Token = "local", raftAddr, grpcLis, true, token
	// One node: elect at once.
	cfg.RaftHeartbeatTimeout, cfg.RaftElectionTimeout, cfg.RaftLeaderLease = 50*time.Millisecond, 50*time.Millisecond, 50*time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	node, err := coordinator.Start(ctx, cfg)
	if err != nil {
		grpcLis.Close()
		return err
	}
	defer node.Close()
	// --status-addr: the live status page (statuspage.go), stopped first.
	stopStatus, err := startStatusPage(statusAddr, node, log)
	if err != nil {
		return err
	}
	defer stopStatus()
	addr := grpcLis.Addr().String()
	client, err := coordinator.Dial(ctx, coordinator.ClientConfig{Addrs: []string{addr}, Token: token, Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	defer client.Close()
	if err := client.SubmitJob(ctx, spec); err != nil {
		return err
	}
	pool := &elasticPool{env: []string{"CAUSALRM_TOKEN=" + token}, log: log, restarts: workerRestarts,
		phase: func() state.JobPhase { return node.State().Status.Phase },
		args: func(i int, id string) []string {
			args := []string{"worker", "--coordinators", addr, "--id", id, "--listen", "127.0.0.1:0",
				"--threads", strconv.Itoa(max(job.Threads, 0)), "--progress-every", strconv.Itoa(max(job.ProgressEach, 1))}
			if job.Progress == nil || i > 0 {
				args = append(args, "--quiet")
			}
			return append(args, devs.args(i)...)
		}}
	// A worker that dies is replaced while the job runs; the job's failure
	// or ctrl-C kills everyone (a SIGTERM would be a graceful leave).
	if err := pool.run(ctx, n); err != nil {
		return err
	}
	st := node.State()
	if st.Status.Phase != state.JobDone {
		return fmt.Errorf("the workers exited but the job is %s: %s", st.Status.Phase, st.Status.Message)
	}
	if err := commitOut(wjob.Out, final); err != nil {
		return err
	}
	var rm RunMetrics
	if raw, err := os.ReadFile(filepath.Join(final, "metrics.json")); err == nil && json.Unmarshal(raw, &rm) == nil {
		printSummary(stdout, fmt.Sprintf("%s (%d workers)", final, n), &rm)
	}
	return nil
}

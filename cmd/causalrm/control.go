package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/internal/telemetry"
)

func coordinatorCmd() *cobra.Command {
	var (
		id, raftAddr, grpcAddr, dataDir, servers, logFormat string
		raftAdv, bootstrapID                                string
		bootstrap                                           bool
		hbTimeout, batchWindow                              time.Duration
		registry                                            string
		tok                                                 tokenFlags
		tf                                                  tlsFlags
	)
	var metricsAddr string
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run one member of the coordinator group (raft) of a training job",
		Long: `Runs one coordinator: a member of the raft group that holds the job's
spec, membership generations, committed progress and checkpoints. Run 1, 3 or
5 of them with the same --servers list; the one with --bootstrap starts the
group the first time (a restarted member rejoins from --data-dir). Workers
and clients dial the gRPC addresses.

  causalrm coordinator --id c0 --bootstrap \
    --raft-addr 127.0.0.1:7000 --grpc-addr 127.0.0.1:7100 --data-dir /var/lib/causalrm/c0 \
    --servers c0=127.0.0.1:7000/127.0.0.1:7100,c1=127.0.0.1:7001/127.0.0.1:7101,c2=127.0.0.1:7002/127.0.0.1:7102`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			token, err := tok.resolve()
			if err != nil {
				return err
			}
			cfg := coordinator.DefaultConfig()
			cfg.ID, cfg.RaftAddr, cfg.GRPCAddr, cfg.DataDir, cfg.Bootstrap, cfg.Token = id, raftAddr, grpcAddr, dataDir, bootstrap, token
			cfg.RaftAdvertise = raftAdv
			if bootstrapID != "" {
				cfg.Bootstrap = bootstrap || id == bootstrapID
			}
			cfg.HeartbeatTimeout, cfg.BatchWindow = hbTimeout, batchWindow
			cfg.Registry = registry
			if cfg.TLS, cfg.ClientTLS, err = tf.configs(); err != nil {
				return err
			}
			if cfg.Servers, err = parseServers(servers); err != nil {
				return err
			}
			if cfg.Logger, err = telemetry.NewLogger(cmd.ErrOrStderr(), logFormat); err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			// Both SIGINT and SIGTERM stop the node; raft state is on disk.
			ctx, stop := signal.NotifyContext(context.WithoutCancel(cmd.Context()), os.Interrupt, syscall.SIGTERM)
			defer stop()
			node, err := coordinator.Start(ctx, cfg)
			if err != nil {
				return err
			}
			stopMetrics, err := startCoordinatorMetrics(metricsAddr, node, cfg.Logger)
			if err != nil {
				node.Close()
				return err
			}
			cfg.Logger.Info("coordinator started", "id", id, "raft", raftAddr, "grpc", grpcAddr, "servers", serverList(cfg.Servers),
				"bootstrap", cfg.Bootstrap)
			go hintBootstrap(ctx, node, cfg.Bootstrap, cfg.Logger)
			<-ctx.Done()
			cfg.Logger.Info("coordinator stopping", "id", id)
			stopMetrics()
			node.Close()
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&id, "id", "c0", "this coordinator's id in --servers")
	fs.StringVar(&raftAddr, "raft-addr", "127.0.0.1:7000", "raft transport address (bind and advertise)")
	fs.StringVar(&grpcAddr, "grpc-addr", "127.0.0.1:7100", "gRPC address workers and clients dial")
	fs.StringVar(&dataDir, "data-dir", "", "raft log, stable store and snapshots (empty: in memory, lost on exit)")
	fs.StringVar(&servers, "servers", "", "the whole group: id=raftaddr/grpcaddr,... (empty: this node alone)")
	fs.BoolVar(&bootstrap, "bootstrap", false, "bootstrap the group the first time (exactly one member)")
	fs.StringVar(&bootstrapID, "bootstrap-id", "", "bootstrap when --id is this (a StatefulSet: the pod of ordinal 0), so every member runs the same command")
	fs.StringVar(&raftAdv, "raft-advertise", "", "ip:port peers reach the raft transport at, when --raft-addr binds 0.0.0.0 (a pod: $(POD_IP):7000)")
	fs.DurationVar(&hbTimeout, "heartbeat-timeout", 2*time.Second, "a worker silent this long is dead")
	fs.DurationVar(&batchWindow, "batch-window", 50*time.Millisecond, "membership changes seen within this long form one generation")
	fs.StringVar(&registry, "registry", "", "etcd://host:port[,host:port][/name]: take worker liveness from etcd leases (not heartbeats) and publish the leader's gRPC address there")
	fs.StringVar(&logFormat, "log-format", "text", logFormatUsage)
	fs.StringVar(&metricsAddr, "metrics-addr", "", metricsAddrUsage)
	tok.add(fs)
	tf.add(fs)
	return cmd
}

// serverList is the group as --servers spells it.
func serverList(ss []coordinator.Server) string {
	var out []string
	for _, s := range ss {
		out = append(out, fmt.Sprintf("%s=%s/%s", s.ID, s.RaftAddr, s.GRPCAddr))
	}
	if len(out) == 0 {
		return "(this node alone)"
	}
	return strings.Join(out, ",")
}

// leaderHintAfter is how long a coordinator waits for a leader before it
// says how a group is bootstrapped.
const leaderHintAfter = 10 * time.Second

// hintBootstrap logs, when no leader has appeared after leaderHintAfter,
// what to check: most often, that no member was started with --bootstrap.
func hintBootstrap(ctx context.Context, node *coordinator.Node, bootstrapped bool, log *slog.Logger) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(leaderHintAfter):
	}
	if id, _ := node.Leader(); id != "" {
		return
	}
	if !bootstrapped {
		log.Warn("no raft leader yet: a new group starts only when exactly one member runs with --bootstrap (or --bootstrap-id naming it); " +
			"a restarted member with --data-dir rejoins by itself once a majority of --servers is up")
		return
	}
	log.Warn("no raft leader yet: a majority of --servers must be up and reach each other's --raft-addr")
}

// parseServers reads id=raft/grpc,...
func parseServers(s string) ([]coordinator.Server, error) {
	var out []coordinator.Server
	for _, part := range splitAddrs(s) {
		id, addrs, ok := strings.Cut(part, "=")
		raft, grpc, ok2 := strings.Cut(addrs, "/")
		if !ok || !ok2 || id == "" || raft == "" || grpc == "" {
			return nil, fmt.Errorf("--servers: %q: want id=raftaddr/grpcaddr", part)
		}
		out = append(out, coordinator.Server{ID: id, RaftAddr: raft, GRPCAddr: grpc})
	}
	return out, nil
}

func submitCmd() *cobra.Command {
	var (
		f                                   jobFlags
		coords, jobID                       string
		minWorkers, progressEvery, ckptEach int
		ckptInterval                        time.Duration
		codec, registry                     string
		tok                                 tokenFlags
		tf                                  tlsFlags
		timeout                             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "submit [job.yaml]",
		Short: "Submit a training job to the coordinator group",
		Long: `Submits a job: the job file (or --config) with any job flags overriding it,
plus the elastic settings. Workers started with 'causalrm worker
--coordinators ...' take it from the coordinators. A malformed job is refused
with a message naming the field.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				f.config = args[0]
			}
			job, err := resolveJob(cmd, &f)
			if err != nil {
				return err
			}
			job.Progress = nil
			spec, err := jobSpecFor(job, jobID, minWorkers, progressEvery, ckptEach)
			if err != nil {
				return err
			}
			spec.CheckpointEverySeconds = ckptInterval.Seconds()
			if err := spec.Validate(); err != nil {
				return err
			}
			client, err := dialCoordinators(cmd.Context(), coords, tok, tf, "", withRegistry(registry), withTimeout(timeout))
			if err != nil {
				return unreachable(err, coords, timeout)
			}
			defer client.Close()
			if err := client.SubmitJob(cmd.Context(), spec); err != nil {
				return unreachable(err, coords, timeout)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "submitted job %s: %s, %d shards, at least %d workers\n", spec.ID, job.Method, spec.Shards, spec.MinWorkers)
			return nil
		},
	}
	addJobFlags(cmd, &f, true)
	fs := cmd.Flags()
	fs.StringVar(&coords, "coordinators", "127.0.0.1:7100", "the coordinators' gRPC addresses, host:port,...")
	fs.StringVar(&codec, "codec", "", "all-reduce wire codec: none, s2 (default), zstd; fp16 or int8 (lossy, with --reduce fast)")
	fs.StringVar(&registry, "registry", "", "etcd://host:port[/name]: find the leading coordinator there (instead of, or besides, --coordinators)")
	fs.StringVar(&jobID, "job-id", "job", "the job's id (names its rings and checkpoints)")
	fs.IntVar(&minWorkers, "min-workers", 1, "workers that must register before training starts")
	fs.IntVar(&progressEvery, "report-every", 10, "workers report progress (and parameter hashes) every this many steps")
	fs.DurationVar(&ckptInterval, "checkpoint-interval", 0, "also checkpoint when this long has passed since the last one (0: off), e.g. 10m")
	fs.IntVar(&ckptEach, "checkpoint-every", 0, "checkpoint every this many steps (0: never; rounded up to a multiple of --report-every)")
	fs.DurationVar(&timeout, "timeout", 5*time.Second, "give up when no coordinator answers within this long")
	tok.add(fs)
	tf.add(fs)
	return cmd
}

func statusCmd() *cobra.Command {
	var (
		coords  string
		reg     string
		asJSON  bool
		tok     tokenFlags
		tf      tlsFlags
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show a job's members, generation, stage, step, rows/s and last checkpoint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := dialCoordinators(cmd.Context(), coords, tok, tf, "", withRegistry(reg), withTimeout(timeout))
			if err != nil {
				return unreachable(err, coords, timeout)
			}
			defer client.Close()
			st, err := client.Status(cmd.Context())
			if err != nil {
				return unreachable(err, coords, timeout)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&coords, "coordinators", "127.0.0.1:7100", "the coordinators' gRPC addresses, host:port,...")
	fs.BoolVar(&asJSON, "json", false, "print the status as JSON")
	fs.DurationVar(&timeout, "timeout", 5*time.Second, "give up when no coordinator answers within this long")
	fs.StringVar(&reg, "registry", "", "etcd://host:port[/name]: find the leading coordinator there (instead of, or besides, --coordinators)")
	tok.add(fs)
	tf.add(fs)
	return cmd
}

// withTimeout bounds each call of the client (leader search included).
func withTimeout(d time.Duration) func(*coordinator.ClientConfig) {
	return func(c *coordinator.ClientConfig) { c.Timeout = d }
}

// unreachable says what to do when no coordinator answered in time.
func unreachable(err error, coords string, timeout time.Duration) error {
	if !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("no coordinator answered at %s within %v (%w): is 'causalrm coordinator' running there? (--coordinators, --timeout)", coords, timeout, err)
}

// printStatus prints a job's status for people.
func printStatus(w io.Writer, st coordinator.Status) {
	fmt.Fprintf(w, "leader      %s (%s)\n", st.Leader, st.LeaderAddr)
	for _, s := range st.Servers {
		role := "follower"
		if s.Leader {
			role = "leader"
		}
		fmt.Fprintf(w, "  server    %-8s raft %-21s grpc %-21s %s\n", s.ID, s.RaftAddr, s.GRPCAddr, role)
	}
	if st.Job == nil {
		fmt.Fprintln(w, "job         none submitted")
		return
	}
	fmt.Fprintf(w, "job         %s  %s", st.Job.ID, st.JobStatus.Phase)
	if st.JobStatus.Message != "" {
		fmt.Fprintf(w, ": %s", st.JobStatus.Message)
	}
	if st.JobStatus.RewardSHA256 != "" {
		fmt.Fprintf(w, "  reward sha256 %s", st.JobStatus.RewardSHA256)
	}
	fmt.Fprintln(w)
	if g := st.Generation; g != nil {
		fmt.Fprintf(w, "generation  %d (%s), %d members\n", g.Number, g.Cause.String(), len(g.Members))
		for i, m := range g.Members {
			fmt.Fprintf(w, "  rank %-3d  %-24s %-21s %d shards\n", i, m.ID, m.Addr, len(g.ShardsOf(m.ID)))
		}
	}
	wm := st.Watermark
	fmt.Fprintf(w, "progress    global step %d: stage %s epoch %d step %d, %.0f rows/s\n", wm.GlobalStep, wm.Stage, wm.Epoch, wm.Step, st.RowsPerSec)
	if c := st.LastCheckpoint; c != nil {
		fmt.Fprintf(w, "checkpoint  #%d at global step %d (%d bytes, %s old)\n", c.ID, c.GlobalStep, c.Size, st.CheckpointAge.Round(time.Second))
	} else {
		fmt.Fprintln(w, "checkpoint  none")
	}
	var pending []string
	for _, m := range st.Members {
		if m.Status != "active" && m.Status != "gone" {
			pending = append(pending, m.ID+" ("+string(m.Status)+")")
		}
	}
	if len(pending) > 0 {
		fmt.Fprintf(w, "workers     %s\n", strings.Join(pending, ", "))
	}
}

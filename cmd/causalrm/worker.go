package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/gpu"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/trainer"
	"github.com/causalrm/causalrm/worker"
)

func workerCmd() *cobra.Command {
	var f jobFlags
	var sf staticWorkerFlags
	var codec, listen string
	var ef elasticFlags
	var dev deviceFlags
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run one training worker (elastic with --coordinators, or of a static ring)",
		Long: `Runs one worker.

With --coordinators (elastic): the worker registers with the coordinator
group, takes the submitted job from it, loads the data, and joins the
training (from scratch, from the last checkpoint, or from a live peer's state
at a step boundary). Workers may join and leave at any time; SIGTERM leaves
at the next step boundary without disturbing the others (a second signal
stops at once). The worker of rank 0 at the end writes the outputs.

Without it (static): it loads the embeddings of its virtual shards only,
joins the ring all-reduce with its --peers and trains the job given by the
flags; rank 0 writes the outputs to --out. 'causalrm train --workers N'
starts and supervises these on 127.0.0.1.

Either way --device cuda (or cuda:N) runs the model's passes on that GPU;
the job's result does not depend on it in exact mode.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := gpu.ParseDevice(dev.device); err != nil {
				return fmt.Errorf("--device: %w", err)
			}
			if ef.coordinators != "" || ef.registry != "" {
				if err := checkElasticJobFlags(cmd); err != nil {
					return err
				}
				ef.listen = listen
				if ef.listen == "" {
					ef.listen = "127.0.0.1:0"
				}
				if f.every < 1 {
					return fmt.Errorf("--progress-every %d: want >= 1 (epochs between progress lines)", f.every)
				}
				ef.progressEvery = f.every
				return runElasticWorker(cmd.Context(), &ef, &dev, f.quiet, cmd.ErrOrStderr())
			}
			sf.listen = listen
			return runStaticWorker(cmd, &f, &dev, &sf)
		},
	}
	addJobFlags(cmd, &f, true)
	fs := cmd.Flags()
	fs.IntVar(&sf.rank, "rank", 0, "this worker's position in --peers")
	fs.StringVar(&sf.peers, "peers", "", "comma-separated host:port of every worker, in ring order")
	fs.StringVar(&listen, "listen", "", "address to serve the collective on (default: this rank's peer address; elastic: 127.0.0.1:0)")
	fs.IntVar(&sf.listenFD, "listen-fd", 0, "inherited listening socket (used by train --workers)")
	fs.StringVar(&codec, "codec", "", "static mode: all-reduce wire codec none, s2 (default), zstd (exact); fp16, int8 (lossy, --reduce fast)")
	fs.Uint64Var(&sf.gen, "generation", 1, "membership generation")
	fs.IntVar(&sf.benchSteps, "bench-steps", 0, "instead of training, time this many reward-stage steps and write bench.json (bench train --workers)")
	_ = fs.MarkHidden("bench-steps")
	fs.BoolVar(&sf.benchSkip, "bench-skip-unobserved", false, "with --bench-steps: skip the rows without feedback, as training does")
	_ = fs.MarkHidden("bench-skip-unobserved")
	fs.StringVar(&ef.coordinators, "coordinators", "", "elastic mode: the coordinators' gRPC addresses, host:port,...")
	fs.StringVar(&ef.id, "id", "", "elastic mode: this worker's id (default hostname-pid; a Kubernetes pod name)")
	fs.StringVar(&ef.advertise, "advertise", "", "elastic mode: the address peers dial (default: the --listen address; set it when listening on 0.0.0.0)")
	fs.StringVar(&ef.checkpoint, "checkpoint-dir", "", "elastic mode: keep checkpoints in this shared directory instead of the coordinators")
	fs.DurationVar(&ef.opTimeout, "op-timeout", 2*time.Minute, "elastic mode: bound of one collective call")
	fs.StringVar(&ef.registry, "registry", "", "elastic mode: etcd://host:port[,host:port][/name]: liveness by an etcd lease instead of heartbeats, and the coordinators' leader is found there (then --coordinators may be empty)")
	fs.DurationVar(&ef.leaseTTL, "lease-ttl", 2*time.Second, "elastic mode with --registry: the worker's lease TTL (whole seconds); a worker silent this long is dead")
	fs.StringVar(&ef.metricsAddr, "metrics-addr", "", "elastic mode: "+metricsAddrUsage)
	fs.StringVar(&ef.logFormat, "log-format", "text", "elastic mode: "+logFormatUsage)
	ef.token.add(fs)
	ef.tls.add(fs)
	dev.add(fs)
	return cmd
}

// staticWorkerFlags are the flags of a static ring member (no
// --coordinators).
type staticWorkerFlags struct {
	rank, listenFD, benchSteps int
	benchSkip                  bool
	peers, listen              string
	gen                        uint64
}

// runStaticWorker runs one member of a static ring: the job from the flags,
// the ring from --peers, the listener inherited, given or this rank's peer
// address.
func runStaticWorker(cmd *cobra.Command, f *jobFlags, dev *deviceFlags, sf *staticWorkerFlags) error {
	job, err := resolveJob(cmd, f)
	if err != nil {
		return err
	}
	runners, closeDev, err := dev.open()
	if err != nil {
		return fmt.Errorf("worker %d: %w", sf.rank, err)
	}
	defer closeDev()
	job.Runners = runners
	addrs := strings.Split(sf.peers, ",")
	if sf.rank < 0 || sf.rank >= len(addrs) {
		return fmt.Errorf("--rank %d outside the %d peers", sf.rank, len(addrs))
	}
	var lis net.Listener
	switch {
	case sf.listenFD > 0:
		lis, err = net.FileListener(os.NewFile(uintptr(sf.listenFD), "listener"))
	case sf.listen != "":
		lis, err = net.Listen("tcp", sf.listen)
	default:
		lis, err = net.Listen("tcp", addrs[sf.rank])
	}
	if err != nil {
		return fmt.Errorf("worker %d: listen: %w", sf.rank, err)
	}
	return runWorker(cmd.Context(), job, sf.rank, addrs, sf.gen, job.Wire().Static(), lis, sf.benchSteps, sf.benchSkip, cmd.ErrOrStderr())
}

// runWorker starts this rank (its rows, the ring, the agreed grid), trains,
// and (rank 0) writes the outputs into job.Out, which the launcher created.
func runWorker(ctx context.Context, job *Job, rank int, peers []string, gen uint64, codec collective.Codec, lis net.Listener, benchSteps int, benchSkip bool, log io.Writer) error {
	start := time.Now()
	if rank != 0 {
		job.Progress = nil
	}
	w, err := worker.Start(ctx, worker.Config{Rank: rank, Peers: peers, Generation: gen, Codec: codec,
		FastReduce: job.Reduce == "fast", Shards: job.Shards, Listener: lis},
		shard.LoadSpec{Train: job.Data.Train, Val: job.Data.Val, Test: job.Data.Test})
	if err != nil {
		return fmt.Errorf("worker %d: %w", rank, err)
	}
	defer w.Close()
	if benchSteps > 0 {
		return benchWorker(ctx, job, w, rank, benchSteps, benchSkip)
	}
	if os.Getenv(faultEnv) == strconv.Itoa(rank) {
		return fmt.Errorf("worker %d: fault injected by %s", rank, faultEnv)
	}
	var warn io.Writer // rank 0 speaks for the job
	if rank == 0 {
		warn = log
	}
	o, err := trainJob(ctx, job, w.Data, w.Ring, w.XExp, w.Own, warn)
	if err != nil {
		return fmt.Errorf("worker %d: %w", rank, err)
	}
	if rank == 0 {
		if err := writeOutputs(job.Out, o, job, start); err != nil {
			return err
		}
		printWarnings(log, o.stageWarnings())
		fmt.Fprintf(log, "worker 0: wrote outputs; all-reduce %s\n", ringStats(w.Ring))
	}
	return nil
}

// faultEnv names an environment variable for fault-injection tests: the
// worker of that rank fails right after joining the ring.
const faultEnv = "CAUSALRM_FAULT_FAIL_RANK"

func ringStats(r *collective.Ring) string {
	s := r.Stats()
	return fmt.Sprintf("%d ops, %.1f MB sent, %.1f MB received", s.Ops, float64(s.BytesSent)/1e6, float64(s.BytesRecv)/1e6)
}

// runCluster starts n worker processes on 127.0.0.1 with the resolved job
// (worker i on its device of devs; nil: the CPU), supervises them, and
// commits rank 0's outputs when all of them succeed. The first failure (or
// ctrl-C) stops every worker; all are reaped on every path.
func runCluster(ctx context.Context, job *Job, n int, devs *workerDevices, force bool, stdout, log io.Writer, extra ...string) error {
	codec := job.Wire().Static()
	probe := worker.Config{Peers: make([]string, n), Shards: max(job.Shards, n), Codec: codec, FastReduce: job.Reduce == "fast"}
	if err := probe.Validate(); err != nil { // the codec; stageWorkers says what is wrong with n
		return fmt.Errorf("--codec %s: %w", codec, err)
	}
	staging, wjob, err := stageWorkers(job, n, force, log)
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	final := job.Out
	wjob.Out = staging
	jobFile := filepath.Join(staging, "job.yaml")
	if err := writeYAML(jobFile, &wjob); err != nil {
		return err
	}
	lis := make([]*net.TCPListener, n)
	peers := make([]string, n)
	for i := range lis {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return err
		}
		defer l.Close()
		lis[i], peers[i] = l, l.Addr().String()
	}
	ch, err := startChildren(n, log, nil, func(i int) []string {
		args := []string{"worker", "--config", jobFile, "--rank", strconv.Itoa(i),
			"--peers", strings.Join(peers, ","), "--listen-fd", "3", "--codec", string(codec),
			"--threads", strconv.Itoa(max(job.Threads, 0))}
		if job.Progress == nil {
			args = append(args, "--quiet")
		}
		args = append(args, devs.args(i)...)
		return append(args, extra...)
	}, func(i int) []*os.File {
		f, err := lis[i].File()
		if err != nil {
			return nil // the child fails on the missing fd, and the job with it
		}
		return []*os.File{f}
	})
	if err != nil {
		return err
	}
	for _, l := range lis {
		l.Close() // the children hold their own copies
	}
	// The first failure or ctrl-C stops everyone: SIGTERM, then SIGKILL
	// after a grace period.
	first := ch.supervise(ctx, syscall.SIGTERM, workerGrace)
	if first != nil {
		return first
	}
	if err := commitOut(staging, final); err != nil {
		return err
	}
	var rm RunMetrics
	if raw, err := os.ReadFile(filepath.Join(final, "metrics.json")); err == nil && json.Unmarshal(raw, &rm) == nil {
		printSummary(stdout, fmt.Sprintf("%s (%d workers)", final, n), &rm)
	}
	return nil
}

// workerGrace is how long stopped workers get before SIGKILL.
const workerGrace = 5 * time.Second

// signalAll sends sig to every started worker; ones already gone are
// skipped (the error is os.ErrProcessDone).
func signalAll(procs []*exec.Cmd, sig os.Signal) {
	for _, c := range procs {
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(sig)
		}
	}
}

// benchWorker times reward-stage steps across the ring (every row through
// the passes, like the PyTorch DDP script, or with skip only the rows with
// feedback, as training does) and rank 0 writes bench.json.
func benchWorker(ctx context.Context, job *Job, w *worker.Worker, rank, steps int, skip bool) error {
	tr, err := trainer.New(job.Config, w.Data, w.Ring, w.XExp)
	if err != nil {
		return err
	}
	if err := tr.Own(w.Own); err != nil {
		return err
	}
	rps, err := tr.BenchReward(ctx, causal.CausalIPS, 3, steps, skip)
	if err != nil {
		return err
	}
	if rank != 0 {
		return nil
	}
	return writeJSON(filepath.Join(job.Out, "bench.json"), map[string]float64{"rows_per_s": rps})
}

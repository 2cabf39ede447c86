package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/telemetry"
	"github.com/causalrm/causalrm/job"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/trainer"
	"github.com/causalrm/causalrm/worker"
)

// elasticFlags are the flags of a worker that takes its job and membership
// from the coordinator group.
type elasticFlags struct {
	coordinators string
	id, listen   string
	advertise    string
	token        tokenFlags
	tls          tlsFlags
	checkpoint   string // shared checkpoint directory (optional)
	opTimeout    time.Duration
	registry     string        // etcd://...: liveness by lease, coordinators found there
	leaseTTL     time.Duration // the worker's lease TTL with --registry
	metricsAddr  string        // --metrics-addr ("": off)
	logFormat    string        // --log-format
	// progressEvery is --progress-every: epochs between progress lines.
	progressEvery int
}

// tokenFlags give the job token: a flag, a file, or $CAUSALRM_TOKEN.
type tokenFlags struct{ value, file string }

func (t *tokenFlags) add(cmd *pflag.FlagSet) {
	cmd.StringVar(&t.value, "token", "", "job token (default $CAUSALRM_TOKEN); every worker and client of the job must give it")
	cmd.StringVar(&t.file, "token-file", "", "file holding the job token (a Kubernetes secret)")
}

func (t *tokenFlags) resolve() (string, error) {
	switch {
	case t.value != "":
		return t.value, nil
	case t.file != "":
		raw, err := os.ReadFile(t.file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		return strings.TrimSpace(string(raw)), nil
	}
	return os.Getenv("CAUSALRM_TOKEN"), nil
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func dialCoordinators(ctx context.Context, addrs string, tok tokenFlags, tf tlsFlags, ckptDir string, opts ...func(*coordinator.ClientConfig)) (*coordinator.Client, error) {
	token, err := tok.resolve()
	if err != nil {
		return nil, err
	}
	_, clientTLS, err := tf.configs()
	if err != nil {
		return nil, err
	}
	list := splitAddrs(addrs)
	cfg := coordinator.ClientConfig{Addrs: list, Token: token, TLS: clientTLS, Timeout: 30 * time.Second, CheckpointDir: ckptDir}
	for _, o := range opts {
		o(&cfg)
	}
	if len(cfg.Addrs) == 0 && cfg.Registry == "" {
		return nil, errors.New("--coordinators: give the coordinators' gRPC addresses (host:port,...)")
	}
	return coordinator.Dial(ctx, cfg)
}

// jobSpecFor wraps a resolved job as the coordinator's job spec.
func jobSpecFor(j *Job, id string, minWorkers, progressEvery, ckptEvery int) (state.JobSpec, error) {
	cfg, err := job.EncodeConfig(j)
	if err != nil {
		return state.JobSpec{}, err
	}
	return state.JobSpec{ID: id, Shards: j.Shards, MinWorkers: minWorkers, ProgressEvery: progressEvery,
		CheckpointEverySteps: ckptEvery, CheckpointKeep: 2, Config: cfg}, nil
}

// runElasticWorker is `causalrm worker --coordinators ...`: it wires the
// flags, the device, the metrics endpoint and the signals to worker.Run.
// SIGTERM (or ctrl-C) leaves the job at the next step boundary; a second
// one stops at once.
func runElasticWorker(parent context.Context, f *elasticFlags, dev *deviceFlags, quiet bool, log io.Writer) error {
	// SIGTERM is a graceful leave, not a cancellation: detach from the
	// root's signal context and handle the signals here.
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	defer cancel()
	logger, err := telemetry.NewLogger(log, f.logFormat)
	if err != nil {
		return err
	}
	// The device first: a worker that cannot open its GPU never joins.
	runners, closeDev, err := dev.open()
	if err != nil {
		return err
	}
	defer closeDev()
	metrics, stopMetrics, err := startWorkerMetrics(f.metricsAddr, logger)
	if err != nil {
		return err
	}
	defer stopMetrics()
	client, err := dialCoordinators(ctx, f.coordinators, f.token, f.tls, f.checkpoint, withRegistry(f.registry))
	if err != nil {
		return err
	}
	defer client.Close()
	id := f.id
	if id == "" {
		host, _ := os.Hostname()
		id = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	token, _ := f.token.resolve()
	hc := collective.DefaultHostConfig()
	hc.Token, hc.Logger = token, logger
	if hc.ServerTLS, hc.ClientTLS, err = f.tls.configs(); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	var progress io.Writer
	if !quiet {
		progress = log
	}
	start := time.Now()
	return worker.Run(ctx, worker.RunConfig{
		ID: id, Client: client, Listener: lis, Advertise: f.advertise, Host: hc, Runners: runners, Metrics: metrics,
		Logger: logger, Progress: progress, ProgressEvery: f.progressEvery, OpTimeout: f.opTimeout, StepDelay: stepDelay(),
		Attach: func(ctx context.Context, addr string) (func(), error) {
			return attachWorker(ctx, f, client, id, addr, logger)
		},
		Leave:    leaveSignals(ctx, cancel),
		CheckOut: func(j *Job) error { return checkOut(j.Out, true, j.Inputs()) },
		Finish: func(ctx context.Context, j *Job, ds *shard.Dataset, tr *trainer.Trainer, res *trainer.StageResult) (func() (string, error), error) {
			o, err := finishJob(ctx, j, ds, tr, res)
			if err != nil {
				return nil, err
			}
			return func() (string, error) { return writeElasticOutputs(j, o, id, start, log) }, nil
		},
		FailAfterJoin: os.Getenv(faultEnv) != "" && id == "w"+os.Getenv(faultEnv),
	})
}

// leaveSignals returns a channel closed at the first SIGTERM or interrupt;
// a second one cancels (stops at once).
func leaveSignals(ctx context.Context, cancel context.CancelFunc) <-chan struct{} {
	leave := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	go func() {
		defer signal.Stop(sigs)
		select {
		case <-sigs:
			close(leave)
		case <-ctx.Done():
			return
		}
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	return leave
}

// writeElasticOutputs is the member of rank 0 writing the job's outputs;
// it returns the reward model's SHA-256.
func writeElasticOutputs(j *Job, o *outcome, id string, start time.Time, log io.Writer) (string, error) {
	staging, err := prepareOut(j.Out, true, j.Inputs(), log)
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(staging)
	if err := writeOutputs(staging, o, j, start); err != nil {
		return "", err
	}
	if err := commitOut(staging, j.Out); err != nil {
		return "", err
	}
	printWarnings(log, o.rm.Warnings) // the member of rank 0 speaks for the job
	fmt.Fprintf(log, "worker %s: wrote %s (reward sha256 %s)\n", id, filepath.Clean(j.Out), o.rm.RewardSHA256)
	return o.rm.RewardSHA256, nil
}

// stepDelayEnv slows every step of an elastic worker down (tests and demos
// that change membership mid-stage), e.g. CAUSALRM_STEP_DELAY=5ms.
const stepDelayEnv = "CAUSALRM_STEP_DELAY"

func stepDelay() time.Duration {
	d, _ := time.ParseDuration(os.Getenv(stepDelayEnv))
	return d
}

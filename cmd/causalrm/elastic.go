package main

import (
	"bytes"
	"context"
	"encoding/json"
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
	"gopkg.in/yaml.v3"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/telemetry"
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

// jobSpecFor wraps a resolved job as the coordinator's job spec: the job
// itself travels as its YAML.
func jobSpecFor(job *Job, id string, minWorkers, progressEvery, ckptEvery int) (state.JobSpec, error) {
	raw, err := yaml.Marshal(job)
	if err != nil {
		return state.JobSpec{}, err
	}
	cfg, err := json.Marshal(string(raw))
	if err != nil {
		return state.JobSpec{}, err
	}
	return state.JobSpec{ID: id, Shards: job.Shards, MinWorkers: minWorkers, ProgressEvery: progressEvery,
		CheckpointEverySteps: ckptEvery, CheckpointKeep: 2, Config: cfg}, nil
}

// jobFromSpec decodes the job a spec carries, with the checks of train.
func jobFromSpec(spec *state.JobSpec) (*Job, error) {
	var text string
	if err := json.Unmarshal(spec.Config, &text); err != nil {
		return nil, fmt.Errorf("job spec %s: field \"config\": %w", spec.ID, err)
	}
	job := &Job{Config: trainer.DefaultConfig()}
	dec := yaml.NewDecoder(bytes.NewReader([]byte(text)))
	dec.KnownFields(true)
	if err := dec.Decode(job); err != nil && err != io.EOF {
		return nil, fmt.Errorf("job spec %s: field \"config\": %w", spec.ID, err)
	}
	if job.Data.Train == "" {
		return nil, fmt.Errorf("job spec %s: field \"config.data.train\": empty", spec.ID)
	}
	if job.Shards != spec.Shards {
		return nil, fmt.Errorf("job spec %s: field \"shards\": %d, but the job's config says %d", spec.ID, spec.Shards, job.Shards)
	}
	if c := collective.Codec(job.Codec); job.Codec != "" && !c.Lossless() && !c.Lossy() {
		return nil, fmt.Errorf("job spec %s: field \"config.codec\": %q: want none, s2, zstd, fp16 or int8", spec.ID, job.Codec)
	}
	if collective.Codec(job.Codec).Lossy() && job.Reduce != "fast" {
		return nil, fmt.Errorf("job spec %s: field \"config.codec\": %s is lossy: it needs reduce: fast", spec.ID, job.Codec)
	}
	if err := job.Config.Validate(); err != nil {
		return nil, fmt.Errorf("job spec %s: field \"config\": %w", spec.ID, err)
	}
	return job, nil
}

// runElasticWorker is `causalrm worker --coordinators ...`: it registers,
// takes the job from the coordinators, joins (from scratch, a checkpoint
// or a live peer), trains on its --device, and leaves at a step boundary on
// SIGTERM. The member of rank 0 at the end writes the outputs and reports
// the result.
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
	spec, err := waitJob(ctx, client)
	if err != nil {
		return err
	}
	job, err := jobFromSpec(spec)
	if err != nil {
		return err
	}
	// The job's output (written by the worker of rank 0 at the end) must
	// not destroy data: refuse it before training, not after.
	if err := checkOut(job.Out, true, dataInputs(job)); err != nil {
		return err
	}
	job.Runners = runners
	if quiet {
		job.Progress = nil
	} else {
		job.Progress = log
	}
	ds, err := job.load()
	if err != nil {
		return err
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
	host, err := collective.NewHost(hc, lis)
	if err != nil {
		return err
	}
	defer host.Close()
	e, err := worker.NewElastic(worker.ElasticConfig{ID: id, RingID: spec.ID, Host: host, Coord: client,
		Codec: jobCodec(job), LossyCodec: jobLossyCodec(job), Shards: spec.Shards, ProgressEvery: spec.ProgressEvery,
		CheckpointEvery: spec.CheckpointEverySteps, CheckpointSeconds: spec.CheckpointEverySeconds, OpTimeout: f.opTimeout, Logger: logger,
		StepDelay: stepDelay(), Metrics: metrics})
	if err != nil {
		return err
	}
	defer e.Close()
	tr, err := trainer.New(job.Config, ds, e, nil)
	if err != nil {
		return err
	}
	e.Attach(tr)
	addr := host.Addr()
	if f.advertise != "" {
		addr = f.advertise
	}
	detach, err := attachWorker(ctx, f, client, id, addr, logger)
	if err != nil {
		return err
	}
	defer detach()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
		case <-ctx.Done():
			return
		}
		logger.Info("signal: leaving the job at the next step boundary")
		lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
		if err := client.Leave(lctx, id); err != nil {
			logger.Warn("leave", "err", err)
		}
		lcancel()
		select {
		case <-sigs:
			cancel() // a second signal: stop now
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	ckpt := func(ctx context.Context) ([]byte, error) {
		_, data, err := client.LatestCheckpoint(ctx)
		if errors.Is(err, coordinator.ErrNoCheckpoint) {
			return nil, nil
		}
		return data, err
	}
	if err := e.Begin(ctx, 10*time.Minute, ckpt); err != nil {
		return fmt.Errorf("worker %s: %w", id, err)
	}
	if r := os.Getenv(faultEnv); r != "" && id == "w"+r {
		return fmt.Errorf("worker %s: fault injected by %s", id, faultEnv)
	}
	res, err := tr.Reward(ctx, job.Method)
	if errors.Is(err, worker.ErrLeft) {
		logger.Info("left the job", "id", id)
		return nil
	}
	if err != nil {
		return fmt.Errorf("worker %s: %w", id, err)
	}
	o, err := finishJob(ctx, job, ds, tr, res)
	if err != nil {
		return fmt.Errorf("worker %s: %w", id, err)
	}
	if err := e.Finish(ctx); err != nil {
		return err
	}
	if e.Ring().Rank() != 0 {
		// Stay until rank 0 has reported the result: a worker that went
		// away before would look like a crash.
		return waitJobEnd(ctx, client, 2*time.Minute)
	}
	staging, err := prepareOut(job.Out, true, dataInputs(job), log)
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	if err := writeOutputs(staging, o, job, start); err != nil {
		return err
	}
	if err := commitOut(staging, job.Out); err != nil {
		return err
	}
	printWarnings(log, o.rm.Warnings) // the member of rank 0 speaks for the job
	if err := client.Finish(ctx, o.rm.RewardSHA256); err != nil {
		return err
	}
	fmt.Fprintf(log, "worker %s: wrote %s (reward sha256 %s)\n", id, filepath.Clean(job.Out), o.rm.RewardSHA256)
	return nil
}

// waitJob waits until a job has been submitted.
func waitJob(ctx context.Context, c *coordinator.Client) (*state.JobSpec, error) {
	for {
		spec, err := c.Job(ctx)
		if err == nil {
			return spec, nil
		}
		if !errors.Is(err, coordinator.ErrNoJob) {
			return nil, err
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// stepDelayEnv slows every step of an elastic worker down (tests and demos
// that change membership mid-stage), e.g. CAUSALRM_STEP_DELAY=5ms.
const stepDelayEnv = "CAUSALRM_STEP_DELAY"

func stepDelay() time.Duration {
	d, _ := time.ParseDuration(os.Getenv(stepDelayEnv))
	return d
}

// waitJobEnd waits until the job is done or failed (or the timeout).
func waitJobEnd(ctx context.Context, c *coordinator.Client, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		st, err := c.Status(ctx)
		if err == nil {
			switch st.JobStatus.Phase {
			case state.JobDone:
				return nil
			case state.JobFailed:
				return fmt.Errorf("job failed: %s", st.JobStatus.Message)
			}
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return nil // rank 0 reports; nothing more to wait for here
		}
	}
}

// jobCodec is the job's wire codec of the exact sums (s2 unless the job
// names a lossless one).
func jobCodec(job *Job) collective.Codec {
	if c := collective.Codec(job.Codec); c.Lossless() {
		return c
	}
	return collective.CodecS2
}

// jobLossyCodec is the codec of the float32 sums of --reduce fast, if the
// job names a lossy one.
func jobLossyCodec(job *Job) collective.Codec {
	if c := collective.Codec(job.Codec); c.Lossy() {
		return c
	}
	return ""
}

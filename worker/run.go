package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/job"
	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/trainer"
)

// RunConfig is what an elastic worker process needs besides its job, which
// it takes from the coordinators. The command line builds it (flags,
// device, signals, metrics endpoint); Run owns the lifecycle.
type RunConfig struct {
	ID     string
	Client *coordinator.Client
	// Listener serves the collective's data plane; Advertise is the
	// address peers dial ("": the listener's).
	Listener  net.Listener
	Advertise string
	// Host configures the collective host (token, TLS, logger).
	Host    collective.HostConfig
	Runners nn.RunnerFactory // the device's passes (nil: the CPU)
	Metrics *Metrics         // nil: none
	Logger  *slog.Logger
	// Progress receives training progress (nil: quiet), a line every
	// ProgressEvery epochs (0: every epoch).
	Progress      io.Writer
	ProgressEvery int
	OpTimeout     time.Duration
	StepDelay     time.Duration // slows every step (tests and demos)
	// JoinTimeout bounds the wait for the first generation that holds
	// this worker (0: ten minutes).
	JoinTimeout time.Duration
	// Attach registers the worker once its address is known and keeps it
	// alive (heartbeats or a registry lease); detach undoes it.
	Attach func(ctx context.Context, addr string) (detach func(), err error)
	// Leave, when closed, leaves the job at the next step boundary (a
	// SIGTERM); cancelling Run's context stops at once.
	Leave <-chan struct{}
	// CheckOut refuses a job whose output directory would destroy data,
	// before any training.
	CheckOut func(*job.Job) error
	// Finish runs on every member once the reward model is trained (it may
	// gather across the ring: the test metrics) and returns what the
	// member of rank 0 then does to write the outputs; write returns the
	// reward model's SHA-256, reported to the coordinators.
	Finish func(ctx context.Context, j *job.Job, ds *shard.Dataset, tr *trainer.Trainer, res *trainer.StageResult) (write func() (string, error), err error)
	// FailAfterJoin makes the worker fail once it has joined (fault
	// injection in tests).
	FailAfterJoin bool
}

// Run is one elastic worker process: it takes the job from the
// coordinators, joins (from scratch, a checkpoint or a live peer), trains,
// and leaves at a step boundary when cfg.Leave closes. The member of rank 0
// at the end writes the outputs and reports the result; the others stay
// until it has.
func Run(ctx context.Context, cfg RunConfig) error {
	spec, err := waitJob(ctx, cfg.Client)
	if err != nil {
		return err
	}
	j, err := JobFromSpec(spec)
	if err != nil {
		return err
	}
	// The job's output (written by the member of rank 0 at the end) must
	// not destroy data: refuse it before training, not after.
	if err := cfg.CheckOut(j); err != nil {
		return err
	}
	j.Runners, j.Progress, j.ProgressEach = cfg.Runners, cfg.Progress, max(cfg.ProgressEvery, 1)
	ds, err := j.Load()
	if err != nil {
		return err
	}
	host, err := collective.NewHost(cfg.Host, cfg.Listener)
	if err != nil {
		return err
	}
	defer host.Close()
	wire := j.Wire()
	e, err := NewElastic(ElasticConfig{ID: cfg.ID, RingID: spec.ID, Host: host, Coord: cfg.Client,
		Codec: wire.Exact, LossyCodec: wire.Lossy, Shards: spec.Shards, ProgressEvery: spec.ProgressEvery,
		CheckpointEvery: spec.CheckpointEverySteps, CheckpointSeconds: spec.CheckpointEverySeconds, OpTimeout: cfg.OpTimeout,
		Logger: cfg.Logger, StepDelay: cfg.StepDelay, Metrics: cfg.Metrics})
	if err != nil {
		return err
	}
	defer e.Close()
	tr, err := trainer.New(j.Config, ds, e, nil)
	if err != nil {
		return err
	}
	e.Attach(tr)
	addr := host.Addr()
	if cfg.Advertise != "" {
		addr = cfg.Advertise
	}
	detach, err := cfg.Attach(ctx, addr)
	if errors.Is(err, state.ErrJobDone) {
		cfg.Logger.Info("the job ended before this worker registered", "id", cfg.ID)
		return nil
	}
	if err != nil {
		return err
	}
	defer detach()
	go leaveOnSignal(ctx, cfg)
	// The job may end before a generation lists this worker (a replacement
	// that arrives as the others finish): then there is nothing to join.
	bctx, bcancel := context.WithCancelCause(ctx)
	go endWhenJobEnds(bctx, cfg.Client, bcancel)
	err = e.Begin(bctx, orDefault(cfg.JoinTimeout, 10*time.Minute), latestCheckpoint(cfg.Client))
	bcancel(nil)
	if cause := context.Cause(bctx); ctx.Err() == nil && errors.Is(cause, errJobEnded) {
		cfg.Logger.Info("the job ended before this worker joined it", "id", cfg.ID, "why", cause)
		if errors.Is(cause, errJobFailed) {
			return fmt.Errorf("worker %s: %w", cfg.ID, cause)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("worker %s: %w", cfg.ID, err)
	}
	if cfg.FailAfterJoin {
		return fmt.Errorf("worker %s: fault injected", cfg.ID)
	}
	res, err := tr.Reward(ctx, j.Method)
	if errors.Is(err, ErrLeft) {
		cfg.Logger.Info("left the job", "id", cfg.ID)
		return nil
	}
	if err != nil {
		return fmt.Errorf("worker %s: %w", cfg.ID, err)
	}
	write, err := cfg.Finish(ctx, j, ds, tr, res)
	if err != nil {
		return fmt.Errorf("worker %s: %w", cfg.ID, err)
	}
	if err := e.Finish(ctx); err != nil {
		return err
	}
	if e.Ring().Rank() != 0 {
		// Stay until rank 0 has reported the result: a worker that went
		// away before would look like a crash.
		return waitJobEnd(ctx, cfg.Client, 2*time.Minute)
	}
	sum, err := write()
	if err != nil {
		return err
	}
	return cfg.Client.Finish(ctx, sum)
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// leaveOnSignal asks the coordinators to let this worker leave at the next
// step boundary once cfg.Leave closes.
func leaveOnSignal(ctx context.Context, cfg RunConfig) {
	select {
	case <-cfg.Leave:
	case <-ctx.Done():
		return
	}
	cfg.Logger.Info("signal: leaving the job at the next step boundary")
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cfg.Client.Leave(lctx, cfg.ID); err != nil {
		cfg.Logger.Warn("leave", "err", err)
	}
}

// errJobEnded is the cause that ends a worker's wait to join when the job
// is over (errJobFailed when it failed).
var (
	errJobEnded  = errors.New("the job ended")
	errJobFailed = fmt.Errorf("%w: failed", errJobEnded)
)

// endWhenJobEnds polls the job's status until ctx ends, and cancels it
// with errJobEnded (or errJobFailed) once the job is done or failed.
func endWhenJobEnds(ctx context.Context, c *coordinator.Client, cancel context.CancelCauseFunc) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		st, err := c.Status(ctx)
		if err != nil {
			continue
		}
		switch st.JobStatus.Phase {
		case state.JobDone:
			cancel(errJobEnded)
			return
		case state.JobFailed:
			cancel(fmt.Errorf("%w: %s", errJobFailed, st.JobStatus.Message))
			return
		}
	}
}

// latestCheckpoint fetches the job's latest checkpoint (nil when none).
func latestCheckpoint(c *coordinator.Client) func(ctx context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		_, data, err := c.LatestCheckpoint(ctx)
		if errors.Is(err, coordinator.ErrNoCheckpoint) {
			return nil, nil
		}
		return data, err
	}
}

// JobFromSpec decodes the job a coordinator job spec carries, with the
// checks of train, naming the spec's field.
func JobFromSpec(spec *state.JobSpec) (*job.Job, error) {
	j, err := job.DecodeConfig(spec.Config, nil)
	switch {
	case errors.Is(err, job.ErrNoConfig):
		return nil, fmt.Errorf("job spec %s: field \"config\": empty", spec.ID)
	case err != nil:
		return nil, fmt.Errorf("job spec %s: field \"config\": %w", spec.ID, err)
	case j.Data.Train == "":
		return nil, fmt.Errorf("job spec %s: field \"config.data.train\": empty", spec.ID)
	case j.Shards != spec.Shards:
		return nil, fmt.Errorf("job spec %s: field \"shards\": %d, but the job's config says %d", spec.ID, spec.Shards, j.Shards)
	}
	return j, nil
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

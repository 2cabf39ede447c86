package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/coordinator/state"
)

// RunResult is one run: its faults, what the oracle found, and its
// numbers.
type RunResult struct {
	Run      int         `json:"run"`
	Seed     uint64      `json:"seed"`
	Faults   []*Injected `json:"faults"`
	Pass     bool        `json:"pass"`
	Failures []string    `json:"failures,omitempty"`
	// Seconds is the run's wall time; TrainingS from the first committed
	// step to the job's end.
	Seconds   float64 `json:"seconds"`
	TrainingS float64 `json:"training_s"`
	// GlobalSteps is the last committed global step; Generations the
	// last generation's number.
	GlobalSteps uint64 `json:"global_steps"`
	Generations uint64 `json:"generations"`
	// Rewinds and StepsRedone: restarts from a checkpoint and the
	// committed steps they undid.
	Rewinds     int    `json:"rewinds"`
	StepsRedone uint64 `json:"steps_redone"`
	// Reconciled is the collective calls the workers settled after a
	// crash (their "reconciling" log lines); Replacements the workers the
	// controller started in place of dead ones.
	Reconciled   int `json:"reconciled_calls"`
	Replacements int `json:"replacements"`
	// Pauses are the workers' generation change pauses, from their logs.
	Pauses       []Pause  `json:"pauses,omitempty"`
	Leaders      []string `json:"leaders,omitempty"`
	RewardSHA256 string   `json:"reward_sha256,omitempty"`
	// Stall is the stall detector's report (every worker's generation,
	// step and last log lines) when it fired.
	Stall  string `json:"stall,omitempty"`
	Replay string `json:"replay,omitempty"`
	Dir    string `json:"dir"`

	timeline timelineData
}

// runState is one run in progress.
type runState struct {
	cfg *Config
	cl  *cluster
	mon *monitor

	mu       sync.Mutex
	failures []string
}

func (r *runState) failf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.failures = append(r.failures, msg)
	r.mu.Unlock()
	r.cl.logf("FAIL: %s", msg)
}

// runOne runs the job once under the faults drawn from seed and checks
// the oracle.
func runOne(ctx context.Context, cfg *Config, ref *Reference, n int, seed uint64) *RunResult {
	res := &RunResult{Run: n, Seed: seed, Dir: filepath.Join(cfg.Out, fmt.Sprintf("run-%02d", n))}
	start := time.Now()
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	_ = os.RemoveAll(res.Dir)
	plan := Plan(seed, cfg)
	var planned []string
	for _, f := range plan {
		planned = append(planned, fmt.Sprintf("%s@%.1fs", f.Kind, f.At.Seconds()))
	}
	fmt.Fprintf(cfg.Log, "run %d/%d seed %d: %s\n", n, cfg.Runs, seed, strings.Join(planned, ", "))
	ctx, cancel := context.WithTimeout(ctx, cfg.RunTimeout)
	defer cancel()
	// A port picked free may be taken before a coordinator binds it (other
	// programs on the machine): a group that does not start is retried.
	var cl *cluster
	var err error
	for try := 0; try < 3 && ctx.Err() == nil; try++ {
		_ = os.RemoveAll(res.Dir)
		if cl, err = startCluster(ctx, cfg, res.Dir); err == nil {
			break
		}
		fmt.Fprintf(cfg.Log, "  starting the coordinators: %v; retrying\n", err)
	}
	if err != nil {
		res.Failures = append(res.Failures, "starting the coordinators: "+err.Error())
		res.Replay = cfg.replay(seed)
		return res
	}
	mon := newMonitor(cl.client)
	r := &runState{cfg: cfg, cl: cl, mon: mon}
	monCtx, stopMon := context.WithCancel(context.Background())
	monDone := make(chan struct{})
	mon.poll(ctx)
	go func() { mon.run(monCtx); close(monDone) }()
	cl.logf("coordinators up (leader %s)", mon.leader())

	jobOut := filepath.Join(res.Dir, "job")
	if err := cl.submit(ctx, ref.Data, jobOut); err != nil {
		r.failf("%v", err)
	} else {
		r.launchAndInject(ctx, plan, res)
	}

	// The end: no more replacements; the faults have restored what they
	// broke. After a finished job every worker must exit by itself.
	cl.stopReplacing()
	finished := false
	select {
	case <-mon.finished:
		finished = true
	default:
	}
	var left []string
	if finished {
		left = r.waitWorkersExit(30 * time.Second)
	}
	final, haveFinal := r.finalStatus(ctx)
	left = append(left, cl.stop()...)
	stopMon()
	<-monDone
	for _, l := range left {
		r.failf("process left behind: %s", l)
	}
	switch {
	case finished && haveFinal:
		r.oracle(final, ref, jobOut, res)
	case finished:
		r.failf("no final status from the coordinators")
	}
	r.account(res, final)
	res.Failures = append(res.Failures, r.failures...)
	res.Pass = len(res.Failures) == 0
	if !res.Pass {
		res.Replay = cfg.replay(seed)
	}
	return res
}

// launchAndInject starts the workers, places the faults after the first
// committed step, and waits for the job's end, a stall or the timeout.
func (r *runState) launchAndInject(ctx context.Context, plan []Fault, res *RunResult) {
	cl, mon, cfg := r.cl, r.mon, r.cfg
	faultCtx, endFaults := context.WithCancel(ctx)
	var faults sync.WaitGroup
	defer func() {
		endFaults()
		faults.Wait()
	}()
	mon.resetStall()
	var rest []Fault
	for _, f := range plan {
		if f.Kind != StartTogether {
			rest = append(rest, f)
			continue
		}
		in := &Injected{Kind: StartTogether}
		res.Faults = append(res.Faults, in)
		faults.Add(1)
		go func() { defer faults.Done(); r.startTogether(faultCtx, f, in) }()
	}
	if len(rest) == len(plan) {
		for i := 0; i < cfg.Workers; i++ {
			if _, err := cl.startWorker(); err != nil {
				r.failf("%v", err)
				return
			}
		}
	}
	cl.logf("%d workers started", cfg.Workers)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var t0 time.Time
	for {
		select {
		case <-mon.finished:
			st, _ := mon.status()
			cl.stopReplacing()
			cl.logf("job %s at global step %d (generation %d)", st.JobStatus.Phase, st.Watermark.GlobalStep, genNumber(st))
			if !t0.IsZero() {
				res.TrainingS = time.Since(t0).Seconds()
			}
			for _, in := range res.Faults {
				if in.at.IsZero() && in.Skipped == "" {
					in.Skipped = "the job was over"
				}
			}
			return
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				r.failf("the run took longer than %v", cfg.RunTimeout)
				r.stallReport(res, "timeout")
			} else {
				r.failf("interrupted")
			}
			return
		case <-tick.C:
		}
		if t0.IsZero() {
			if t0 = mon.firstCommit(); !t0.IsZero() {
				res.timeline.t0 = t0
				cl.logf("training: first step committed")
				for _, f := range rest {
					in := &Injected{Kind: f.Kind, PlannedS: f.At.Seconds()}
					res.Faults = append(res.Faults, in)
					faults.Add(1)
					go func() {
						defer faults.Done()
						if !sleepCtx(faultCtx, time.Until(t0.Add(f.At))) {
							return
						}
						cl.logf("fault %s", f.Kind)
						r.inject(faultCtx, f, in)
						in.AtS = in.at.Sub(t0).Seconds()
						cl.ev.add("", "fault", in.String())
						cl.logf("  %s", in.String())
					}()
				}
			}
		}
		if d := mon.sinceChange(); d > cfg.Stall && len(cl.workers()) > 0 {
			r.failf("stall: no committed step for %v while %d workers are alive", d.Round(time.Second), len(cl.workers()))
			r.stallReport(res, "stall")
			return
		}
	}
}

func genNumber(st coordinator.Status) uint64 {
	if st.Generation == nil {
		return 0
	}
	return st.Generation.Number
}

// startTogether launches every worker in the same instant and SIGSTOPs one
// of them, a moment later, for f.Duration while the others register.
func (r *runState) startTogether(ctx context.Context, f Fault, in *Injected) {
	cl := r.cl
	rng := pickRand(f)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	ps := make([]*proc, r.cfg.Workers)
	for i := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			p, err := cl.startWorker()
			if err != nil {
				r.failf("%v", err)
				return
			}
			ps[i] = p
		}()
	}
	close(gate)
	wg.Wait()
	in.at = time.Now()
	var cands []*proc
	for _, p := range ps {
		if p != nil {
			cands = append(cands, p)
		}
	}
	if f.Target == NoTarget {
		in.Targets = []string{NoTarget}
		cl.logf("start-together: %d workers, none paused", len(cands))
		return
	}
	victim := choose(rng, cands, 1, f.Target)
	if len(victim) == 0 {
		in.Skipped = "no worker started"
		return
	}
	in.Targets, in.DurationS = []string{victim[0].name}, f.Duration.Seconds()
	sleepCtx(ctx, time.Duration(rng.Int64N(int64(300*time.Millisecond))))
	cl.logf("start-together: %s stopped for %.1fs", victim[0].name, f.Duration.Seconds())
	r.pause(ctx, victim[0], f.Duration)
}

// finalStatus reads the status once the job is over (retrying while a
// coordinator restarts).
func (r *runState) finalStatus(ctx context.Context) (coordinator.Status, bool) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		st, err := r.cl.client.Status(cctx)
		cancel()
		if err == nil && st.Leader != "" {
			return st, true
		}
		if time.Now().After(deadline) {
			return st, false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitWorkersExit waits for the workers to exit by themselves after the
// job's end and names those that did not.
func (r *runState) waitWorkersExit(grace time.Duration) []string {
	r.cl.resume()
	deadline := time.After(grace)
	for _, p := range r.cl.all() {
		if p.role != RoleWorker {
			continue
		}
		select {
		case <-p.done:
		case <-deadline:
		}
	}
	var left []string
	for _, p := range r.cl.workers() {
		left = append(left, fmt.Sprintf("%s (still running %v after the job's end; last log: %s)", p.name, grace,
			strings.Join(p.log.lastLines(2), " | ")))
		_ = p.signal(syscall.SIGKILL, "left behind")
	}
	return left
}

// oracle checks the run's outcome: the job is done, its reward model has
// the reference's bytes, and the step log holds every step exactly once.
func (r *runState) oracle(st coordinator.Status, ref *Reference, jobOut string, res *RunResult) {
	want := ref.SHA256
	if r.cfg.WantSHA256 != "" {
		want = r.cfg.WantSHA256
	}
	if st.JobStatus.Phase != state.JobDone {
		r.failf("job %s: %s", st.JobStatus.Phase, st.JobStatus.Message)
		return
	}
	got, err := fileSHA256(filepath.Join(jobOut, "reward.safetensors"))
	res.RewardSHA256 = got
	switch {
	case err != nil:
		r.failf("the job's reward model: %v", err)
	case got != want:
		r.failf("reward.safetensors sha256 %s, the one-process run %s", got, want)
	case st.JobStatus.RewardSHA256 != want:
		r.failf("the coordinators hold reward sha256 %s, the one-process run %s", st.JobStatus.RewardSHA256, want)
	}
	if err := state.CheckExactlyOnce(stepLog(st), ref.StepsPerEpoch, ref.Epochs); err != nil {
		r.failf("step log: %v", err)
	}
}

func stepLog(st coordinator.Status) []state.StepRange {
	out := make([]state.StepRange, len(st.Log))
	for i, e := range st.Log {
		out[i] = e.StepRange
	}
	return out
}

// account fills the run's numbers: recovery per fault, rewinds, the
// workers' reconciliations, the timeline.
func (r *runState) account(res *RunResult, final coordinator.Status) {
	commits, rewinds, leaders := r.mon.history()
	if len(final.Rewinds) > len(rewinds) {
		rewinds = final.Rewinds
	}
	res.GlobalSteps, res.Generations = final.Watermark.GlobalStep, genNumber(final)
	res.Rewinds = len(rewinds)
	for _, rw := range rewinds {
		if rw.From > rw.To {
			res.StepsRedone += rw.From - rw.To
		}
	}
	for _, l := range leaders {
		res.Leaders = append(res.Leaders, l.Leader)
	}
	for i, in := range res.Faults {
		if in.at.IsZero() || in.Skipped != "" {
			continue
		}
		var until time.Time
		for _, o := range res.Faults[i+1:] {
			if !o.at.IsZero() && o.at.After(in.at) {
				until = o.at
				break
			}
		}
		step := in.StepAt
		if in.Kind == StartTogether {
			step = 0
		}
		if took, redone, ok := recovery(commits, rewinds, in.at, until, step, r.cfg.ReportEvery); ok {
			s := took.Seconds()
			in.RecoveryS, in.StepsRedone = &s, redone
		} else {
			in.StepsRedone = redone
		}
		if in.Kind == StartTogether && !res.timeline.t0.IsZero() {
			in.AtS = in.at.Sub(res.timeline.t0).Seconds()
		}
	}
	for _, p := range r.cl.all() {
		if p.role == RoleWorker {
			if b, err := os.ReadFile(filepath.Join(r.cl.dir, "logs", p.name+".log")); err == nil {
				res.Reconciled += strings.Count(string(b), "collective call failed; reconciling")
				res.Pauses = append(res.Pauses, parsePauses(p.name, b)...)
			}
		}
	}
	r.cl.mu.Lock()
	res.Replacements = r.cl.replaced
	r.cl.mu.Unlock()
	res.timeline.procs = r.cl.all()
	res.timeline.events = r.cl.ev.all()
	res.timeline.commits = commits
	res.timeline.start = r.cl.t0
	if res.timeline.t0.IsZero() {
		res.timeline.t0 = r.cl.t0
	}
}

// Package chaos is fault injection as a product (`causalrm chaos`): it
// runs a real elastic job on 127.0.0.1 (coordinator and worker processes
// of the causalrm binary), injects faults at moments drawn from a seed
// (kill -9 of workers and coordinators, SIGSTOP pauses, restarts from a
// checkpoint, join/leave storms, a coordinator cut off from the workers by
// a TCP proxy), and checks an oracle after every run: the job's reward
// model has the bytes of the one-process run, the coordinators' step log
// holds every step of every epoch exactly once, no process is left
// behind, and no stall (no committed step for a while with workers
// alive). It writes chaos.md, chaos.json and timeline.png.
// docs/chaos.md is the user's guide.
//
// Files: config.go (settings, fault kinds, scenario files), plan.go (the
// faults drawn from a seed), proc.go and cluster.go (processes, the
// controller that replaces dead workers; the TCP proxy is internal/tcpproxy),
// faults.go (injecting each kind), monitor.go (the coordinators' status
// over time, recovery times), run.go (one run and its oracle), stall.go
// (the stall report), reference.go (the one-process reference), report.go
// and timeline.go (the outputs).
package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Summary is a chaos invocation's result (chaos.json).
type Summary struct {
	Date      string       `json:"date"`
	Host      string       `json:"host"`
	Command   string       `json:"command"`
	Reference *Reference   `json:"reference"`
	Settings  Settings     `json:"settings"`
	Runs      []*RunResult `json:"runs"`
	Failed    int          `json:"failed"`
}

// Settings are the invocation's settings, for the report.
type Settings struct {
	Workers         int      `json:"workers"`
	Coordinators    int      `json:"coordinators"`
	MinWorkers      int      `json:"min_workers"`
	Kinds           []Kind   `json:"kinds"`
	FaultsPerRun    int      `json:"faults_per_run"`
	Scenario        bool     `json:"scenario"`
	WindowS         float64  `json:"window_s"`
	StallS          float64  `json:"stall_s"`
	StepDelay       string   `json:"step_delay"`
	HeartbeatS      float64  `json:"heartbeat_timeout_s"`
	OpTimeout       string   `json:"op_timeout"`
	ReportEvery     int      `json:"report_every"`
	CheckpointEvery int      `json:"checkpoint_every"`
	Job             []string `json:"job"`
}

// Run runs cfg.Runs runs and writes the report into cfg.Out. The error is
// for a chaos invocation that could not run (bad settings, no reference);
// failed runs are in the summary (Failed > 0).
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Log, "chaos: training the one-process reference into %s\n", cfg.Out)
	ref, err := prepare(ctx, &cfg)
	if err != nil {
		return nil, fmt.Errorf("the reference: %w", err)
	}
	fmt.Fprintf(cfg.Log, "chaos: reference reward sha256 %s (%d steps)\n", ref.SHA256, ref.Steps)
	host, _ := os.Hostname()
	sum := &Summary{Date: time.Now().Format(time.RFC3339), Host: host, Command: cfg.command(cfg.Seed, cfg.Runs), Reference: ref,
		Settings: Settings{Workers: cfg.Workers, Coordinators: cfg.Coordinators, MinWorkers: cfg.MinWorkers, Kinds: cfg.Kinds,
			FaultsPerRun: cfg.FaultsPerRun, Scenario: len(cfg.Scenario) > 0, WindowS: cfg.Window.Seconds(), StallS: cfg.Stall.Seconds(),
			StepDelay: cfg.StepDelay.String(), HeartbeatS: cfg.HeartbeatTimeout.Seconds(), OpTimeout: opTimeout(cfg.OpTimeout), ReportEvery: cfg.ReportEvery,
			CheckpointEvery: cfg.CheckpointEvery, Job: cfg.Job.args()}}
	for i := 0; i < cfg.Runs && ctx.Err() == nil; i++ {
		res := runOne(ctx, &cfg, ref, i+1, cfg.Seed+uint64(i))
		sum.Runs = append(sum.Runs, res)
		verdict := "PASS"
		if !res.Pass {
			verdict = "FAIL: " + strings.Join(res.Failures, "; ")
			sum.Failed++
		}
		fmt.Fprintf(cfg.Log, "run %d seed %d: %s (%.1fs)\n", res.Run, res.Seed, verdict, res.Seconds)
		if !res.Pass {
			fmt.Fprintf(cfg.Log, "  replay: %s\n", res.Replay)
		}
		if err := writeTimeline(res); err != nil {
			fmt.Fprintf(cfg.Log, "run %d: timeline: %v\n", res.Run, err)
		}
	}
	if err := writeReport(cfg.Out, sum); err != nil {
		return sum, err
	}
	fmt.Fprintf(cfg.Log, "chaos: %d of %d runs failed; report %s\n", sum.Failed, len(sum.Runs), filepath.Join(cfg.Out, "chaos.md"))
	if ctx.Err() != nil {
		// Not the context's error: the report was written.
		return sum, fmt.Errorf("chaos interrupted after %d of %d runs (%v); the report covers them", len(sum.Runs), cfg.Runs, ctx.Err())
	}
	return sum, nil
}

func opTimeout(d time.Duration) string {
	if d <= 0 {
		return "the worker's default"
	}
	return d.String()
}

// command is the command line of a chaos invocation with this seed and
// run count.
func (c *Config) command(seed uint64, runs int) string {
	s := fmt.Sprintf("causalrm chaos --seed %d --runs %d", seed, runs)
	if len(c.Replay) > 0 {
		s += " " + strings.Join(c.Replay, " ")
	}
	return s
}

// replay is the command that replays the run of this seed (its report
// in a directory of its own under Out).
func (c *Config) replay(seed uint64) string {
	return c.command(seed, 1) + " --out " + shellQuote(filepath.Join(c.Out, fmt.Sprintf("replay-seed-%d", seed)))
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./,:=+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ShellQuote quotes s for a POSIX shell when it needs it (the command
// line builds Config.Replay with it).
func ShellQuote(s string) string { return shellQuote(s) }

package chaos

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/causalrm/causalrm/internal/strictyaml"
)

// Kind is a kind of fault.
type Kind string

// The fault kinds (docs/chaos.md says what each does).
const (
	KillWorker           Kind = "kill-worker"
	KillWorkers          Kind = "kill-workers"
	PauseWorker          Kind = "pause-worker"
	KillLeader           Kind = "kill-leader"
	KillFollower         Kind = "kill-follower"
	RestartWorkers       Kind = "restart-workers"
	JoinLeaveStorm       Kind = "join-leave-storm"
	StartTogether        Kind = "start-together"
	PartitionCoordinator Kind = "partition-coordinator"
	SlowLink             Kind = "slow-link"
	MangleLink           Kind = "mangle-link"
	RestartCoordinators  Kind = "restart-coordinators"
	DiskFull             Kind = "disk-full"
)

// AllKinds lists every fault kind.
func AllKinds() []Kind {
	return []Kind{KillWorker, KillWorkers, PauseWorker, KillLeader, KillFollower, RestartWorkers,
		JoinLeaveStorm, StartTogether, PartitionCoordinator, SlowLink, MangleLink, RestartCoordinators, DiskFull}
}

func (k Kind) valid() bool {
	for _, a := range AllKinds() {
		if a == k {
			return true
		}
	}
	return false
}

// KindNames is every fault kind, comma-separated, for help and errors.
func KindNames() string {
	var s []string
	for _, k := range AllKinds() {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

// ParseKinds reads a comma-separated list of fault kinds; "" or "all" is
// every kind.
func ParseKinds(s string) ([]Kind, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "all" {
		return AllKinds(), nil
	}
	var out []Kind
	for _, part := range strings.Split(s, ",") {
		k := Kind(strings.TrimSpace(part))
		if !k.valid() {
			return nil, fmt.Errorf("unknown fault kind %q (want %s, or all)", part, KindNames())
		}
		out = append(out, k)
	}
	return out, nil
}

// Fault is one planned fault of a run.
type Fault struct {
	Kind Kind `json:"kind"`
	// At is when it strikes, after the run's first committed step
	// (start-together: at the workers' launch, At is 0).
	At time.Duration `json:"-"`
	// Duration is how long the fault lasts: the pause (pause-worker,
	// start-together), the coordinator's downtime (kill-leader,
	// kill-follower), the cut (partition-coordinator), the window of the
	// leaves (join-leave-storm).
	Duration time.Duration `json:"-"`
	// Target names the process hit (w3, c1; "" for a draw among those
	// eligible when it strikes).
	Target string `json:"target,omitempty"`
	// Pick seeds the fault's own draws (its target, a storm's times).
	Pick uint64 `json:"-"`
}

// NoTarget as a start-together's target starts the workers together and
// pauses none of them: the plain simultaneous start.
const NoTarget = "none"

// scenarioEntry is one entry of a --scenario file.
type scenarioEntry struct {
	Kind     string  `yaml:"kind"`
	At       float64 `yaml:"at"`       // seconds after the first committed step
	Duration float64 `yaml:"duration"` // seconds (0: drawn from the seed)
	Target   string  `yaml:"target"`   // "" (a draw), a worker (w2), a coordinator (c1), leader, or none (start-together: pause nobody)
}

// LoadScenario reads a scenario file: a YAML list of {kind, at, duration,
// target}, at and duration in seconds.
func LoadScenario(path string) ([]Fault, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseScenario(path, raw)
}

// ParseScenario decodes a scenario (LoadScenario); source names it in
// errors.
func ParseScenario(source string, raw []byte) ([]Fault, error) {
	var entries []scenarioEntry
	if err := strictyaml.Decode(source, raw, &entries, strictyaml.Options{}); err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%s: no faults", source)
	}
	var out []Fault
	for i, e := range entries {
		k := Kind(e.Kind)
		if !k.valid() {
			return nil, fmt.Errorf("%s: entry %d: kind %q: want one of %s", source, i+1, e.Kind, KindNames())
		}
		if e.At < 0 || e.Duration < 0 {
			return nil, fmt.Errorf("%s: entry %d: at and duration must be >= 0 seconds", source, i+1)
		}
		if e.Target == NoTarget && k != StartTogether {
			return nil, fmt.Errorf("%s: entry %d: target none goes with start-together only (the workers start together and none is paused)", source, i+1)
		}
		out = append(out, Fault{Kind: k, At: secs(e.At), Duration: secs(e.Duration), Target: e.Target})
	}
	return out, nil
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Job is the size of the job every run trains (and the reference).
type Job struct {
	Method    string
	Hidden    []int
	Batch     int
	MaxEpochs int
	Shards    int
	Seed      uint64
}

// args are the job's flags, given to both train (the reference) and
// submit.
func (j Job) args() []string {
	var h []string
	for _, w := range j.Hidden {
		h = append(h, strconv.Itoa(w))
	}
	return []string{"--method", j.Method, "--hidden", strings.Join(h, ","), "--batch", strconv.Itoa(j.Batch),
		"--max-epochs", strconv.Itoa(j.MaxEpochs), "--shards", strconv.Itoa(j.Shards),
		"--seed", strconv.FormatUint(j.Seed, 10), "--threads", "1", "--quiet"}
}

// Config is a chaos invocation.
type Config struct {
	// Binary is the causalrm binary every process runs (os.Executable()).
	Binary string
	// Out receives the report, the reference, the generated data and one
	// directory per run (logs, coordinators' data, the job's outputs).
	Out string
	// Data is the training data; "" generates a small data set into Out.
	Data string
	// Rows, TestRows, Dim size the generated data set.
	Rows, TestRows, Dim int

	Job Job

	// Kinds are the faults drawn from (default all); FaultsPerRun how
	// many each run gets (0: none; the command's default is 2). Scenario, when set, replaces the draw: every
	// run injects its faults (targets and durations left open are drawn).
	Kinds        []Kind
	FaultsPerRun int
	Scenario     []Fault

	Runs int
	// Seed is run 1's seed; run i uses Seed+i-1, so
	// `causalrm chaos --seed <that> --runs 1` replays it.
	Seed uint64
	// Window is the span after the first committed step in which faults
	// are placed.
	Window time.Duration

	Workers, Coordinators, MinWorkers int
	ReportEvery, CheckpointEvery      int
	// StepDelay slows every worker's step (CAUSALRM_STEP_DELAY) so that a
	// small job lasts long enough to be hit.
	StepDelay time.Duration
	// HeartbeatTimeout is the coordinators' --heartbeat-timeout.
	HeartbeatTimeout time.Duration
	// OpTimeout is the workers' --op-timeout (0: the worker's default).
	OpTimeout time.Duration
	// Stall fails a run when no step is committed for this long while
	// workers are alive.
	Stall time.Duration
	// RunTimeout bounds one run.
	RunTimeout time.Duration

	// Replay is the invocation's flags other than --seed and --runs,
	// quoted for a shell: a failed run's replay command is
	// `causalrm chaos --seed S --runs 1` followed by them.
	Replay []string

	// Log receives progress (stderr).
	Log io.Writer

	// WantSHA256, when set, replaces the reference's hash in the oracle
	// (--expect-sha256: a known-good model's hash; tests: a wrong one
	// must fail every run).
	WantSHA256 string
}

// Defaults fills the zero fields with the defaults of `causalrm chaos`.
func (c *Config) Defaults() {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	def(&c.Rows, 2000)
	def(&c.TestRows, 200)
	def(&c.Dim, 16)
	def(&c.Runs, 1)
	def(&c.Workers, 3)
	def(&c.Coordinators, 3)
	def(&c.ReportEvery, 5)
	def(&c.CheckpointEvery, 20)
	def(&c.Job.Batch, 64)
	def(&c.Job.MaxEpochs, 4)
	def(&c.Job.Shards, 12)
	if c.MinWorkers == 0 {
		c.MinWorkers = max(1, c.Workers-1)
	}
	if c.Job.Method == "" {
		c.Job.Method = "causalrm-dr"
	}
	if len(c.Job.Hidden) == 0 {
		c.Job.Hidden = []int{16, 8}
	}
	if c.Job.Seed == 0 {
		c.Job.Seed = 1
	}
	if len(c.Kinds) == 0 {
		c.Kinds = AllKinds()
	}
	if c.Window == 0 {
		c.Window = 8 * time.Second
	}
	if c.StepDelay == 0 {
		c.StepDelay = 40 * time.Millisecond
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = 2 * time.Second
	}
	if c.Stall == 0 {
		c.Stall = 30 * time.Second
	}
	if c.RunTimeout == 0 {
		c.RunTimeout = 5 * time.Minute
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Validate checks the settings.
func (c *Config) Validate() error {
	switch {
	case c.Binary == "":
		return errors.New("chaos: no causalrm binary")
	case c.Out == "":
		return errors.New("--out: give the directory of the report")
	case c.Runs < 1:
		return fmt.Errorf("--runs %d: want at least 1", c.Runs)
	case c.Workers < 1:
		return fmt.Errorf("--workers %d: want at least 1", c.Workers)
	case c.Coordinators != 1 && c.Coordinators != 3 && c.Coordinators != 5:
		return fmt.Errorf("--coordinators %d: want 1, 3 or 5", c.Coordinators)
	case c.MinWorkers < 1 || c.MinWorkers > c.Workers:
		return fmt.Errorf("--min-workers %d: want 1 to --workers (%d)", c.MinWorkers, c.Workers)
	case c.FaultsPerRun < 0:
		return fmt.Errorf("--faults-per-run %d: want >= 0", c.FaultsPerRun)
	case c.Window <= 0:
		return fmt.Errorf("--duration %v: want > 0", c.Window)
	case c.Stall < 2*c.HeartbeatTimeout:
		return fmt.Errorf("--stall %v: want at least twice --heartbeat-timeout (%v)", c.Stall, c.HeartbeatTimeout)
	}
	return nil
}

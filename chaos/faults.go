package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"time"

	"github.com/causalrm/causalrm/internal/tcpproxy"
)

// Injected is a fault as it happened.
type Injected struct {
	Kind Kind `json:"kind"`
	// PlannedS is when it was planned, AtS when it struck: seconds after
	// the first committed step (negative: before it).
	PlannedS  float64  `json:"planned_s"`
	AtS       float64  `json:"at_s"`
	DurationS float64  `json:"duration_s,omitempty"`
	Targets   []string `json:"targets,omitempty"`
	// Skipped says why it did not strike (the job was over, nobody was
	// eligible).
	Skipped string `json:"skipped,omitempty"`
	// StepAt is the committed global step when it struck.
	StepAt uint64 `json:"step_at"`
	// RecoveryS is the time from the fault to the next committed step it
	// could not have preceded (monitor.go, recovery); nil when none came.
	RecoveryS *float64 `json:"recovery_s"`
	// StepsRedone is the committed steps undone by a rewind to a
	// checkpoint after it.
	StepsRedone uint64 `json:"steps_redone"`

	at time.Time
}

func (in *Injected) String() string {
	s := string(in.Kind)
	if len(in.Targets) > 0 {
		s += " " + strings.Join(in.Targets, ",")
	}
	if in.Skipped != "" {
		return s + fmt.Sprintf(" @%.1fs skipped (%s)", in.PlannedS, in.Skipped)
	}
	s += fmt.Sprintf(" @%.1fs", in.AtS)
	if in.DurationS > 0 {
		s += fmt.Sprintf(" for %.1fs", in.DurationS)
	}
	return s
}

// sleepCtx sleeps d or until ctx ends; it reports whether it slept d.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// choose picks n distinct processes among cands, the target first when it
// is one of them; the draw is the fault's own.
func choose(rng *rand.Rand, cands []*proc, n int, target string) []*proc {
	var out []*proc
	rest := append([]*proc(nil), cands...)
	if target != "" {
		for i, p := range rest {
			if p.name == target {
				out = append(out, p)
				rest = append(rest[:i], rest[i+1:]...)
				break
			}
		}
	}
	for len(out) < n && len(rest) > 0 {
		i := rng.IntN(len(rest))
		out = append(out, rest[i])
		rest = append(rest[:i], rest[i+1:]...)
	}
	return out
}

func running(ps []*proc) []*proc {
	var out []*proc
	for _, p := range ps {
		if !p.isStopped() {
			out = append(out, p)
		}
	}
	return out
}

// inject strikes fault f now. ctx ends early when the job is over: a
// fault that lasts (a pause, a coordinator's downtime, a cut) then ends at
// once, restoring what it broke.
func (r *runState) inject(ctx context.Context, f Fault, in *Injected) {
	c := r.cl
	rng := pickRand(f)
	in.at = time.Now()
	in.StepAt = r.mon.step()
	switch f.Kind {
	case KillWorker, KillWorkers:
		n := 1
		if f.Kind == KillWorkers {
			n = 2
		}
		ps := choose(rng, c.workers(), n, f.Target)
		if len(ps) == 0 {
			in.Skipped = "no live worker"
			return
		}
		in.Targets = procNames(ps)
		c.killAll(ps, "kill -9 ("+string(f.Kind)+")")
	case PauseWorker:
		ps := choose(rng, running(c.workers()), 1, f.Target)
		if len(ps) == 0 {
			in.Skipped = "no running worker"
			return
		}
		in.Targets, in.DurationS = procNames(ps), f.Duration.Seconds()
		r.pause(ctx, ps[0], f.Duration)
	case KillLeader, KillFollower:
		r.restartCoordinator(ctx, rng, f, in)
	case RestartWorkers:
		ps := c.workers()
		if len(ps) == 0 {
			in.Skipped = "no live worker"
			return
		}
		in.Targets = procNames(ps)
		c.killAll(ps, "kill -9 (restart-workers)")
	case JoinLeaveStorm:
		r.storm(ctx, rng, f, in)
	case SlowLink:
		r.slowLink(ctx, rng, f, in)
	case MangleLink:
		r.mangle(ctx, rng, f, in)
	case DiskFull:
		r.diskFull(ctx, rng, f, in)
	case RestartCoordinators:
		r.restartCoordinators(ctx, f, in)
	case PartitionCoordinator:
		r.partition(ctx, rng, f, in)
	}
}

// procNames is the names of ps, for a fault's targets.
func procNames(ps []*proc) []string {
	var s []string
	for _, p := range ps {
		s = append(s, p.name)
	}
	return s
}

// killAll sends SIGKILL to each of ps and records it on the timeline.
func (c *cluster) killAll(ps []*proc, why string) {
	for _, p := range ps {
		_ = p.signal(syscall.SIGKILL, why)
		c.ev.add(p.name, "kill", why)
	}
}

// restartCoordinator kills the leader or a follower (kill-leader,
// kill-follower) and restarts it with its data after f.Duration.
func (r *runState) restartCoordinator(ctx context.Context, rng *rand.Rand, f Fault, in *Injected) {
	c := r.cl
	i := r.strikeCoordinator(rng, f, in)
	if i < 0 {
		return
	}
	p := c.coordinator(i)
	in.Targets, in.DurationS = []string{p.name}, f.Duration.Seconds()
	c.killAll([]*proc{p}, "kill -9 ("+string(f.Kind)+")")
	<-p.done
	sleepCtx(ctx, f.Duration)
	if err := c.startCoordinator(i); err != nil {
		r.failf("restarting %s: %v", p.name, err)
	}
	c.logf("%s restarted with its data directory", p.name)
}

// slowLink delays every chunk on one worker's collective link by 20-100 ms
// for f.Duration.
func (r *runState) slowLink(ctx context.Context, rng *rand.Rand, f Fault, in *Injected) {
	c := r.cl
	ps := choose(rng, c.workers(), 1, f.Target)
	if len(ps) == 0 {
		in.Skipped = "no live worker"
		return
	}
	d := time.Duration(20+rng.IntN(81)) * time.Millisecond
	in.Targets, in.DurationS = []string{fmt.Sprintf("%s+%dms", ps[0].name, d.Milliseconds())}, f.Duration.Seconds()
	ps[0].link.SetDelay(d)
	c.ev.add(ps[0].name, "slow", d.String())
	sleepCtx(ctx, f.Duration)
	ps[0].link.SetDelay(0)
}

// diskFull leaves the raft store of a coordinator (the leader, or the
// target) unable to write anything more for f.Duration: where checkpoints
// and the step log go.
func (r *runState) diskFull(ctx context.Context, rng *rand.Rand, f Fault, in *Injected) {
	c := r.cl
	i := r.pickCoordinator(rng, Fault{Kind: KillLeader, Target: f.Target})
	if i < 0 && f.Target == "" { // no leader known (an election): any live one
		i = r.pickCoordinator(rng, Fault{Kind: KillFollower})
	}
	if i < 0 {
		in.Skipped = "no such coordinator"
		return
	}
	p := c.coordinator(i)
	in.Targets, in.DurationS = []string{p.name}, f.Duration.Seconds()
	c.setDiskFull(i, true)
	old, err := p.limitFileSize(1)
	if err != nil {
		c.setDiskFull(i, false)
		in.Skipped = err.Error()
		return
	}
	c.ev.add(p.name, "disk-full", "")
	sleepCtx(ctx, f.Duration)
	c.setDiskFull(i, false)
	// The coordinator may have crashed and been restarted meanwhile.
	if _, err := c.coordinator(i).limitFileSize(old); err == nil {
		c.ev.add(p.name, "disk-ok", "")
		c.logf("%s can write again", p.name)
	}
}

// restartCoordinators kills every live coordinator and restarts them all
// with their data after f.Duration.
func (r *runState) restartCoordinators(ctx context.Context, f Fault, in *Injected) {
	c := r.cl
	in.DurationS = f.Duration.Seconds()
	var ps []*proc
	for i := range c.coords {
		if p := c.coordinator(i); !p.exited() {
			ps = append(ps, p)
		}
	}
	in.Targets = procNames(ps)
	c.killAll(ps, "kill -9 (restart-coordinators)")
	for _, p := range ps {
		<-p.done
	}
	sleepCtx(ctx, f.Duration)
	for _, p := range ps {
		if err := c.startCoordinator(p.index); err != nil {
			r.failf("restarting %s: %v", p.name, err)
		}
	}
	c.logf("every coordinator restarted with its data directory")
}

// partition cuts a coordinator (the leader, or the target) off from
// workers and peers through its proxy for f.Duration.
func (r *runState) partition(ctx context.Context, rng *rand.Rand, f Fault, in *Injected) {
	c := r.cl
	i := r.strikeCoordinator(rng, f, in)
	if i < 0 {
		return
	}
	name := fmt.Sprintf("c%d", i)
	in.Targets, in.DurationS = []string{name}, f.Duration.Seconds()
	c.proxies[i].Partition(true)
	c.ev.add(name, "cut", "")
	sleepCtx(ctx, f.Duration)
	c.proxies[i].Partition(false)
	c.ev.add(name, "heal", "")
	c.logf("%s reachable again", name)
}

// strikeCoordinator is pickCoordinator for a fault that needs one: -1,
// with the fault marked skipped, when there is none.
func (r *runState) strikeCoordinator(rng *rand.Rand, f Fault, in *Injected) int {
	i := r.pickCoordinator(rng, f)
	if i < 0 {
		in.Skipped = "no such coordinator"
	}
	return i
}

// pickCoordinator is the coordinator a kill-leader, kill-follower or
// partition-coordinator hits: the target when given ("leader" or c<i>),
// else the leader (kill-leader, partition-coordinator) or a follower.
func (r *runState) pickCoordinator(rng *rand.Rand, f Fault) int {
	c := r.cl
	if f.Target != "" && f.Target != "leader" {
		for i := range c.coords {
			if fmt.Sprintf("c%d", i) == f.Target && !c.coordinator(i).exited() {
				return i
			}
		}
		return -1
	}
	leader := r.mon.leader()
	if f.Kind == KillLeader || f.Kind == PartitionCoordinator || f.Target == "leader" {
		for i := range c.coords {
			if fmt.Sprintf("c%d", i) == leader && !c.coordinator(i).exited() {
				return i
			}
		}
		return -1
	}
	var cands []int
	for i := range c.coords {
		if fmt.Sprintf("c%d", i) != leader && !c.coordinator(i).exited() {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return -1
	}
	return cands[rng.IntN(len(cands))]
}

// pause SIGSTOPs p for d (or until ctx ends) and then continues it.
func (r *runState) pause(ctx context.Context, p *proc, d time.Duration) {
	if p.signal(syscall.SIGSTOP, "") != nil {
		return
	}
	r.cl.ev.add(p.name, "stop", "")
	sleepCtx(ctx, d)
	if p.signal(syscall.SIGCONT, "") == nil {
		r.cl.ev.add(p.name, "cont", "")
		r.cl.logf("%s continued after %.1fs", p.name, d.Seconds())
	}
}

// storm starts 2 or 3 workers, 200 ms apart, then within f.Duration sends
// as many SIGTERMs (graceful leaves) to running workers drawn at random,
// never the last one.
func (r *runState) storm(ctx context.Context, rng *rand.Rand, f Fault, in *Injected) {
	c := r.cl
	k := 2 + rng.IntN(2)
	in.DurationS = f.Duration.Seconds()
	leaves := make([]time.Duration, k)
	for i := range leaves {
		leaves[i] = time.Duration(rng.Int64N(int64(f.Duration)))
	}
	picks := make([]uint64, k)
	for i := range picks {
		picks[i] = rng.Uint64()
	}
	for i := 0; i < k; i++ {
		p, err := c.startWorker()
		if err != nil {
			r.failf("storm: %v", err)
			return
		}
		in.Targets = append(in.Targets, "+"+p.name)
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return
		}
	}
	start := time.Now()
	for i, at := range sortedDurations(leaves) {
		if !sleepCtx(ctx, time.Until(start.Add(at))) {
			return
		}
		ps := running(c.workers())
		if len(ps) < 2 {
			continue
		}
		p := ps[picks[i]%uint64(len(ps))]
		if p.signal(syscall.SIGTERM, "SIGTERM (join-leave-storm)") == nil {
			c.ev.add(p.name, "term", "")
			in.Targets = append(in.Targets, "-"+p.name)
		}
	}
}

// mangle changes the byte stream of 1-3 data-plane links, at moments drawn
// in f.Duration: a flipped bit, a duplicated, swapped or dropped chunk on
// the connections into a drawn worker's collective listener.
func (r *runState) mangle(ctx context.Context, rng *rand.Rand, f Fault, in *Injected) {
	c := r.cl
	in.DurationS = f.Duration.Seconds()
	k := 1 + rng.IntN(3)
	at := make([]time.Duration, k)
	for i := range at {
		at[i] = time.Duration(rng.Int64N(int64(f.Duration)))
	}
	type hit struct {
		pick uint64
		m    tcpproxy.Mangle
		seed uint32
	}
	hits := make([]hit, k)
	for i := range hits {
		hits[i] = hit{rng.Uint64(), tcpproxy.Mangle(1 + rng.IntN(4)), rng.Uint32()}
	}
	start := time.Now()
	for i, d := range sortedDurations(at) {
		if !sleepCtx(ctx, time.Until(start.Add(d))) {
			return
		}
		ps := c.workers()
		if len(ps) == 0 {
			continue
		}
		p := ps[hits[i].pick%uint64(len(ps))]
		if f.Target != "" {
			if p = c.byName(f.Target); p == nil || p.link == nil {
				continue
			}
		}
		p.link.MangleNext(hits[i].m, hits[i].seed)
		c.ev.add(p.name, "mangle", hits[i].m.String())
		in.Targets = append(in.Targets, p.name+":"+hits[i].m.String())
	}
}

func sortedDurations(d []time.Duration) []time.Duration {
	out := append([]time.Duration(nil), d...)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

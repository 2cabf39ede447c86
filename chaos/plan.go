package chaos

import (
	"math/rand/v2"
	"sort"
	"time"
)

// Plan draws a run's faults from its seed: FaultsPerRun kinds among Kinds
// at moments uniform in (0.5s, Window] after the first committed step, or
// the scenario's faults; durations left open are drawn per kind, and each
// fault gets its own seed (Pick) for the draws it makes when it strikes
// (its target among the processes eligible then). The same seed gives the
// same plan.
func Plan(seed uint64, c *Config) []Fault {
	rng := rand.New(rand.NewPCG(seed, 0x63686173))
	var plan []Fault
	if len(c.Scenario) > 0 {
		plan = append(plan, c.Scenario...)
	} else {
		for i := 0; i < c.FaultsPerRun; i++ {
			k := c.Kinds[rng.IntN(len(c.Kinds))]
			at := 500*time.Millisecond + time.Duration(rng.Int64N(int64(max(c.Window-500*time.Millisecond, time.Millisecond))))
			plan = append(plan, Fault{Kind: k, At: at.Round(10 * time.Millisecond)})
		}
	}
	together := false
	out := plan[:0]
	for _, f := range plan {
		if f.Kind == StartTogether {
			if together { // one launch per run
				continue
			}
			together, f.At = true, 0
		}
		if f.Duration == 0 {
			f.Duration = drawDuration(rng, f.Kind)
		}
		f.Pick = rng.Uint64()
		out = append(out, f)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out
}

// drawDuration draws how long a fault of kind k lasts.
func drawDuration(rng *rand.Rand, k Kind) time.Duration {
	between := func(lo, hi float64) time.Duration {
		return secs(lo + rng.Float64()*(hi-lo)).Round(10 * time.Millisecond)
	}
	switch k {
	case PauseWorker:
		return between(2, 8)
	case StartTogether:
		return between(2, 5)
	case KillLeader, KillFollower:
		return between(2, 5)
	case PartitionCoordinator:
		return between(3, 6)
	case JoinLeaveStorm:
		return between(2, 4)
	case SlowLink:
		return between(2, 5)
	case MangleLink:
		return between(1, 3)
	case RestartCoordinators:
		return between(1, 3)
	case DiskFull:
		return between(2, 5)
	}
	return 0
}

// pickRand is a fault's own generator.
func pickRand(f Fault) *rand.Rand { return rand.New(rand.NewPCG(f.Pick, 0x7069636b)) }

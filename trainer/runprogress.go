package trainer

import (
	"fmt"
	"time"

	"github.com/causalrm/causalrm/causal"
)

// runPlan is what a Reward call will train, so that progress can say
// "stage k of n" and estimate the time left for the whole run.
type runPlan struct {
	stages []string  // in order; those already trained are left out
	start  time.Time // when the call began
	done   int       // stages finished in this call
}

// planRun lists the stages Reward(m) will train that are not trained yet.
func (t *Trainer) planRun(m causal.Method) {
	var names []string
	if m.UsesPropensity() && t.PHatTrain == nil && t.cfg.Propensity != "given" {
		names = append(names, StagePropensity)
	}
	if m.UsesFlipRates() && !t.RatesKnown {
		names = append(names, StageNoise)
		if t.cfg.flipEstimator() == causal.FlipCrossFit {
			for k := range causal.DefaultFlipFolds {
				names = append(names, FoldStage(k))
			}
		}
	}
	if m.UsesImputation() && t.GHatTrain == nil {
		names = append(names, StageImputation)
	}
	if t.Stages[StageReward+"/"+string(m)] == nil {
		names = append(names, StageReward+"/"+string(m))
	}
	t.run = runPlan{stages: names, start: time.Now()}
}

// stageEnded prints, when progress is on, why a stage ended, the epoch it
// kept, and where the whole run stands: "stage k of n" and the time left,
// estimated from the mean time of the stages done so far (the reward
// stage, which sees every row, counts as one like the others).
func (t *Trainer) stageEnded(res *StageResult, early bool) {
	t.run.done++
	w := t.cfg.Progress
	if w == nil {
		return
	}
	why := fmt.Sprintf("reached max_epochs %d", t.cfg.MaxEpochs)
	if early {
		why = fmt.Sprintf("no improvement for %d epochs (patience)", t.cfg.Patience)
	}
	n := max(len(t.run.stages), t.run.done)
	left := ""
	if rest := n - t.run.done; rest > 0 {
		per := time.Since(t.run.start) / time.Duration(t.run.done)
		left = fmt.Sprintf("; about %s left for %d more", (per * time.Duration(rest)).Round(time.Second), rest)
	}
	fmt.Fprintf(w, "stage %-22s done after %d epochs: %s; kept epoch %d (%.5f) [stage %d of %d, %s%s]\n",
		res.Name, res.Epochs, why, res.BestEpoch, res.BestVal, t.run.done, n,
		time.Since(t.run.start).Round(time.Second), left)
}

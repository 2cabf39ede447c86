package trainer

import (
	"fmt"
	"slices"
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

// planRun lists the stages that Reward will train for the methods and
// that are not trained yet: the auxiliary stages once, then each method's
// reward stage. A plan that already lists every one of them (made by
// Prepare for several methods) is kept, so that "stage k of n" counts
// across the methods.
func (t *Trainer) planRun(methods ...causal.Method) {
	var names []string
	needP, needN, needG := auxNeeds(methods)
	if needP && t.PHatTrain == nil && t.cfg.Propensity != "given" {
		names = append(names, StagePropensity)
	}
	if needN && !t.RatesKnown {
		names = append(names, StageNoise)
		if t.cfg.flipEstimator() == causal.FlipCrossFit {
			for r := range t.cfg.flipRepeats() {
				for k := range causal.DefaultFlipFolds {
					names = append(names, FoldStageOf(r, k))
				}
			}
		}
	}
	if needG && t.GHatTrain == nil {
		names = append(names, StageImputation)
	}
	for _, m := range methods {
		for j := range t.cfg.RewardModelCount() {
			if name := RewardStage(m, j); t.Stages[name] == nil && !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	if t.run.covers(names) {
		return
	}
	t.run = runPlan{stages: names, start: time.Now()}
}

// auxNeeds reports which auxiliary models any of the methods uses: the
// propensity, the flip rates, the imputation.
func auxNeeds(methods []causal.Method) (p, n, g bool) {
	for _, m := range methods {
		p = p || m.UsesPropensity()
		n = n || m.UsesFlipRates()
		g = g || m.UsesImputation()
	}
	return p, n, g
}

// covers reports whether the plan has begun and lists every stage of
// names among those it has not finished.
func (p *runPlan) covers(names []string) bool {
	if p.start.IsZero() {
		return false
	}
	for _, n := range names {
		if i := slices.Index(p.stages, n); i < 0 || i < p.done {
			return false
		}
	}
	return true
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

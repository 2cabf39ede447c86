package report

import (
	"fmt"
	"math"
	"strings"
)

// crossFitNoteCounts (a format of the tails' row counts, rho10's then
// rho01's, followed by crossFitIntervalNote) explains a cross-fitted
// estimate and its interval; crossFitNote is the same without the counts,
// for a table of several runs.
const (
	crossFitNoteCounts   = "estimated: cross-fitted (docs/method.md, \"Flip-rate estimation\"): rho10 is the share of y = 1 among the %s observed rows with the lowest out-of-fold noise-model logits, rho01 the share of y = 0 among the %s highest; "
	crossFitNote         = "estimated: cross-fitted (docs/method.md, \"Flip-rate estimation\"): rho10 is the share of y = 1 among the observed rows with the lowest out-of-fold noise-model logits, rho01 the share of y = 0 among those with the highest; " + crossFitIntervalNote
	crossFitIntervalNote = "the interval is the 95% Wilson interval of that share, which covers the labels' sampling noise, not rows of the other class in a tail (those only push a rate up)"
)

// writeFlipRates writes report.md's flip-rate section: the rates the run
// used, labelled given or estimated, beside the true ones when known.
func writeFlipRates(b *strings.Builder, run *Run, title string) {
	b.WriteString("## Label flip rates\n\n")
	b.WriteString("The observed label y is the true preference r flipped at two rates: rho01 = P(y = 0 given r = 1) and rho10 = P(y = 1 given r = 0).\n\n")
	if run.FlipRates == nil && run.TrueRates == nil {
		fmt.Fprintf(b, "Not used: %s does not model label noise.\n\n", title)
	} else {
		b.WriteString("| | rho01 | rho10 |\n|---|---|---|\n")
		var notes []string
		if iv := run.FlipInterval; run.FlipRates != nil && iv != nil && run.FlipRatesSource != RatesGiven {
			fmt.Fprintf(b, "| %s | %s (95%% interval %s–%s) | %s (95%% interval %s–%s) |\n", RatesEstimated,
				fmtNum(run.FlipRates.Rho01), fmtNum(iv.Lo.Rho01), fmtNum(iv.Hi.Rho01),
				fmtNum(run.FlipRates.Rho10), fmtNum(iv.Lo.Rho10), fmtNum(iv.Hi.Rho10))
			notes = append(notes, fmt.Sprintf(crossFitNoteCounts, fmtInt(iv.N10), fmtInt(iv.N01))+crossFitIntervalNote)
		} else if run.FlipRates != nil {
			fmt.Fprintf(b, "| %s | %s | %s |\n", ratesSourceLabel(run.FlipRatesSource), fmtNum(run.FlipRates.Rho01), fmtNum(run.FlipRates.Rho10))
			notes = append(notes, ratesSourceNote(run.FlipRatesSource))
		} else {
			fmt.Fprintf(b, "| used | not used by %s | not used by %s |\n", title, title)
			notes = append(notes, fmt.Sprintf("used: none, %s does not model label noise", title))
		}
		if run.TrueRates != nil {
			fmt.Fprintf(b, "| true | %s | %s |\n", fmtNum(run.TrueRates.Rho01), fmtNum(run.TrueRates.Rho10))
			notes = append(notes, trueRatesNote)
		}
		b.WriteString("\n")
		for _, n := range notes {
			fmt.Fprintf(b, "- %s.\n", n)
		}
		b.WriteString("\n")
	}
}

// writePropensity writes report.md's propensity section: the validation
// error and the calibration deciles with their predicted ranges.
func writePropensity(b *strings.Builder, run *Run, calib string) {
	b.WriteString("## Propensity model\n\n")
	if math.IsNaN(run.PropensityValMSE) {
		b.WriteString("Validation MSE: stage skipped (propensity given or not used).\n\n")
	} else {
		fmt.Fprintf(b, "Validation MSE (squared error of the predicted propensity against o, lower is better): %s\n\n", fmtNum(run.PropensityValMSE))
	}
	if len(run.PropensityCalib) > 0 {
		total := 0
		for _, c := range run.PropensityCalib {
			total += c.N
		}
		fmt.Fprintf(b, "Calibration on the %s validation rows, in deciles of the predicted propensity p_hat (equal row counts, rows ranked by p_hat). A calibrated model's observed rate of feedback matches its mean prediction in every decile.\n\n", fmtInt(total))
		b.WriteString("| decile | predicted range | mean predicted | observed rate | rows |\n|---|---|---|---|---|\n")
		for i, c := range run.PropensityCalib {
			fmt.Fprintf(b, "| %d | %s–%s | %s | %s | %s |\n", i+1, fmtNum(c.Lo), fmtNum(c.Hi), fmtNum(c.MeanPred), fmtNum(c.ObsRate), fmtInt(c.N))
		}
		b.WriteString("\n")
		if ties := tiedDeciles(run.PropensityCalib); len(ties) > 0 {
			fmt.Fprintf(b, "Tied predictions (%s, often the lower clip of p_hat, --propensity-clip): the tied rows are split between those deciles in row order.\n\n", strings.Join(ties, "; "))
		}
		if calib != "" {
			fmt.Fprintf(b, "![propensity calibration](%s)\n\n", calib)
		}
	}
}

// writeBaseline writes report.md's naive-baseline section: what the run is
// against naive, and the command that trains both when it is not naive.
func writeBaseline(b *strings.Builder, run *Run, title string) {
	b.WriteString("## Naive baseline\n\n")
	if run.Method == "naive" {
		b.WriteString("This run is the naive baseline: binary cross-entropy on the observed rows' labels as they are, with no correction for label noise or selection bias.\n\n")
	} else {
		cmd := run.BaselineCommand
		if cmd == "" {
			cmd = fmt.Sprintf("causalrm compare --data DATA --methods naive,%s --seeds 1 --seed %d", title, run.Seed)
		}
		fmt.Fprintf(b, "Skipped: `causalrm train` trains only the chosen method (%s). The naive baseline (binary cross-entropy on the observed labels as they are, no correction) shows what the correction gains. To train both on the same data, settings and seed and compare them (the %s row repeats this run's numbers):\n\n```\n%s\n```\n\n", title, title, cmd)
	}
}

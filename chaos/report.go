package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/causalrm/causalrm/internal/atomicfile"
)

// writeReport writes chaos.md and chaos.json into dir, and timeline.png
// (the first failed run's timeline, else the last run's).
func writeReport(dir string, sum *Summary) error {
	raw, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "chaos.json"), append(raw, '\n')); err != nil {
		return err
	}
	var b strings.Builder
	WriteTable(&b, sum)
	if err := writeFile(filepath.Join(dir, "chaos.md"), []byte(b.String())); err != nil {
		return err
	}
	var pick *RunResult
	for _, r := range sum.Runs {
		if !r.Pass && pick == nil {
			pick = r
		}
	}
	if pick == nil && len(sum.Runs) > 0 {
		pick = sum.Runs[len(sum.Runs)-1]
	}
	if pick != nil {
		if png, err := os.ReadFile(filepath.Join(pick.Dir, "timeline.png")); err == nil {
			return writeFile(filepath.Join(dir, "timeline.png"), png)
		}
	}
	return nil
}

// WriteTable writes chaos.md: the settings, one row per run, and each
// failed run's failures with the command that replays it.
func WriteTable(w io.Writer, sum *Summary) {
	fmt.Fprintf(w, "# causalrm chaos\n\n")
	fmt.Fprintf(w, "`%s` on %s, %s.\n\n", sum.Command, sum.Host, sum.Date)
	s := sum.Settings
	fmt.Fprintf(w, "%d coordinators, %d workers (at least %d to start), report every %d steps, checkpoint every %d, step delay %s, heartbeat timeout %gs, op timeout %s, stall after %gs; faults placed in the first %gs after the first committed step. Job: `%s`.\n\n",
		s.Coordinators, s.Workers, s.MinWorkers, s.ReportEvery, s.CheckpointEvery, s.StepDelay, s.HeartbeatS, s.OpTimeout, s.StallS, s.WindowS, strings.Join(s.Job, " "))
	if sum.Reference != nil {
		fmt.Fprintf(w, "Reference (one process): reward.safetensors sha256 `%s`, %d steps.\n\n", sum.Reference.SHA256, sum.Reference.Steps)
	}
	fmt.Fprintln(w, "Times are seconds after the run's first committed step; recovery is the time from the fault to the next committed step it could not have preceded; steps redone are committed steps undone by a restart from a checkpoint.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "The longest pause is the longest any worker stood still for one generation change (from the failure or the boundary's decision to its first call on the new ring, as the workers log it), for planned changes (joins and leaves) and for the others (crashes, relinks, restarts).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| run | seed | faults | recovery (s) | longest pause: planned / other (s) | steps redone | reconciled calls | replacements | training (s) | verdict |")
	fmt.Fprintln(w, "|---:|---:|---|---|---|---:|---:|---:|---:|---|")
	for _, r := range sum.Runs {
		var faults, recov []string
		for _, in := range r.Faults {
			faults = append(faults, in.String())
			switch {
			case in.Skipped != "":
				recov = append(recov, "-")
			case in.RecoveryS != nil:
				recov = append(recov, fmt.Sprintf("%.2f", *in.RecoveryS))
			default:
				recov = append(recov, "none")
			}
		}
		verdict := "pass"
		if !r.Pass {
			verdict = "**FAIL**"
		}
		training := "-" // the job did not finish
		if r.TrainingS > 0 {
			training = fmt.Sprintf("%.1f", r.TrainingS)
		}
		fmt.Fprintf(w, "| %d | %d | %s | %s | %s | %d | %d | %d | %s | %s |\n", r.Run, r.Seed, cell(strings.Join(faults, "; ")),
			strings.Join(recov, "; "), longestPauses(r.Pauses), r.StepsRedone, r.Reconciled, r.Replacements, training, verdict)
	}
	writeTotals(w, sum)
	failed := false
	for _, r := range sum.Runs {
		if r.Pass {
			continue
		}
		if !failed {
			fmt.Fprintf(w, "\n## Failed runs\n")
			failed = true
		}
		fmt.Fprintf(w, "\n### Run %d (seed %d)\n\n", r.Run, r.Seed)
		for _, f := range r.Failures {
			fmt.Fprintf(w, "- %s\n", cell(firstLine(f)))
		}
		fmt.Fprintf(w, "\nreplay: `%s`\n\nlogs: `%s/logs/`\n", r.Replay, r.Dir)
		if r.Stall != "" {
			fmt.Fprintf(w, "\n```\n%s```\n", r.Stall)
		}
	}
}

// longestPauses is a run's table cell: the longest planned and other
// pause, "-" where there was none.
func longestPauses(ps []Pause) string {
	var planned, other []float64
	for _, p := range ps {
		if p.Planned() {
			planned = append(planned, p.Seconds)
		} else {
			other = append(other, p.Seconds)
		}
	}
	return maxCell(planned) + " / " + maxCell(other)
}

func maxCell(v []float64) string {
	if _, _, m, ok := spread(v); ok {
		return fmt.Sprintf("%.2f", m)
	}
	return "-"
}

// writeTotals writes the whole invocation's counts: recovery per fault
// kind and the workers' pauses per kind of generation change, each as
// median, 90th percentile and maximum, over every run.
func writeTotals(w io.Writer, sum *Summary) {
	struck := map[Kind][]float64{}
	drawn, skipped := map[Kind]int{}, map[Kind]int{}
	pauses := map[string][]float64{}
	for _, r := range sum.Runs {
		for _, in := range r.Faults {
			drawn[in.Kind]++
			switch {
			case in.Skipped != "":
				skipped[in.Kind]++
			case in.RecoveryS != nil:
				struck[in.Kind] = append(struck[in.Kind], *in.RecoveryS)
			default:
				struck[in.Kind] = append(struck[in.Kind], math.NaN()) // struck, no recovery measured
			}
		}
		for _, p := range r.Pauses {
			pauses[p.Class()] = append(pauses[p.Class()], p.Seconds)
		}
	}
	passed := len(sum.Runs) - sum.Failed
	fmt.Fprintf(w, "\n## Totals\n\n%d runs, %d passed, %d failed.\n\n", len(sum.Runs), passed, sum.Failed)
	fmt.Fprintln(w, "| fault | drawn | skipped | struck | recovered | median (s) | p90 (s) | max (s) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, k := range AllKinds() {
		if drawn[k] == 0 {
			continue
		}
		var rec []float64
		for _, v := range struck[k] {
			if !math.IsNaN(v) {
				rec = append(rec, v)
			}
		}
		fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %s |\n", k, drawn[k], skipped[k], len(struck[k]), len(rec), spreadCells(rec))
	}
	fmt.Fprintln(w, "\nThe workers' pauses per kind of generation change (one row per worker and change):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| change | pauses | median (s) | p90 (s) | max (s) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	classes := make([]string, 0, len(pauses))
	for c := range pauses {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	for _, c := range classes {
		fmt.Fprintf(w, "| %s | %d | %s |\n", c, len(pauses[c]), spreadCells(pauses[c]))
	}
}

func spreadCells(v []float64) string {
	med, p90, m, ok := spread(v)
	if !ok {
		return "- | - | -"
	}
	return fmt.Sprintf("%.2f | %.2f | %.2f", med, p90, m)
}

// writeFile replaces path with b atomically.
func writeFile(path string, b []byte) error {
	return atomicfile.Write(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

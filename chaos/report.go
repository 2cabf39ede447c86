package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	fmt.Fprintln(w, "| run | seed | faults | recovery (s) | steps redone | reconciled calls | replacements | training (s) | verdict |")
	fmt.Fprintln(w, "|---:|---:|---|---|---:|---:|---:|---:|---|")
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
		fmt.Fprintf(w, "| %d | %d | %s | %s | %d | %d | %d | %s | %s |\n", r.Run, r.Seed, cell(strings.Join(faults, "; ")),
			strings.Join(recov, "; "), r.StepsRedone, r.Reconciled, r.Replacements, training, verdict)
	}
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

package chaos

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// stallReport writes what every process was doing when the run stalled
// (or timed out): each worker's generation and global step (scraped from
// its metrics endpoint; a stopped worker does not answer), its exit, and
// the last lines of every log. It goes to the progress output and the
// run's result.
func (r *runState) stallReport(res *RunResult, why string) {
	var b strings.Builder
	st, ok := r.mon.status()
	if ok {
		ckpt := "none"
		if st.LastCheckpoint != nil {
			ckpt = fmt.Sprintf("at global step %d", st.LastCheckpoint.GlobalStep)
		}
		fmt.Fprintf(&b, "%s: coordinators: leader %q, job %s, generation %d, committed global step %d, last checkpoint %s, %d rewinds\n",
			why, st.Leader, st.JobStatus.Phase, genNumber(st), st.Watermark.GlobalStep, ckpt, len(st.Rewinds))
		if st.Generation != nil {
			var ms []string
			for _, m := range st.Generation.Members {
				ms = append(ms, m.ID)
			}
			fmt.Fprintf(&b, "  generation %d (%s): %s\n", st.Generation.Number, st.Generation.Cause.String(), strings.Join(ms, ", "))
		}
		for _, w := range st.Members {
			fmt.Fprintf(&b, "  registered %s: %s (activated in generation %d)\n", w.ID, w.Status, w.Activated)
		}
	}
	for _, p := range r.cl.all() {
		state := p.exitText()
		if p.isStopped() {
			state = "stopped (SIGSTOP)"
		}
		fmt.Fprintf(&b, "%s (%s, %s)", p.name, p.role, state)
		if p.role == RoleWorker && !p.exited() && !p.isStopped() {
			gen, step, err := scrapeWorker(p.metricsAddr())
			if err != nil {
				fmt.Fprintf(&b, ": metrics: %v", err)
			} else {
				fmt.Fprintf(&b, ": generation %s, global step %s", gen, step)
			}
		}
		b.WriteString("\n")
		for _, l := range p.log.lastLines(6) {
			fmt.Fprintf(&b, "    | %s\n", l)
		}
	}
	res.Stall = b.String()
	fmt.Fprint(r.cfg.Log, res.Stall)
}

// scrapeWorker reads a worker's generation and global step from its
// Prometheus endpoint.
func scrapeWorker(addr string) (gen, step string, err error) {
	if addr == "" {
		return "", "", fmt.Errorf("no metrics address in its log yet")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return "", "", err
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	gen, step = "?", "?"
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		switch f[0] {
		case "causalrm_generation":
			gen = f[1]
		case "causalrm_worker_global_step":
			step = f[1]
		}
	}
	return gen, step, sc.Err()
}

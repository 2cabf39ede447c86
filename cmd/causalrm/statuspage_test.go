package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/coordinator/statuspage"
)

// updateScreenshotEnv, set to 1, makes TestStatusPageInBrowser write its
// screenshot to docs/img/status.png (the one docs/status-page.md shows).
const updateScreenshotEnv = "CAUSALRM_UPDATE_SCREENSHOT"

// statusJob trains long enough (with the step delay) for the page to be
// captured mid-run; the test stops it there.
var statusJob = []string{"--max-epochs", "6", "--patience", "100", "--hidden", "16,8", "--batch", "64", "--shards", "16",
	"--method", "causalrm-dr", "--quiet"}

// chromiumPath finds Debian's chromium; a machine without it fails the
// test (a skip would pass unseen).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("chromium is not installed, and this test needs a real browser: run scripts/setup.sh " +
		"(it installs Debian's chromium package), or apt-get install chromium")
	return ""
}

// chromium runs headless chromium on url with args (under timeout -k 5 60)
// and returns its standard output. The virtual time budget lets the page
// poll a few times before the DOM or the screenshot is taken.
func chromium(t *testing.T, bin, url string, args ...string) []byte {
	t.Helper()
	args = append([]string{"-k", "5", "60", bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--disable-extensions", "--hide-scrollbars", "--user-data-dir=" + t.TempDir(),
		"--virtual-time-budget=4000"}, args...)
	cmd := exec.Command("timeout", append(args, url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v after %v\n%s", strings.Join(args[4:], " "), err, time.Since(start).Round(time.Millisecond), tail(stderr.String(), 3000))
	}
	t.Logf("chromium %s: %v", args[len(args)-1], time.Since(start).Round(time.Millisecond))
	return stdout.Bytes()
}

var (
	tagRE  = regexp.MustCompile(`<(tr|body)\b[^>]*>`)
	attrRE = regexp.MustCompile(`([\w-]+)="([^"]*)"`)
	stepRE = regexp.MustCompile(`<span id="global-step">(\d+)</span>`)
	lossRE = regexp.MustCompile(`data-loss-epochs="(\d+)"`)
)

// domTags lists the attributes of every <tr> and <body> tag of a DOM dump.
func domTags(dom string) []map[string]string {
	var out []map[string]string
	for _, tag := range tagRE.FindAllString(dom, -1) {
		m := map[string]string{"tag": strings.Fields(strings.Trim(tag, "<>"))[0]}
		for _, a := range attrRE.FindAllStringSubmatch(tag, -1) {
			m[a[1]] = a[2]
		}
		out = append(out, m)
	}
	return out
}

// A real job (a coordinator with --metrics-addr and two workers, slowed
// down; a third worker joins and leaves) seen by a real browser: the page
// served beside /metrics lists both workers as active, the generations and
// a global step above 0, after polling more than once; then a screenshot.
func TestStatusPageInBrowser(t *testing.T) {
	bin := chromiumPath(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data.safetensors")
	if out, err := run(t, "simulate", "--rows", "2000", "--test-rows", "300", "--dim", "16", "--latent", "4", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	maddr := freeAddrs(t, 1)[0]
	c := &testCluster{t: t, dir: t.TempDir(), token: "s3cret-job-token", workers: map[string]*proc{},
		env: []string{stepDelayEnv + "=100ms"},
		// chromium loads the machine: a worker it starves for a second
		// must not be taken for dead (the harness's 1s).
		coordArgs: []string{"--metrics-addr", maddr, "--heartbeat-timeout", "15s"}}
	c.startGroup(1, false)
	args := append([]string{"submit", "--coordinators", strings.Join(c.adv, ","), "--token", c.token, "--data", data,
		"--out", filepath.Join(dir, "out"), "--job-id", "status-demo", "--min-workers", "2", "--report-every", "5",
		"--checkpoint-every", "20"}, statusJob...)
	if o, err := run(t, args...); err != nil {
		t.Fatalf("submit: %v\n%s", err, o)
	}
	c.startWorker("w1")
	c.startWorker("w2")
	c.waitStatus("training past step 10", time.Minute, atLeast(10))
	// A third worker joins and leaves (SIGTERM), so that the page has a
	// history of generations and a gone member.
	// It leaves once it trains in the ring (a leave before its switch
	// can break the ring of the others).
	w3 := c.startWorker("w3")
	st := c.waitStatus("w3 training in a ring of 3", time.Minute, func(st coordinator.Status) bool {
		if !members(3)(st) {
			return false
		}
		for _, m := range st.Members {
			if m.ID == "w3" && m.Activated == st.Generation.Number {
				return true
			}
		}
		return false
	})
	c.waitStatus("progress with 3", time.Minute, atLeast(st.Watermark.GlobalStep+5))
	_ = w3.cmd.Process.Signal(syscall.SIGTERM)
	c.waitStatus("2 members and a checkpoint", time.Minute, func(st coordinator.Status) bool {
		return members(2)(st) && st.LastCheckpoint != nil
	})
	<-w3.done
	// A stage's first epochs complete (about 22 steps each here), so that
	// the page has losses to draw.
	c.waitStatus("global step 60", time.Minute, atLeast(60))

	url := "http://" + maddr + statuspage.PathPage
	dom := string(chromium(t, bin, url, "--dump-dom"))
	status := map[string]string{}
	var gens, checkpoints int
	var polls int
	phase := ""
	for _, m := range domTags(dom) {
		switch {
		case m["tag"] == "body":
			polls, _ = strconv.Atoi(m["data-polls"])
			phase = m["data-phase"]
		case m["data-worker"] != "":
			status[m["data-worker"]] = m["data-status"]
		case m["data-generation"] != "":
			gens++
		case m["data-checkpoint"] != "":
			checkpoints++
		}
	}
	step := 0
	if sm := stepRE.FindStringSubmatch(dom); sm != nil {
		step, _ = strconv.Atoi(sm[1])
	}
	t.Logf("the page after %d polls: job %s, workers %v, %d generation rows, %d checkpoint rows, global step %d", polls, phase, status, gens,
		checkpoints, step)
	switch {
	case polls < 2:
		t.Fatalf("the page polled %d times (want at least 2: it updates live)\n%s", polls, tail(dom, 4000))
	case status["w1"] != "active" || status["w2"] != "active":
		t.Fatalf("workers on the page: %v (want w1 and w2 active)\n%s", status, tail(dom, 4000))
	case status["w3"] != "gone":
		t.Fatalf("w3 left but the page shows %q", status["w3"])
	case gens < 3: // start, join:w3, leave:w3
		t.Fatalf("%d generation rows (want at least 3)\n%s", gens, tail(dom, 4000))
	case step <= 0:
		t.Fatalf("global step %d on the page\n%s", step, tail(dom, 4000))
	case phase != string(state.JobRunning):
		t.Fatalf("the page shows the job %q (want running: it was captured mid-run)", phase)
	case checkpoints < 1:
		t.Fatalf("no checkpoint row")
	}
	for _, id := range []string{"stages", "chart-step", "chart-generations"} {
		if !strings.Contains(dom, `id="`+id+`"`) {
			t.Fatalf("no %s on the page", id)
		}
	}
	if n := strings.Count(dom, "<svg"); n < 4 {
		t.Fatalf("%d SVG charts on the page (want at least 4)", n)
	}
	// The loss curves: the stage that ran first has completed epochs with
	// the losses the workers reported, two lines each.
	lossEpochs := 0
	for _, m := range lossRE.FindAllStringSubmatch(dom, -1) {
		n, _ := strconv.Atoi(m[1])
		lossEpochs = max(lossEpochs, n)
	}
	if lossEpochs < 2 || !strings.Contains(dom, `class="loss-train"`) || !strings.Contains(dom, `class="loss-val"`) {
		t.Fatalf("loss curves on the page: at most %d epochs with losses in a stage (want at least 2, with train and val lines)\n%s",
			lossEpochs, tail(dom, 4000))
	}

	update := os.Getenv(updateScreenshotEnv) == "1"
	if update {
		// The docs' picture: a few stages into the job.
		c.waitStatus("global step 300", 2*time.Minute, atLeast(300))
	}
	shot := filepath.Join(dir, "status.png")
	chromium(t, bin, url, "--screenshot="+shot, "--window-size=1280,900")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 900 {
		t.Fatalf("screenshot %v, want 1280x900", b)
	}
	if st := c.waitStatus("a status", 10*time.Second, func(coordinator.Status) bool { return true }); st.JobStatus.Phase != state.JobRunning {
		t.Fatalf("the job is %s after the screenshot (want running)", st.JobStatus.Phase)
	}
	if update {
		b, _ := os.ReadFile(shot)
		dst := filepath.Join("..", "..", "docs", "img", "status.png")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", dst)
	}
}

// train --workers N --status-addr serves the page of its embedded
// coordinator while the job runs, and stops with it; --status-addr where
// there is no coordinator is refused.
func TestTrainStatusAddr(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data.safetensors")
	if out, err := run(t, "simulate", "--rows", "600", "--test-rows", "100", "--dim", "8", "--latent", "4", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	for _, c := range []struct{ args, want string }{
		{"", "needs --workers"},
		{"--workers 2 --reduce fast --codec int8", "needs --reduce exact"},
	} {
		args := append([]string{"train", "--data", data, "--out", filepath.Join(dir, "bad"), "--status-addr", "127.0.0.1:0", "--quiet"},
			strings.Fields(c.args)...)
		if out, err := run(t, args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("train %s --status-addr: %v (want %q)\n%s", c.args, err, c.want, out)
		}
	}

	t.Setenv(stepDelayEnv, "20ms") // inherited by the workers
	addr := freeAddrs(t, 1)[0]
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := run(t, "train", "--data", data, "--out", filepath.Join(dir, "out"), "--workers", "2", "--status-addr", addr,
			"--max-epochs", "2", "--hidden", "8", "--batch", "64", "--shards", "8", "--quiet")
		done <- result{out, err}
	}()
	var seen statuspage.View
	deadline := time.Now().Add(90 * time.Second)
	for {
		if code, body, err := httpGet(addr, statuspage.PathJSON); err == nil && code == 200 {
			var v statuspage.View
			if err := json.Unmarshal([]byte(body), &v); err != nil {
				t.Fatalf("status.json: %v\n%s", err, body)
			}
			if v.Counts[state.WorkerActive] == 2 && v.Progress.GlobalStep > 0 && len(v.Generations) > 0 {
				seen = v
				break
			}
		}
		select {
		case r := <-done:
			t.Fatalf("the job ended (%v) before the page showed 2 active workers and a step\n%s", r.err, r.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the page never showed 2 active workers and a step")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body, err := httpGet(addr, statuspage.PathPage); err != nil || code != 200 || !strings.Contains(body, "status.js") {
		t.Fatalf("GET /status: %d %v", code, err)
	}
	if code, _, err := httpGet(addr, "/metrics"); err != nil || code != 200 {
		t.Fatalf("GET /metrics beside the page: %d %v", code, err)
	}
	t.Logf("train --status-addr: job %s at global step %d, generation %d", seen.Job.ID, seen.Progress.GlobalStep, len(seen.Generations))
	r := <-done
	if r.err != nil {
		t.Fatalf("train: %v\n%s", r.err, r.out)
	}
	if !strings.Contains(r.out, "status page: http://"+addr+"/status") {
		t.Fatalf("train did not say where the page is:\n%s", r.out)
	}
	if _, _, err := httpGet(addr, statuspage.PathJSON); err == nil {
		t.Fatal("the status page still answers after train returned")
	}
}

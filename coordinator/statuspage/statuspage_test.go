package statuspage

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/causalrm/causalrm/coordinator/state"
)

// fakeNode is a Source over a state the test changes.
type fakeNode struct {
	mu sync.Mutex
	st state.State
}

func (f *fakeNode) State() state.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st.Clone()
}

func (f *fakeNode) Leader() (string, string) { return "c0", "127.0.0.1:7100" }
func (f *fakeNode) ID() string               { return "c0" }

func (f *fakeNode) report(step uint64, worker string, rps float64, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.Watermark = state.Watermark{GlobalStep: step, Stage: "reward", Epoch: 1, Step: int(step) - 60, WorkerID: worker,
		RowsPerSec: rps, ParamHash: "abc", Time: at.UnixNano()}
	for i := range f.st.LastReports {
		if f.st.LastReports[i].WorkerID == worker {
			f.st.LastReports[i].GlobalStep = step
		}
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func ns(d time.Duration) int64 { return t0.Add(d).UnixNano() }

// jobState is a running job: w1, w2 active in generation 2 (w2 joined),
// w3 pending, w0 gone; two stages in the log; one checkpoint.
func jobState() state.State {
	cause := func(s string) state.Cause {
		c, err := state.ParseCause(s)
		if err != nil {
			panic(err)
		}
		return c
	}
	return state.State{
		Job:    &state.JobSpec{ID: "job-7", Shards: 4, MinWorkers: 1, ProgressEvery: 5, CheckpointEverySteps: 10},
		Status: state.JobStatus{Phase: state.JobRunning, Time: ns(0)},
		Workers: []state.Worker{
			{ID: "w0", Addr: "127.0.0.1:9000", Status: state.WorkerGone, Registered: ns(0), Updated: ns(time.Second)},
			{ID: "w1", Addr: "127.0.0.1:9001", Status: state.WorkerActive, Registered: ns(0), Updated: ns(2 * time.Second), Activated: 2},
			{ID: "w2", Addr: "127.0.0.1:9002", Status: state.WorkerActive, Registered: ns(0), Updated: ns(2 * time.Second), Activated: 2},
			{ID: "w3", Addr: "127.0.0.1:9003", Status: state.WorkerPending, Registered: ns(3 * time.Second), Updated: ns(3 * time.Second)},
		},
		Generations: []state.Generation{
			{Number: 1, Members: []state.Member{{ID: "w0"}, {ID: "w1"}}, Owner: []int{0, 0, 1, 1}, Cause: cause("start"), Time: ns(0)},
			{Number: 2, Members: []state.Member{{ID: "w2", Addr: "127.0.0.1:9002"}, {ID: "w1", Addr: "127.0.0.1:9001"}},
				Owner: []int{0, 0, 0, 1}, Cause: cause("join:w2,crash:w0"), Time: ns(time.Second)},
		},
		Log: []state.LogEntry{
			{StepRange: state.StepRange{Stage: "propensity", Epoch: 0, From: 0, To: 20}, GlobalEnd: 20},
			{StepRange: state.StepRange{Stage: "propensity", Epoch: 1, From: 0, To: 20}, GlobalEnd: 40},
			{StepRange: state.StepRange{Stage: "reward", Epoch: 0, From: 0, To: 20}, GlobalEnd: 60},
			{StepRange: state.StepRange{Stage: "reward", Epoch: 1, From: 0, To: 5}, GlobalEnd: 65},
			{StepRange: state.StepRange{Stage: "reward", Epoch: 1, From: 5, To: 10}, GlobalEnd: 70},
		},
		LastReports: []state.WorkerStep{{WorkerID: "w0", GlobalStep: 10}, {WorkerID: "w1", GlobalStep: 70}, {WorkerID: "w2", GlobalStep: 65}},
		Checkpoints: []state.CheckpointRecord{{ID: 1, GlobalStep: 60, Stage: "reward", Epoch: 1, Step: 0, Size: 123456,
			Location: state.LocationRaft, Time: ns(4 * time.Second)}},
		Rewinds: []state.Rewind{{From: 12, To: 0, CheckpointID: 0, Time: ns(time.Second)}},
		// A stage with no committed step ("noise") is not on the page.
		Losses: []state.EpochLoss{{Stage: "propensity", Epoch: 1, Train: 0.5, Val: 0.4}, {Stage: "noise", Epoch: 1, Train: 9, Val: 9},
			{Stage: "reward", Epoch: 1, Train: 0.3, Val: -0.2}},
	}
}

func getJSON(t *testing.T, srv *httptest.Server) View {
	t.Helper()
	resp, err := http.Get(srv.URL + PathJSON)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", PathJSON, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: Content-Type %q", PathJSON, ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("GET %s: Cache-Control %q", PathJSON, cc)
	}
	var v View
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", PathJSON, err)
	}
	return v
}

func TestStatusJSON(t *testing.T) {
	node := &fakeNode{st: jobState()}
	now := t0.Add(10 * time.Second)
	page := newPage(node, func() time.Time { return now })
	srv := httptest.NewServer(page.Handler())
	defer srv.Close()

	node.report(70, "w1", 5000, t0.Add(5*time.Second))
	v := getJSON(t, srv)
	if v.Node != "c0" || v.Leader != "c0" || !v.IsLeader || v.LeaderAddr != "127.0.0.1:7100" || v.Time != now.UnixMilli() {
		t.Fatalf("node %q leader %q %q is_leader %v time %d", v.Node, v.Leader, v.LeaderAddr, v.IsLeader, v.Time)
	}
	if v.Job == nil || v.Job.ID != "job-7" || v.Job.Shards != 4 || v.Job.CheckpointEverySteps != 10 || v.Status.Phase != "running" {
		t.Fatalf("job %+v status %+v", v.Job, v.Status)
	}
	if p := v.Progress; p.GlobalStep != 70 || p.Stage != "reward" || p.Epoch != 1 || p.WorkerID != "w1" || p.RowsPerSec != 5000 ||
		p.Time != t0.Add(5*time.Second).UnixMilli() {
		t.Fatalf("progress %+v", p)
	}
	// Members: the current generation in ring order, then the rest by id.
	type row struct {
		id, status     string
		rank, shards   int
		last           uint64
		rowsPerSecSeen bool
	}
	want := []row{{"w2", "active", 0, 3, 65, false}, {"w1", "active", 1, 1, 70, true}, {"w0", "gone", -1, 0, 10, false},
		{"w3", "pending", -1, 0, 0, false}}
	if len(v.Members) != len(want) {
		t.Fatalf("members %+v", v.Members)
	}
	for i, w := range want {
		m := v.Members[i]
		got := row{m.ID, m.Status, m.Rank, m.Shards, m.LastGlobalStep, m.RowsPerSecTime != 0}
		if got != w {
			t.Fatalf("member %d: %+v, want %+v", i, got, w)
		}
	}
	if v.Members[1].RowsPerSec != 5000 || v.Members[2].Addr != "127.0.0.1:9000" || v.Members[0].Updated != t0.Add(2*time.Second).UnixMilli() {
		t.Fatalf("members %+v", v.Members)
	}
	if c := v.Counts; c["active"] != 2 || c["pending"] != 1 || c["gone"] != 1 || c["leaving"] != 0 {
		t.Fatalf("counts %v", c)
	}
	if v.GenerationsTotal != 2 || len(v.Generations) != 2 {
		t.Fatalf("generations %+v (total %d)", v.Generations, v.GenerationsTotal)
	}
	if g := v.Generations[1]; g.Number != 2 || g.Cause != "join:w2,crash:w0" || strings.Join(g.Members, ",") != "w2,w1" ||
		g.Time != t0.Add(time.Second).UnixMilli() || g.Label == "" {
		t.Fatalf("generation 2: %+v", g)
	}
	if g := v.Generations[0]; g.Cause != "start" || g.Label != "start" {
		t.Fatalf("generation 1: %+v", g)
	}
	// Stages in the order they ran, epochs summed over the log's ranges.
	if len(v.Stages) != 2 || v.Stages[0].Name != "propensity" || v.Stages[0].Steps != 40 || v.Stages[1].Name != "reward" ||
		v.Stages[1].Steps != 30 || len(v.Stages[1].Epochs) != 2 || v.Stages[1].Epochs[1].Epoch != 1 || v.Stages[1].Epochs[1].Steps != 10 {
		t.Fatalf("stages %+v", v.Stages)
	}
	// Each reported epoch's losses on its epoch; the others null.
	loss := func(p *float64) string {
		if p == nil {
			return "null"
		}
		return strconv.FormatFloat(*p, 'g', -1, 64)
	}
	var got []string
	for _, st := range v.Stages {
		for _, e := range st.Epochs {
			got = append(got, fmt.Sprintf("%s/%d:%s,%s", st.Name, e.Epoch, loss(e.Train), loss(e.Val)))
		}
	}
	if want := "propensity/0:null,null propensity/1:0.5,0.4 reward/0:null,null reward/1:0.3,-0.2"; strings.Join(got, " ") != want {
		t.Fatalf("epoch losses %q, want %q", strings.Join(got, " "), want)
	}
	if len(v.Checkpoints) != 1 || v.Checkpoints[0] != (Checkpoint{ID: 1, GlobalStep: 60, Stage: "reward", Epoch: 1, Size: 123456,
		Location: "raft", Time: t0.Add(4 * time.Second).UnixMilli()}) {
		t.Fatalf("checkpoints %+v", v.Checkpoints)
	}
	if len(v.Rewinds) != 1 || v.Rewinds[0].From != 12 {
		t.Fatalf("rewinds %+v", v.Rewinds)
	}
	// One sample: no rate yet.
	if len(v.Samples) != 1 || v.StepRate != 0 {
		t.Fatalf("samples %+v, rate %v", v.Samples, v.StepRate)
	}

	// Two more reports, 2 s apart, 10 steps each: 5 steps/s; the same
	// watermark twice is one sample.
	node.report(80, "w2", 4000, t0.Add(7*time.Second))
	getJSON(t, srv)
	getJSON(t, srv)
	node.report(90, "w1", 6000, t0.Add(9*time.Second))
	v = getJSON(t, srv)
	if len(v.Samples) != 3 || v.StepRate != 5 {
		t.Fatalf("samples %+v, rate %v (want 3 samples, 5 steps/s)", v.Samples, v.StepRate)
	}
	if v.Members[0].ID != "w2" || v.Members[0].RowsPerSec != 4000 || v.Members[1].RowsPerSec != 6000 {
		t.Fatalf("members' rows/s: %+v", v.Members)
	}
	// The newest report older than the window: no rate.
	now = t0.Add(9*time.Second + RateWindow + time.Second)
	if v = getJSON(t, srv); v.StepRate != 0 {
		t.Fatalf("rate %v with the newest report %v old", v.StepRate, RateWindow+time.Second)
	}
}

func TestStatusJSONNoJob(t *testing.T) {
	page := newPage(&fakeNode{}, time.Now)
	srv := httptest.NewServer(page.Handler())
	defer srv.Close()
	v := getJSON(t, srv)
	if v.Job != nil || v.Status.Phase != "" || v.Members == nil || v.Generations == nil || v.Stages == nil ||
		v.Checkpoints == nil || v.Samples == nil || v.StepRate != 0 {
		t.Fatalf("no job: %+v", v)
	}
}

// stepRate uses the samples of the window since the last rewind.
func TestStepRate(t *testing.T) {
	s := func(sec float64, step uint64) Sample { return Sample{Time: int64(sec * 1000), GlobalStep: step} }
	for _, c := range []struct {
		name    string
		samples []Sample
		now     float64
		want    float64
	}{
		{"none", nil, 1, 0},
		{"one", []Sample{s(1, 10)}, 1, 0},
		{"steady", []Sample{s(1, 10), s(2, 20), s(3, 30)}, 3, 10},
		{"window", []Sample{s(0, 0), s(40, 400), s(50, 420), s(60, 440)}, 60, 2},
		{"after a rewind", []Sample{s(1, 100), s(2, 10), s(4, 30)}, 4, 10},
		{"stale", []Sample{s(1, 10), s(2, 20)}, 40, 0},
	} {
		if got := stepRate(c.samples, int64(c.now*1000)); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestSamplesAreBounded(t *testing.T) {
	node := &fakeNode{st: jobState()}
	page := newPage(node, time.Now)
	for i := range MaxSamples + 10 {
		node.report(uint64(100+i), "w1", 1, t0.Add(time.Duration(i)*time.Second))
		page.Snapshot()
	}
	v := page.Snapshot()
	if len(v.Samples) != MaxSamples || v.Samples[len(v.Samples)-1].GlobalStep != uint64(100+MaxSamples+9) {
		t.Fatalf("%d samples, newest %+v", len(v.Samples), v.Samples[len(v.Samples)-1])
	}
}

// The page, its script and its style load from the server alone (no CDN),
// under a policy that allows nothing else; other methods are refused.
func TestPageAssets(t *testing.T) {
	page := newPage(&fakeNode{st: jobState()}, time.Now)
	srv := httptest.NewServer(page.Handler())
	defer srv.Close()
	for path, ct := range map[string]string{PathPage: "text/html", PathJS: "text/javascript", PathCSS: "text/css"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ct) {
			t.Fatalf("GET %s: %s %q", path, resp.Status, resp.Header.Get("Content-Type"))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
			t.Fatalf("GET %s: Content-Security-Policy %q", path, csp)
		}
		// The only URL is the SVG namespace.
		if n := strings.Count(string(body), "://") - strings.Count(string(body), "http://www.w3.org/2000/svg"); n != 0 {
			t.Fatalf("GET %s: %d external URLs", path, n)
		}
	}
	resp, err := http.Get(srv.URL + PathPage)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`src="status.js"`, `href="status.css"`, `id="global-step"`, `id="members"`, `id="generations"`, `id="checkpoints"`} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("the page lacks %s", want)
		}
	}
	resp, err = http.Post(srv.URL+PathJSON, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST %s: %s", PathJSON, resp.Status)
	}
}

// New samples in the background until Close, which leaves no goroutine.
func TestSamplerStops(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	node := &fakeNode{st: jobState()}
	node.report(70, "w1", 1, t0)
	page := New(node)
	deadline := time.Now().Add(5 * time.Second)
	for {
		page.mu.Lock()
		n := len(page.samples)
		page.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sampler took no sample in 5 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	page.Close()
	page.Close()
}

package chaos

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/tcpproxy"
)

// cluster is one run's processes on 127.0.0.1: the coordinator group,
// each behind a TCP proxy the workers dial, and the workers, kept at
// strength by a controller that replaces a worker that dies (as a
// cluster's controller would: a new process, a new id).
type cluster struct {
	cfg   *Config
	dir   string
	token string
	t0    time.Time // the cluster's start
	ev    *events

	raft, grpc, adv []string
	proxies         []*tcpproxy.Proxy
	client          *coordinator.Client // direct to the coordinators (never proxied)

	mu          sync.Mutex
	coords      []*proc // the current process of each coordinator
	procs       []*proc // every process started, in order
	nextWorker  int
	replacing   bool         // the controller replaces dead workers and restarts crashed coordinators
	diskFull    map[int]bool // coordinators under a disk-full fault: a restart gets the limit too
	replaced    int
	maxReplaced int
	wg          sync.WaitGroup // the controller's goroutines
}

// events is a run's log of what happened to which process, for the
// timeline and the report.
type events struct {
	mu   sync.Mutex
	list []event
}

type event struct {
	T    time.Time
	Proc string
	What string // start, exit, kill, stop, cont, term, cut, heal, fault
	Note string
}

func (e *events) add(proc, what, note string) {
	e.mu.Lock()
	e.list = append(e.list, event{T: time.Now(), Proc: proc, What: what, Note: note})
	e.mu.Unlock()
}

func (e *events) all() []event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]event(nil), e.list...)
}

func freeAddrs(n int) ([]string, error) {
	var ls []net.Listener
	var out []string
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

func newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// startCluster starts the coordinators behind their proxies and waits for
// a raft leader.
func startCluster(ctx context.Context, cfg *Config, dir string) (*cluster, error) {
	c := &cluster{cfg: cfg, dir: dir, token: newToken(), t0: time.Now(), ev: &events{}, replacing: true,
		maxReplaced: 6*cfg.Workers + 10}
	for _, d := range []string{"logs", "coordinators"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	n := cfg.Coordinators
	addrs, err := freeAddrs(2 * n)
	if err != nil {
		return nil, err
	}
	c.raft, c.grpc = addrs[:n], addrs[n:]
	for _, a := range c.grpc {
		p, err := tcpproxy.New(a)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.proxies = append(c.proxies, p)
		c.adv = append(c.adv, p.Addr())
	}
	c.coords = make([]*proc, n)
	for i := range c.coords {
		if err := c.startCoordinator(i); err != nil {
			c.stop()
			return nil, err
		}
	}
	client, err := coordinator.Dial(ctx, coordinator.ClientConfig{Addrs: c.grpc, Token: c.token, Timeout: 5 * time.Second})
	if err != nil {
		c.stop()
		return nil, err
	}
	c.client = client
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := client.Status(cctx)
		cancel()
		for _, p := range c.all() {
			if p.exited() {
				c.stop()
				return nil, fmt.Errorf("%s exited at start (%s): %s", p.name, p.exitText(), strings.Join(p.log.lastLines(2), " | "))
			}
		}
		if err == nil && st.Leader != "" {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.stop()
			return nil, fmt.Errorf("no raft leader after 30s (last error %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *cluster) env() []string {
	return []string{"CAUSALRM_TOKEN=" + c.token, fmt.Sprintf("CAUSALRM_STEP_DELAY=%s", c.cfg.StepDelay)}
}

// startCoordinator (re)starts coordinator i with its data directory.
func (c *cluster) startCoordinator(i int) error {
	var servers []string
	for j := range c.raft {
		servers = append(servers, fmt.Sprintf("c%d=%s/%s", j, c.raft[j], c.adv[j]))
	}
	name := fmt.Sprintf("c%d", i)
	args := []string{"coordinator", "--id", name, "--raft-addr", c.raft[i], "--grpc-addr", c.grpc[i],
		"--data-dir", filepath.Join(c.dir, "coordinators", name), "--servers", strings.Join(servers, ","),
		"--heartbeat-timeout", c.cfg.HeartbeatTimeout.String(), "--bootstrap-id", "c0"}
	c.mu.Lock()
	restarts := 0
	for _, p := range c.procs {
		if p.name == name {
			restarts++
		}
	}
	c.mu.Unlock()
	logName := name
	if restarts > 0 {
		logName = fmt.Sprintf("%s.%d", name, restarts)
	}
	p, err := startProc(c.cfg.Binary, name, RoleCoordinator, args, c.env(), filepath.Join(c.dir, "logs", logName+".log"))
	if err != nil {
		return err
	}
	p.index = i
	c.mu.Lock()
	c.coords[i] = p
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	c.ev.add(name, "start", "")
	c.mu.Lock()
	full := c.diskFull[i]
	c.mu.Unlock()
	if full {
		_, _ = p.limitFileSize(1)
	}
	c.wg.Add(1)
	go c.superviseCoordinator(p)
	return nil
}

// superviseCoordinator restarts coordinator p, 1 s after it crashed by
// itself (a coordinator chaos killed is restarted by its fault), as a
// StatefulSet or systemd would: a coordinator that cannot write its raft
// store (disk-full) exits, hashicorp/raft's way, and comes back.
func (c *cluster) superviseCoordinator(p *proc) {
	defer c.wg.Done()
	<-p.done
	c.ev.add(p.name, "exit", p.exitText())
	if p.cleanExit() || p.endedBy() != "" {
		return
	}
	time.Sleep(time.Second)
	c.mu.Lock()
	ok := c.replacing
	c.mu.Unlock()
	if !ok {
		return
	}
	if err := c.startCoordinator(p.index); err != nil {
		c.logf("restarting %s after its crash: %v", p.name, err)
		return
	}
	c.logf("%s crashed (%s); restarted with its data directory", p.name, p.exitText())
}

// setDiskFull marks coordinator i as under a disk-full fault (restarts
// inherit the limit) or not.
func (c *cluster) setDiskFull(i int, full bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.diskFull == nil {
		c.diskFull = map[int]bool{}
	}
	c.diskFull[i] = full
}

// startWorker starts a new worker with the next id (w1, w2, ...).
func (c *cluster) startWorker() (*proc, error) {
	c.mu.Lock()
	c.nextWorker++
	name := fmt.Sprintf("w%d", c.nextWorker)
	c.mu.Unlock()
	listen, link, err := linkProxy()
	if err != nil {
		return nil, err
	}
	args := []string{"worker", "--coordinators", strings.Join(c.adv, ","), "--id", name, "--quiet", "--metrics-addr", "127.0.0.1:0",
		"--listen", listen, "--advertise", link.Addr()}
	if c.cfg.OpTimeout > 0 {
		args = append(args, "--op-timeout", c.cfg.OpTimeout.String())
	}
	p, err := startProc(c.cfg.Binary, name, RoleWorker, args, c.env(), filepath.Join(c.dir, "logs", name+".log"))
	if err != nil {
		link.Close()
		return nil, err
	}
	p.link = link
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	c.ev.add(name, "start", "")
	c.wg.Add(1)
	go c.watchWorker(p)
	return p, nil
}

// linkProxy reserves a port on 127.0.0.1 for a worker's collective
// listener and starts the proxy its peers dial instead (the port is free
// again when the worker binds it; nothing else on this host races for it
// in practice).
func linkProxy() (listen string, _ *tcpproxy.Proxy, _ error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	listen = l.Addr().String()
	l.Close()
	p, err := tcpproxy.New(listen)
	return listen, p, err
}

// watchWorker is the controller for one worker: when it dies (any exit
// but a clean one: a kill, a crash, a removal after a pause) while the job
// runs, a new worker replaces it after a short delay. A clean exit is the
// job's end or a graceful leave, which nobody replaces.
func (c *cluster) watchWorker(p *proc) {
	defer c.wg.Done()
	<-p.done
	p.link.Close()
	c.ev.add(p.name, "exit", p.exitText())
	if p.cleanExit() {
		return
	}
	time.Sleep(300 * time.Millisecond)
	if c.jobOver() {
		return
	}
	c.mu.Lock()
	ok := c.replacing && c.replaced < c.maxReplaced
	if ok {
		c.replaced++
	}
	c.mu.Unlock()
	if !ok {
		return
	}
	if q, err := c.startWorker(); err == nil {
		c.ev.add(q.name, "replaces", p.name)
		c.logf("controller: %s replaces %s (%s)", q.name, p.name, p.exitText())
	}
}

// jobOver asks the coordinators whether the job is done or failed (a
// worker started then would wait for a generation that never comes).
func (c *cluster) jobOver() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.client.Status(ctx)
	return err == nil && (st.JobStatus.Phase == state.JobDone || st.JobStatus.Phase == state.JobFailed)
}

func (c *cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.cfg.Log, "  %6.1fs  "+format+"\n", append([]any{time.Since(c.t0).Seconds()}, args...)...)
}

// stopReplacing ends the controller's replacements (the job is over).
func (c *cluster) stopReplacing() {
	c.mu.Lock()
	c.replacing = false
	c.mu.Unlock()
}

// workers are the live workers (not reaped), sorted by id number.
func (c *cluster) workers() []*proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*proc
	for _, p := range c.procs {
		if p.role == RoleWorker && !p.exited() {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return procNum(out[i].name) < procNum(out[j].name) })
	return out
}

func procNum(name string) int {
	n := 0
	fmt.Sscanf(name[1:], "%d", &n)
	return n
}

// byName is the latest process of that name (nil if none).
func (c *cluster) byName(name string) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.procs) - 1; i >= 0; i-- {
		if c.procs[i].name == name {
			return c.procs[i]
		}
	}
	return nil
}

func (c *cluster) coordinator(i int) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.coords[i]
}

func (c *cluster) all() []*proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*proc(nil), c.procs...)
}

// submit submits the run's job with `causalrm submit`.
func (c *cluster) submit(ctx context.Context, data, out string) error {
	args := append([]string{"submit", "--coordinators", strings.Join(c.adv, ","), "--data", data, "--out", out,
		"--min-workers", fmt.Sprint(c.cfg.MinWorkers), "--report-every", fmt.Sprint(c.cfg.ReportEvery),
		"--checkpoint-every", fmt.Sprint(c.cfg.CheckpointEvery)}, c.cfg.Job.args()...)
	var lastErr error
	for try := 0; try < 5; try++ {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		cmd := exec.CommandContext(cctx, c.cfg.Binary, args...)
		cmd.Env = append(os.Environ(), c.env()...)
		b, err := cmd.CombinedOutput()
		cancel()
		if err == nil {
			return nil
		}
		lastErr = fmt.Errorf("causalrm submit: %v: %s", err, strings.TrimSpace(string(b)))
		time.Sleep(time.Second)
	}
	return lastErr
}

var metricsAddrRE = regexp.MustCompile(`msg="serving metrics" addr=(\S+)`)

// metricsAddr is the worker's metrics address, read from its log.
func (p *proc) metricsAddr() string {
	if m := metricsAddrRE.FindStringSubmatch(p.log.String()); m != nil {
		return m[1]
	}
	return ""
}

// resume continues every stopped process (before the end of a run).
func (c *cluster) resume() {
	for _, p := range c.all() {
		if p.isStopped() {
			_ = p.signal(syscall.SIGCONT, "")
		}
	}
}

// stop ends every process still running (workers by SIGKILL,
// coordinators by SIGTERM) and names the coordinators that did not stop
// on SIGTERM and the processes that could not be reaped.
func (c *cluster) stop() (leftBehind []string) {
	c.stopReplacing()
	c.resume()
	for _, p := range c.all() {
		if p.role == RoleWorker && !p.exited() {
			_ = p.signal(syscall.SIGKILL, "stopped at the end")
		}
	}
	var coords []*proc
	for _, p := range c.all() {
		if p.role == RoleCoordinator && !p.exited() {
			_ = p.signal(syscall.SIGTERM, "stopped at the end")
			coords = append(coords, p)
		}
	}
	for _, p := range coords {
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			leftBehind = append(leftBehind, p.name+" (ignored SIGTERM for 15s)")
			_ = p.signal(syscall.SIGKILL, "ignored SIGTERM")
		}
	}
	for _, p := range c.all() {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			leftBehind = append(leftBehind, p.name+" (not reaped 10s after SIGKILL)")
		}
	}
	c.wg.Wait()
	if c.client != nil {
		c.client.Close()
	}
	for _, p := range c.proxies {
		p.Close()
	}
	return leftBehind
}

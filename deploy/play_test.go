package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/syncio"
)

// The rendered base manifests, run as Kubernetes would run them but as local
// processes on 127.0.0.1: every container's command, args and environment as
// rendered (pod names and ordinals set as a StatefulSet and a Deployment set
// them, POD_IP 127.0.0.1), each pod's container ports and the headless
// service's pod names mapped to loopback ports, volumes mapped to
// directories (a PVC per StatefulSet pod that survives the pod). The test
// then plays Kubernetes: scale the workers 2 -> 5 -> 1 with SIGTERM and the
// grace period, delete coordinator pod 0 and bring it back with its data.
// The oracle of the coordinator issue must hold: the model is the one-worker
// model, byte for byte, and every step is committed exactly once. This
// proves the manifests' flags are the ones the binary needs.

// kubePod is one running pod: its single container as a process.
type kubePod struct {
	name string
	argv []string
	cmd  *exec.Cmd
	log  *syncio.Buffer
	done chan struct{}
	err  error
}

type kubePlay struct {
	t      *testing.T
	bin    string
	root   string
	token  string
	objs   []map[string]any
	ws     map[string]Workload
	ports  map[string]map[int]int // pod name -> container port -> loopback port
	mu     sync.Mutex
	pods   map[string]*kubePod
	extra  []string // test-only environment (a per-step slow-down)
	jobDir string   // the ConfigMap's files, paths rewritten
}

func newKubePlay(t *testing.T) *kubePlay {
	k := &kubePlay{t: t, bin: causalrm(t), root: t.TempDir(), token: "kube-job-token", objs: render(t, "base"),
		ws: map[string]Workload{}, ports: map[string]map[int]int{}, pods: map[string]*kubePod{}}
	ws, err := Workloads(k.objs)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		k.ws[w.Name] = w
	}
	t.Cleanup(k.killAll)
	return k
}

// portsOf gives a pod its loopback ports, once (a pod recreated under the
// same name keeps them, as its DNS name keeps pointing at it).
func (k *kubePlay) portsOf(pod string, c Container) map[int]int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.ports[pod]; ok {
		return p
	}
	p := map[int]int{}
	for _, cp := range c.Ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			k.t.Fatal(err)
		}
		p[cp] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	k.ports[pod] = p
	return p
}

// volumeDir is the directory standing for a pod's volume.
func (k *kubePlay) volumeDir(w Workload, pod, vol string) string {
	v := w.Volumes[vol]
	var dir string
	switch {
	case v.Secret != "":
		dir = filepath.Join(k.root, "secret", v.Secret)
		if v.Secret == "causalrm-token" {
			_ = os.MkdirAll(dir, 0o755)
			_ = os.WriteFile(filepath.Join(dir, "token"), []byte(k.token+"\n"), 0o600)
		}
	case v.ConfigMap != "":
		dir = k.jobDir
	case v.PVC != "" && v.PerPod:
		dir = filepath.Join(k.root, "pvc", v.PVC+"-"+pod)
	case v.PVC != "":
		dir = filepath.Join(k.root, "pvc", v.PVC)
	default:
		dir = filepath.Join(k.root, "emptydir", pod, vol)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		k.t.Fatal(err)
	}
	return dir
}

var hostPort = regexp.MustCompile(`([A-Za-z0-9.-]+):(\d+)`)

// rewrite maps one rendered string to this machine: a StatefulSet pod's DNS
// name to its loopback port, the pod's own bind and advertise addresses to
// its ports, and mount paths to their directories.
func (k *kubePlay) rewrite(s, pod string, own map[int]int, mounts map[string]string) string {
	s = hostPort.ReplaceAllStringFunc(s, func(m string) string {
		sub := hostPort.FindStringSubmatch(m)
		host, port := sub[1], sub[2]
		p, _ := strconv.Atoi(port)
		if host == "0.0.0.0" || host == "127.0.0.1" {
			if lp, ok := own[p]; ok {
				return fmt.Sprintf("127.0.0.1:%d", lp)
			}
			return m
		}
		if name, svc, ok := strings.Cut(host, "."); ok {
			if w, ok := k.ws[strings.TrimRight(name, "0123456789-")]; ok && w.ServiceName == svc {
				k.mu.Lock()
				lp, ok := k.ports[name][p]
				k.mu.Unlock()
				if ok {
					return fmt.Sprintf("127.0.0.1:%d", lp)
				}
			}
		}
		return m
	})
	// Longest mount path first.
	paths := make([]string, 0, len(mounts))
	for p := range mounts {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool { return len(paths[i]) > len(paths[j]) })
	for _, p := range paths {
		if strings.Contains(s, p) {
			return strings.Replace(s, p, mounts[p], 1)
		}
	}
	return s
}

// start runs pod `pod` of workload w as Kubernetes would.
func (k *kubePlay) start(w Workload, pod string) *kubePod {
	c := w.Containers[0]
	own := k.portsOf(pod, c)
	env, err := c.Environ(map[string]string{"metadata.name": pod, "status.podIP": "127.0.0.1"})
	if err != nil {
		k.t.Fatal(err)
	}
	mounts := map[string]string{}
	for _, m := range c.Mounts {
		mounts[m.Path] = k.volumeDir(w, pod, m.Volume)
	}
	var argv []string
	for _, a := range c.Argv(env) {
		argv = append(argv, k.rewrite(a, pod, own, mounts))
	}
	if !strings.HasSuffix(argv[0], "/causalrm") {
		k.t.Fatalf("%s runs %s, not the causalrm binary", pod, argv[0])
	}
	p := &kubePod{name: pod, argv: argv, log: &syncio.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(k.bin, argv[1:]...)
	p.cmd.Env = append(os.Environ(), k.extra...)
	for n, v := range env {
		p.cmd.Env = append(p.cmd.Env, n+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	k.mu.Lock()
	k.pods[pod] = p
	k.mu.Unlock()
	return p
}

// terminate deletes a pod: SIGTERM, then SIGKILL after the grace period.
func (k *kubePlay) terminate(w Workload, p *kubePod) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(time.Duration(w.TerminationGracePeriodSeconds) * time.Second):
		k.t.Errorf("%s outlived its grace period of %ds: killed", p.name, w.TerminationGracePeriodSeconds)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (k *kubePlay) killAll() {
	k.mu.Lock()
	var all []*kubePod
	for _, p := range k.pods {
		all = append(all, p)
	}
	k.mu.Unlock()
	for _, p := range all {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
		}
	}
	for _, p := range all {
		<-p.done
		if k.t.Failed() {
			out := p.log.String()
			if len(out) > 2500 {
				out = "..." + out[len(out)-2500:]
			}
			k.t.Logf("--- pod %s (%v) %v:\n%s", p.name, p.err, p.argv, out)
		}
	}
}

// prepareJob writes the ConfigMap's job file with the worker pods' paths
// mapped, and shrinks the model so the test trains in seconds.
func (k *kubePlay) prepareJob() (data string, job map[string]any) {
	cm := Find(k.objs, "ConfigMap", "causalrm-job")
	raw, _ := Path(cm, "data", "job.yaml").(string)
	if raw == "" {
		k.t.Fatal("ConfigMap causalrm-job has no job.yaml")
	}
	w := k.ws["causalrm-worker"]
	mounts := map[string]string{}
	for _, m := range w.Containers[0].Mounts {
		mounts[m.Path] = k.volumeDir(w, "any", m.Volume)
	}
	if err := yaml.Unmarshal([]byte(raw), &job); err != nil {
		k.t.Fatal(err)
	}
	d := job["data"].(map[string]any)
	data = k.rewrite(d["train"].(string), "", nil, mounts)
	d["train"] = data
	job["out"] = k.rewrite(job["out"].(string), "", nil, mounts)
	job["max_epochs"], job["hidden"], job["batch"], job["shards"] = 3, []int{16, 8}, 64, 16
	out, _ := yaml.Marshal(job)
	k.jobDir = filepath.Join(k.root, "configmap", "causalrm-job")
	if err := os.MkdirAll(k.jobDir, 0o755); err != nil {
		k.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(k.jobDir, "job.yaml"), out, 0o644); err != nil {
		k.t.Fatal(err)
	}
	return data, job
}

func fileSum(t *testing.T, path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(raw)
	return hex.EncodeToString(s[:])
}

func (k *kubePlay) coordinatorAddrs() []string {
	w := k.ws["causalrm-coordinator"]
	var out []string
	for i := 0; i < w.Replicas; i++ {
		k.mu.Lock()
		out = append(out, fmt.Sprintf("127.0.0.1:%d", k.ports[w.PodName(i)][w.Containers[0].Ports["grpc"]]))
		k.mu.Unlock()
	}
	return out
}

func (k *kubePlay) waitStatus(c *coordinator.Client, what string, cond func(coordinator.Status) bool) coordinator.Status {
	k.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var last coordinator.Status
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := c.Status(ctx)
		cancel()
		if err == nil {
			last = st
			if st.JobStatus.Phase == state.JobFailed {
				k.t.Fatalf("waiting for %s: job failed: %s", what, st.JobStatus.Message)
			}
			if cond(st) {
				return st
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	k.t.Fatalf("timed out waiting for %s (generation %+v, watermark %d)", what, last.Generation, last.Watermark.GlobalStep)
	return last
}

func ready(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func TestKubernetesManifestsRunAsRendered(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 3 coordinators and up to 5 workers")
	}
	k := newKubePlay(t)
	k.extra = []string{"CAUSALRM_STEP_DELAY=25ms"}
	data, job := k.prepareJob()
	if out, err := exec.Command(k.bin, "simulate", "--rows", "2000", "--test-rows", "300", "--dim", "16", "--latent", "4", "--out", data).CombinedOutput(); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	// The oracle: one process, the same job file.
	ref := filepath.Join(k.root, "ref")
	if out, err := exec.Command(k.bin, "train", "--config", filepath.Join(k.jobDir, "job.yaml"), "--out", ref, "--quiet").CombinedOutput(); err != nil {
		t.Fatalf("reference: %v\n%s", err, out)
	}
	want := fileSum(t, filepath.Join(ref, "reward.safetensors"))
	var rm struct {
		Stages []struct {
			Name   string `json:"name"`
			Epochs int    `json:"epochs"`
			Rows   int    `json:"rows"`
		} `json:"stages"`
	}
	raw, _ := os.ReadFile(filepath.Join(ref, "metrics.json"))
	if err := json.Unmarshal(raw, &rm); err != nil {
		t.Fatal(err)
	}

	// The coordinator StatefulSet (podManagementPolicy Parallel: all at once).
	cw := k.ws["causalrm-coordinator"]
	if cw.Kind != "StatefulSet" || cw.Replicas != 3 {
		t.Fatalf("coordinators: %s of %d", cw.Kind, cw.Replicas)
	}
	for i := 0; i < cw.Replicas; i++ {
		k.portsOf(cw.PodName(i), cw.Containers[0]) // every DNS name resolves before any pod starts
	}
	for i := 0; i < cw.Replicas; i++ {
		k.start(cw, cw.PodName(i))
	}
	metrics := cw.Containers[0].Ports["metrics"]
	readyz := func(pod string) string {
		k.mu.Lock()
		defer k.mu.Unlock()
		return fmt.Sprintf("http://127.0.0.1:%d/readyz", k.ports[pod][metrics])
	}
	deadline := time.Now().Add(time.Minute)
	for i := 0; i < cw.Replicas; i++ {
		for !ready(readyz(cw.PodName(i))) {
			if time.Now().After(deadline) {
				t.Fatalf("%s never became ready", cw.PodName(i))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	client, err := coordinator.Dial(context.Background(), coordinator.ClientConfig{Addrs: k.coordinatorAddrs(), Token: k.token, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	// The submit Job.
	sj := k.ws["causalrm-submit"]
	sub := k.start(sj, "causalrm-submit-x7k2p")
	<-sub.done
	if sub.err != nil {
		t.Fatalf("submit job: %v\n%s", sub.err, sub.log.String())
	}

	// The worker Deployment: replicas as rendered, then scaled.
	ww := k.ws["causalrm-worker"]
	var workers []*kubePod
	serial := 0
	scaleTo := func(n int) {
		for len(workers) < n {
			workers = append(workers, k.start(ww, fmt.Sprintf("causalrm-worker-5d8c7f9b6-%05d", serial)))
			serial++
		}
		if len(workers) > n { // the newest pods go, all at once
			gone := workers[n:]
			workers = workers[:n]
			var wg sync.WaitGroup
			for _, p := range gone {
				wg.Add(1)
				go func() { defer wg.Done(); k.terminate(ww, p) }()
			}
			wg.Wait()
			for _, p := range gone {
				if p.err != nil {
					t.Fatalf("%s ended with %v after SIGTERM: not a graceful leave\n%s", p.name, p.err, p.log.String())
				}
			}
		}
	}
	members := func(n int) func(coordinator.Status) bool {
		return func(st coordinator.Status) bool { return st.Generation != nil && len(st.Generation.Members) == n }
	}
	scaleTo(ww.Replicas)
	st := k.waitStatus(client, "training with the rendered replicas", func(st coordinator.Status) bool {
		return st.Generation != nil && len(st.Generation.Members) == ww.Replicas && st.Watermark.GlobalStep >= 15
	})
	scaleTo(5)
	st = k.waitStatus(client, "5 workers", members(5))
	t.Logf("scaled %d -> 5 at global step %d (generation %d)", ww.Replicas, st.Watermark.GlobalStep, st.Generation.Number)
	k.waitStatus(client, "progress with 5", func(s coordinator.Status) bool { return s.Watermark.GlobalStep >= st.Watermark.GlobalStep+15 })
	scaleTo(1)
	st = k.waitStatus(client, "1 worker", members(1))
	t.Logf("scaled 5 -> 1 at global step %d (generation %d)", st.Watermark.GlobalStep, st.Generation.Number)

	// Delete coordinator pod 0 and bring it back with its PVC.
	c0 := k.pods[cw.PodName(0)]
	k.terminate(cw, c0)
	if c0.err != nil {
		t.Fatalf("coordinator pod 0 ended with %v after SIGTERM", c0.err)
	}
	down := k.waitStatus(client, "progress without pod 0", func(s coordinator.Status) bool { return s.Watermark.GlobalStep >= st.Watermark.GlobalStep+10 })
	k.start(cw, cw.PodName(0))
	for !ready(readyz(cw.PodName(0))) {
		if time.Now().After(deadline.Add(2 * time.Minute)) {
			t.Fatal("coordinator pod 0 never became ready again")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("coordinator pod 0 deleted and back with its data (leader %s, global step %d)", down.Leader, down.Watermark.GlobalStep)

	// The oracle.
	st = k.waitStatus(client, "the job to finish", func(s coordinator.Status) bool { return s.JobStatus.Phase == state.JobDone })
	out := job["out"].(string)
	if got := fileSum(t, filepath.Join(out, "reward.safetensors")); got != want || st.JobStatus.RewardSHA256 != want {
		t.Fatalf("reward.safetensors sha256 %s (reported %s), the one-process run %s", got, st.JobStatus.RewardSHA256, want)
	}
	steps, epochs := map[string]int{}, map[string]int{}
	batch := job["batch"].(int)
	for _, s := range rm.Stages {
		steps[s.Name] = int(math.Ceil(float64(s.Rows) / float64(batch)))
		epochs[s.Name] = s.Epochs
	}
	log := make([]state.StepRange, len(st.Log))
	for i, e := range st.Log {
		log[i] = e.StepRange
	}
	if err := state.CheckExactlyOnce(log, steps, epochs); err != nil {
		t.Fatalf("committed progress: %v", err)
	}
	for _, p := range workers {
		<-p.done
		if p.err != nil {
			t.Fatalf("%s: %v", p.name, p.err)
		}
	}
	for i := 0; i < cw.Replicas; i++ {
		k.terminate(cw, k.pods[cw.PodName(i)])
	}
}

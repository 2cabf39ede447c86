package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kustomizations every test renders: the base and the example overlay.
var kustomizations = []string{"base", "overlays/example"}

// external are the objects the manifests refer to but do not contain: the
// user creates them (docs/kubernetes.md).
var external = map[string]bool{"Secret/causalrm-token": true}

func render(t *testing.T, dir string) []map[string]any {
	t.Helper()
	objs, err := Render(filepath.Join(Dir(), dir))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

var (
	validatorOnce sync.Once
	validator     *Validator
	validatorErr  error
)

func newValidator(t *testing.T) *Validator {
	t.Helper()
	validatorOnce.Do(func() { validator, validatorErr = NewValidator() })
	if validatorErr != nil {
		t.Fatal(validatorErr)
	}
	return validator
}

func TestManifestsValidate(t *testing.T) {
	v := newValidator(t)
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			if err := v.ValidateAll(objs); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"StatefulSet/causalrm-coordinator", "Service/causalrm-coordinator",
				"PodDisruptionBudget/causalrm-coordinator", "Deployment/causalrm-worker", "ConfigMap/causalrm-job",
				"Job/causalrm-submit", "PersistentVolumeClaim/causalrm-data", "PersistentVolumeClaim/causalrm-output"} {
				kind, name, _ := strings.Cut(want, "/")
				if Find(objs, kind, name) == nil {
					t.Errorf("%s: no %s", dir, want)
				}
			}
			t.Logf("%s: %d objects valid against Kubernetes %s", dir, len(objs), SchemaRelease)
		})
	}
	if Find(render(t, "overlays/example"), "HorizontalPodAutoscaler", "causalrm-worker") == nil {
		t.Error("the example overlay has no worker HPA")
	}
}

// The validator must catch a misspelled field, a wrong type and a missing
// required field, at any depth.
func TestValidatorCatchesBrokenFields(t *testing.T) {
	v := newValidator(t)
	cases := []struct {
		name, kind, obj string
		mutate          func(o map[string]any)
		want            string // in the error
	}{
		{"misspelled field", "StatefulSet", "causalrm-coordinator", func(o map[string]any) {
			spec := o["spec"].(map[string]any)
			spec["replica"] = spec["replicas"]
			delete(spec, "replicas")
		}, "replica"},
		{"misspelled nested field", "Deployment", "causalrm-worker", func(o map[string]any) {
			c := Path(o, "spec", "template", "spec", "containers", 0).(map[string]any)
			c["readinesProbe"] = c["readinessProbe"]
			delete(c, "readinessProbe")
		}, "readinesProbe"},
		{"wrong type", "StatefulSet", "causalrm-coordinator", func(o map[string]any) {
			o["spec"].(map[string]any)["replicas"] = "three"
		}, "/spec/replicas"},
		{"wrong type nested", "Deployment", "causalrm-worker", func(o map[string]any) {
			c := Path(o, "spec", "template", "spec", "containers", 0).(map[string]any)
			c["args"] = "worker --id=x"
		}, "/spec/template/spec/containers/0/args"},
		{"wrong type of a quantity", "Job", "causalrm-submit", func(o map[string]any) {
			Path(o, "spec", "template", "spec", "containers", 0, "resources", "limits").(map[string]any)["memory"] = true
		}, "/resources/limits/memory"},
		{"wrong type of an int-or-string", "Service", "causalrm-coordinator", func(o map[string]any) {
			Path(o, "spec", "ports", 0).(map[string]any)["targetPort"] = 7.5
		}, "targetPort"},
		{"missing required field", "Deployment", "causalrm-worker", func(o map[string]any) {
			delete(o["spec"].(map[string]any), "selector")
		}, "selector"},
		{"missing required nested field", "StatefulSet", "causalrm-coordinator", func(o map[string]any) {
			delete(Path(o, "spec", "template", "spec", "containers", 0).(map[string]any), "name")
		}, "name"},
		{"unknown kind", "PodDisruptionBudget", "causalrm-coordinator", func(o map[string]any) {
			o["apiVersion"] = "policy/v1beta2"
		}, "no schema"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs := render(t, "base")
			o := Find(objs, c.kind, c.obj)
			if o == nil {
				t.Fatalf("no %s/%s", c.kind, c.obj)
			}
			if err := v.Validate(o); err != nil {
				t.Fatalf("valid before the change: %v", err)
			}
			c.mutate(o)
			err := v.Validate(o)
			if err == nil {
				t.Fatal("the validator accepted it")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error does not mention %q: %v", c.want, err)
			}
			t.Log(err)
		})
	}
}

// helpFlags runs `causalrm <sub> --help` and returns its flags, long (--x)
// and short (-x).
var helpFlagRE = regexp.MustCompile(`^\s+(?:-([A-Za-z0-9]), )?--([A-Za-z0-9][A-Za-z0-9-]*)`)

func helpFlags(t *testing.T, bin, sub string) map[string]bool {
	t.Helper()
	out, err := exec.Command(bin, sub, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s --help: %v\n%s", bin, sub, err, out)
	}
	flags := map[string]bool{}
	inFlags := false
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasSuffix(line, "Flags:") {
			inFlags = true
			continue
		}
		if m := helpFlagRE.FindStringSubmatch(line); inFlags && m != nil {
			flags["--"+m[2]] = true
			if m[1] != "" {
				flags["-"+m[1]] = true
			}
		}
	}
	if len(flags) < 3 {
		t.Fatalf("%s --help lists no flags:\n%s", sub, out)
	}
	return flags
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binOut  []byte
)

// causalrm builds the command once per test binary (pure-Go BLAS, as the
// image is built).
func causalrm(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "causalrm-deploy-test")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "causalrm")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/causalrm")
		cmd.Dir = filepath.Join(Dir(), "..", "..")
		binOut, binErr = cmd.CombinedOutput()
	})
	if binErr != nil {
		t.Fatalf("go build ./cmd/causalrm: %v\n%s", binErr, binOut)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// Every flag in every container's args is a flag of that causalrm
// subcommand, so a renamed or removed flag fails CI.
func TestManifestFlagsExist(t *testing.T) {
	bin := causalrm(t)
	cache := map[string]map[string]bool{}
	for _, dir := range kustomizations {
		ws, err := Workloads(render(t, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			for _, c := range w.Containers {
				where := dir + ": " + w.Kind + "/" + w.Name + " container " + c.Name
				argv := append(append([]string{}, c.Command...), c.Args...)
				if len(argv) < 2 || filepath.Base(argv[0]) != "causalrm" {
					t.Errorf("%s: command %q does not run causalrm <subcommand>", where, argv)
					continue
				}
				sub := argv[1]
				if cache[sub] == nil {
					cache[sub] = helpFlags(t, bin, sub)
				}
				for _, name := range unknownFlags(argv[2:], cache[sub]) {
					t.Errorf("%s: causalrm %s has no flag %s", where, sub, name)
				}
				// The check itself: a misspelled flag is caught.
				if bad := unknownFlags([]string{"--coordinatorz=x"}, cache[sub]); len(bad) != 1 {
					t.Errorf("causalrm %s: a misspelled flag passes the check", sub)
				}
			}
		}
	}
	subs := make([]string, 0, len(cache))
	for s := range cache {
		subs = append(subs, s)
	}
	sort.Strings(subs)
	t.Logf("checked the flags of causalrm %s", strings.Join(subs, ", "))
}

// unknownFlags returns the flags in args (--name, --name=value, -x) that
// are not in flags.
func unknownFlags(args []string, flags map[string]bool) []string {
	var bad []string
	for _, a := range args {
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			continue
		}
		name, _, _ := strings.Cut(a, "=")
		if !flags[name] {
			bad = append(bad, name)
		}
	}
	return bad
}

func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// The pieces agree with each other: peer names and ports, selectors,
// probes, volumes and the objects they name, the job file's paths.
func TestManifestsConsistent(t *testing.T) {
	for _, dir := range kustomizations {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			ws, err := Workloads(objs)
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string]Workload{}
			for _, w := range ws {
				byName[w.Kind+"/"+w.Name] = w
			}
			co, wk, sj := byName["StatefulSet/causalrm-coordinator"], byName["Deployment/causalrm-worker"], byName["Job/causalrm-submit"]

			// The coordinators' --servers names every pod of the StatefulSet
			// through its headless service, with the container's ports.
			svc := Find(objs, "Service", co.ServiceName)
			if svc == nil || Path(svc, "spec", "clusterIP") != "None" || Path(svc, "spec", "publishNotReadyAddresses") != true {
				t.Fatalf("StatefulSet's serviceName %q is not a headless Service publishing not-ready addresses", co.ServiceName)
			}
			cc := co.Containers[0]
			servers, _ := flagValue(cc.Args, "--servers")
			var want, grpc []string
			for i := 0; i < co.Replicas; i++ {
				host := co.PodName(i) + "." + co.ServiceName
				want = append(want, co.PodName(i)+"="+host+":7000/"+host+":7100")
				grpc = append(grpc, host+":7100")
			}
			if servers != strings.Join(want, ",") {
				t.Errorf("--servers %q, want %q", servers, strings.Join(want, ","))
			}
			if cc.Ports["raft"] != 7000 || cc.Ports["grpc"] != 7100 {
				t.Errorf("coordinator ports %v, want raft 7000, grpc 7100", cc.Ports)
			}
			checkRaftPolicy(t, objs, cc.Ports)
			if b, _ := flagValue(cc.Args, "--bootstrap-id"); b != co.PodName(0) {
				t.Errorf("--bootstrap-id %q, want %q", b, co.PodName(0))
			}
			if id, _ := flagValue(cc.Args, "--id"); id != "$(POD_NAME)" {
				t.Errorf("coordinator --id %q, want $(POD_NAME)", id)
			}
			if pdb := Find(objs, "PodDisruptionBudget", "causalrm-coordinator"); pdb == nil || Path(pdb, "spec", "minAvailable") != co.Replicas/2+1 {
				t.Errorf("the coordinators' PDB does not keep a quorum of %d", co.Replicas/2+1)
			}
			for _, w := range []Workload{wk, sj} {
				if got, _ := flagValue(w.Containers[0].Args, "--coordinators"); got != strings.Join(grpc, ",") {
					t.Errorf("%s --coordinators %q, want %q", w.Name, got, strings.Join(grpc, ","))
				}
			}
			if wk.TerminationGracePeriodSeconds < 30 {
				t.Errorf("worker grace period %ds: too short for a graceful leave", wk.TerminationGracePeriodSeconds)
			}

			// Every object a pod refers to is rendered or created by the user;
			// every mount names a volume; every probe a container port.
			have := map[string]bool{}
			for _, o := range objs {
				have[o["kind"].(string)+"/"+Name(o)] = true
			}
			for _, w := range ws {
				for name, v := range w.Volumes {
					for _, ref := range []string{"Secret/" + v.Secret, "ConfigMap/" + v.ConfigMap, "PersistentVolumeClaim/" + v.PVC} {
						if !strings.HasSuffix(ref, "/") && !v.PerPod && !have[ref] && !external[ref] {
							t.Errorf("%s/%s volume %s: no %s", w.Kind, w.Name, name, ref)
						}
					}
				}
				for _, c := range w.Containers {
					for _, m := range c.Mounts {
						if _, ok := w.Volumes[m.Volume]; !ok {
							t.Errorf("%s/%s container %s mounts unknown volume %s", w.Kind, w.Name, c.Name, m.Volume)
						}
					}
					for _, f := range []string{"--token-file", "--data-dir"} {
						if p, ok := flagValue(c.Args, f); ok && mountOf(c, p) == nil {
							t.Errorf("%s/%s: %s %s is on no volume", w.Kind, w.Name, f, p)
						}
					}
				}
			}
			for _, o := range objs {
				pod := Path(o, "spec", "template", "spec")
				cs, _ := Path(pod, "containers").([]any)
				for _, c := range cs {
					for _, probe := range []string{"readinessProbe", "livenessProbe"} {
						port := Path(c, probe, "httpGet", "port")
						if s, ok := port.(string); ok && !hasPort(c, s) {
							t.Errorf("%s %s: %s port %q is no container port", o["kind"], Name(o), probe, s)
						}
					}
				}
				// Services select pods that exist.
				if o["kind"] == "Service" {
					sel, _ := Path(o, "spec", "selector").(map[string]any)
					if !selectsSome(objs, sel) {
						t.Errorf("Service %s selects no pod template", Name(o))
					}
				}
			}

			// The job file: a causalrm job whose paths lie on the workers'
			// volumes, data on the read-only one.
			cm := Find(objs, "ConfigMap", "causalrm-job")
			var job struct {
				Data map[string]string `yaml:"data"`
				Out  string            `yaml:"out"`
			}
			if err := yaml.Unmarshal([]byte(Path(cm, "data", "job.yaml").(string)), &job); err != nil {
				t.Fatal(err)
			}
			wc := wk.Containers[0]
			for split, p := range job.Data {
				if m := mountOf(wc, p); m == nil || !m.ReadOnly || !wk.Volumes[m.Volume].ReadOnly {
					t.Errorf("job data %s %s: not on a read-only volume of the workers", split, p)
				}
			}
			if m := mountOf(wc, job.Out); m == nil || m.ReadOnly {
				t.Errorf("job out %s: not on a writable volume of the workers", job.Out)
			}
			jobFile := sj.Containers[0].Args[1]
			if m := mountOf(sj.Containers[0], jobFile); m == nil || sj.Volumes[m.Volume].ConfigMap != "causalrm-job" {
				t.Errorf("submit's job file %s is not on the causalrm-job ConfigMap", jobFile)
			} else if filepath.Base(jobFile) != "job.yaml" {
				t.Errorf("submit's job file %s: the ConfigMap's key is job.yaml", jobFile)
			}
		})
	}
}

func mountOf(c Container, path string) *Mount {
	var best *Mount
	for i, m := range c.Mounts {
		if (path == m.Path || strings.HasPrefix(path, strings.TrimSuffix(m.Path, "/")+"/")) && (best == nil || len(m.Path) > len(best.Path)) {
			best = &c.Mounts[i]
		}
	}
	return best
}

func hasPort(c any, name string) bool {
	ports, _ := Path(c, "ports").([]any)
	for _, p := range ports {
		if Path(p, "name") == name {
			return true
		}
	}
	return false
}

func selectsSome(objs []map[string]any, sel map[string]any) bool {
	for _, o := range objs {
		labels, ok := Path(o, "spec", "template", "metadata", "labels").(map[string]any)
		if !ok {
			continue
		}
		match := len(sel) > 0
		for k, v := range sel {
			if labels[k] != v {
				match = false
			}
		}
		if match {
			return true
		}
	}
	return false
}

// Workloads gives a Kubernetes-playing test the processes to start.
func TestWorkloadsArgv(t *testing.T) {
	ws, err := Workloads(render(t, "base"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if w.Kind != "StatefulSet" {
			continue
		}
		c := w.Containers[0]
		env, err := c.Environ(map[string]string{"metadata.name": w.PodName(1), "status.podIP": "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		argv := c.Argv(env)
		b, _ := json.Marshal(argv)
		if !strings.Contains(string(b), `"--id=causalrm-coordinator-1"`) || !strings.Contains(string(b), `"--raft-advertise=127.0.0.1:7000"`) {
			t.Fatalf("argv %s", b)
		}
	}
	for in, want := range map[string]string{
		"$(A)-$(B)": "x-$(B)", "$$(A)": "$(A)", "a$": "a$", "$(A": "$(A", "$x$(A)": "$xx",
	} {
		if got := Expand(in, map[string]string{"A": "x"}); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}

// The mTLS overlay of docs/kubernetes.md applies, validates and uses real
// flags (rendered from an in-memory copy of the base).
func TestDocsMTLSPatch(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(Dir(), "..", "..", "docs", "kubernetes.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "  ```yaml\n  patches:\n")
	patch, _, ok2 := strings.Cut(rest, "  ```")
	if !ok || !ok2 {
		t.Fatal("docs/kubernetes.md: no mTLS patches block")
	}
	fs := filesys.MakeFsInMemory()
	base := filepath.Join(Dir(), "base")
	entries, err := os.ReadDir(base)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(base, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := fs.WriteFile("/k/base/"+e.Name(), b); err != nil {
			t.Fatal(err)
		}
	}
	kust := "resources: [../base]\npatches:\n" + strings.ReplaceAll("\n"+patch, "\n  ", "\n")[1:]
	if err := fs.WriteFile("/k/mtls/kustomization.yaml", []byte(kust)); err != nil {
		t.Fatal(err)
	}
	objs, err := RenderFS(fs, "/k/mtls")
	if err != nil {
		t.Fatalf("%v\n%s", err, kust)
	}
	if err := newValidator(t).ValidateAll(objs); err != nil {
		t.Fatal(err)
	}
	ws, _ := Workloads(objs)
	flags := helpFlags(t, causalrm(t), "coordinator")
	for _, w := range ws {
		if w.Kind != "StatefulSet" {
			continue
		}
		c := w.Containers[0]
		if p, _ := flagValue(c.Args, "--tls-cert"); mountOf(c, p) == nil {
			t.Errorf("--tls-cert %q is on no volume", p)
		}
		if bad := unknownFlags(c.Args, flags); len(bad) > 0 {
			t.Errorf("unknown flags %v", bad)
		}
	}
}

// checkRaftPolicy: the coordinators' NetworkPolicy admits the raft port
// from coordinator pods only, and the gRPC and metrics ports from anyone
// (workers, submit, scrapers): no rule admits raft from other pods.
func checkRaftPolicy(t *testing.T, objs []map[string]any, ports map[string]int) {
	t.Helper()
	np := Find(objs, "NetworkPolicy", "causalrm-coordinator")
	if np == nil {
		t.Error("no NetworkPolicy for the coordinators")
		return
	}
	coordinator := map[string]any{"app.kubernetes.io/name": "causalrm", "app.kubernetes.io/component": "coordinator"}
	if !reflect.DeepEqual(Path(np, "spec", "podSelector", "matchLabels"), coordinator) {
		t.Errorf("the NetworkPolicy selects %v, not the coordinators", Path(np, "spec", "podSelector"))
	}
	open := map[int]bool{}
	rules, _ := Path(np, "spec", "ingress").([]any)
	for _, r := range rules {
		rule := r.(map[string]any)
		from, _ := rule["from"].([]any)
		onlyCoordinators := len(from) > 0
		for _, f := range from {
			if !reflect.DeepEqual(Path(f.(map[string]any), "podSelector", "matchLabels"), coordinator) {
				onlyCoordinators = false
			}
		}
		ps, _ := rule["ports"].([]any)
		for _, p := range ps {
			port := toInt(p.(map[string]any)["port"])
			if port == ports["raft"] && !onlyCoordinators {
				t.Errorf("a NetworkPolicy rule admits raft (%d) from pods other than the coordinators", port)
			}
			if !onlyCoordinators {
				open[port] = true
			}
		}
	}
	for _, name := range []string{"grpc", "metrics"} {
		if !open[ports[name]] {
			t.Errorf("the NetworkPolicy does not admit %s (%d)", name, ports[name])
		}
	}
}

func toInt(v any) int {
	switch x := v.(type) {
	case int:
		return x
	case int64:
		return int(x)
	case float64:
		return int(x)
	}
	return -1
}

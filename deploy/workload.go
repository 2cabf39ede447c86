package deploy

import (
	"fmt"
	"strings"
)

// Workload is a rendered StatefulSet, Deployment or Job reduced to what a
// test that runs its containers as local processes needs.
type Workload struct {
	Kind, Name string
	// Replicas is spec.replicas; -1 when unset (an autoscaler owns it) and
	// 1 for a Job.
	Replicas int
	// ServiceName is a StatefulSet's headless service: pod N is reachable as
	// <Name>-N.<ServiceName>.
	ServiceName string
	// TerminationGracePeriodSeconds: SIGTERM, then SIGKILL after this long
	// (Kubernetes' default 30 when unset).
	TerminationGracePeriodSeconds int
	Containers                    []Container
	Volumes                       map[string]Volume
}

// Container is one container of a pod template.
type Container struct {
	Name    string
	Image   string
	Command []string // as written
	Args    []string // as written: $(VAR) not expanded
	Env     []EnvVar
	Ports   map[string]int // port name -> containerPort
	Mounts  []Mount
}

// EnvVar is a literal value or a downward-API field (metadata.name,
// status.podIP, ...); other sources (secretKeyRef, ...) are not supported.
type EnvVar struct {
	Name, Value, FieldPath string
}

// Mount is a volumeMount.
type Mount struct {
	Volume, Path string
	ReadOnly     bool
}

// Volume is a pod volume (or a StatefulSet volumeClaimTemplate, PVC set to
// "<template>-<pod name>" as Kubernetes names it, with PerPod true).
type Volume struct {
	Secret, ConfigMap, PVC string
	EmptyDir, PerPod       bool
	ReadOnly               bool
}

// Environ resolves the container's environment for one pod: fields maps a
// downward-API field path to its value, e.g. {"metadata.name":
// "causalrm-coordinator-0", "status.podIP": "127.0.0.1"}. Values may refer to
// earlier variables with $(VAR), as in Kubernetes.
func (c Container) Environ(fields map[string]string) (map[string]string, error) {
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.FieldPath != "":
			v, ok := fields[e.FieldPath]
			if !ok {
				return nil, fmt.Errorf("container %s: env %s: no value given for field %s", c.Name, e.Name, e.FieldPath)
			}
			env[e.Name] = v
		default:
			env[e.Name] = Expand(e.Value, env)
		}
	}
	return env, nil
}

// Argv is command followed by args, with $(VAR) expanded from env as the
// kubelet does.
func (c Container) Argv(env map[string]string) []string {
	var argv []string
	for _, s := range append(append([]string{}, c.Command...), c.Args...) {
		argv = append(argv, Expand(s, env))
	}
	return argv
}

// Expand replaces $(VAR) with env[VAR] as Kubernetes expands command, args
// and env values: $$ is a literal $, and a reference to an unknown variable
// is left as written.
func Expand(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// Workloads returns the StatefulSets, Deployments and Jobs among objs.
func Workloads(objs []map[string]any) ([]Workload, error) {
	var ws []Workload
	for _, o := range objs {
		kind, _ := o["kind"].(string)
		if kind != "StatefulSet" && kind != "Deployment" && kind != "Job" {
			continue
		}
		w := Workload{Kind: kind, Name: Name(o), Replicas: -1, TerminationGracePeriodSeconds: 30, Volumes: map[string]Volume{}}
		if kind == "Job" {
			w.Replicas = 1
		}
		if r, ok := num(Path(o, "spec", "replicas")); ok {
			w.Replicas = r
		}
		w.ServiceName, _ = Path(o, "spec", "serviceName").(string)
		pod := Path(o, "spec", "template", "spec")
		if g, ok := num(Path(pod, "terminationGracePeriodSeconds")); ok {
			w.TerminationGracePeriodSeconds = g
		}
		vols, _ := Path(pod, "volumes").([]any)
		for _, v := range vols {
			name, _ := Path(v, "name").(string)
			var vol Volume
			vol.Secret, _ = Path(v, "secret", "secretName").(string)
			vol.ConfigMap, _ = Path(v, "configMap", "name").(string)
			vol.PVC, _ = Path(v, "persistentVolumeClaim", "claimName").(string)
			vol.ReadOnly, _ = Path(v, "persistentVolumeClaim", "readOnly").(bool)
			vol.EmptyDir = Path(v, "emptyDir") != nil
			w.Volumes[name] = vol
		}
		vcts, _ := Path(o, "spec", "volumeClaimTemplates").([]any)
		for _, v := range vcts {
			name, _ := Path(v, "metadata", "name").(string)
			w.Volumes[name] = Volume{PVC: name, PerPod: true}
		}
		cs, _ := Path(pod, "containers").([]any)
		for _, c := range cs {
			var ct Container
			ct.Name, _ = Path(c, "name").(string)
			ct.Image, _ = Path(c, "image").(string)
			ct.Command = strs(Path(c, "command"))
			ct.Args = strs(Path(c, "args"))
			ct.Ports = map[string]int{}
			env, _ := Path(c, "env").([]any)
			for _, e := range env {
				var ev EnvVar
				ev.Name, _ = Path(e, "name").(string)
				ev.Value, _ = Path(e, "value").(string)
				ev.FieldPath, _ = Path(e, "valueFrom", "fieldRef", "fieldPath").(string)
				if ev.FieldPath == "" && Path(e, "valueFrom") != nil {
					return nil, fmt.Errorf("%s %s: container %s: env %s: only values and fieldRef are supported", kind, w.Name, ct.Name, ev.Name)
				}
				ct.Env = append(ct.Env, ev)
			}
			ports, _ := Path(c, "ports").([]any)
			for _, p := range ports {
				name, _ := Path(p, "name").(string)
				if n, ok := num(Path(p, "containerPort")); ok && name != "" {
					ct.Ports[name] = n
				}
			}
			mounts, _ := Path(c, "volumeMounts").([]any)
			for _, m := range mounts {
				var mt Mount
				mt.Volume, _ = Path(m, "name").(string)
				mt.Path, _ = Path(m, "mountPath").(string)
				mt.ReadOnly, _ = Path(m, "readOnly").(bool)
				ct.Mounts = append(ct.Mounts, mt)
			}
			w.Containers = append(w.Containers, ct)
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// PodName is the name Kubernetes gives pod ordinal i of a StatefulSet.
func (w Workload) PodName(i int) string { return fmt.Sprintf("%s-%d", w.Name, i) }

func num(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case int64:
		return int(n), true
	case float64:
		return int(n), true
	}
	return 0, false
}

func strs(v any) []string {
	l, _ := v.([]any)
	var out []string
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

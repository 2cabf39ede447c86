// Package deploy renders and checks the Kubernetes manifests in
// deploy/kubernetes (docs/kubernetes.md): Render runs kustomize in-process,
// Validator checks objects offline against the OpenAPI schemas of a
// Kubernetes release kept in kubernetes/schemas, and Workloads extracts what
// each container runs (command, args with $(VAR) expanded, environment), for
// tests that play Kubernetes with local processes.
package deploy

import (
	"fmt"
	"path/filepath"
	"runtime"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Dir is the absolute path of deploy/kubernetes in this checkout (base/,
// overlays/example/, schemas/).
func Dir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		panic("deploy: no caller information")
	}
	return filepath.Join(filepath.Dir(file), "kubernetes")
}

// Render builds the kustomization in dir (as `kubectl kustomize dir` does)
// and returns its objects in kustomize's output order, each as the JSON
// object the API server would receive.
func Render(dir string) ([]map[string]any, error) {
	return RenderFS(filesys.MakeFsOnDisk(), dir)
}

// RenderFS is Render on any kustomize file system (filesys.MakeFsInMemory
// for kustomizations built by a test).
func RenderFS(fs filesys.FileSystem, dir string) ([]map[string]any, error) {
	opts := krusty.MakeDefaultOptions()
	rm, err := krusty.MakeKustomizer(opts).Run(fs, dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var objs []map[string]any
	for _, r := range rm.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, fmt.Errorf("kustomize %s: %s: %w", dir, r.CurId(), err)
		}
		objs = append(objs, m)
	}
	return objs, nil
}

// Find returns the first object of this kind and name, or nil.
func Find(objs []map[string]any, kind, name string) map[string]any {
	for _, o := range objs {
		if o["kind"] == kind && Name(o) == name {
			return o
		}
	}
	return nil
}

// Name is metadata.name of obj.
func Name(obj map[string]any) string {
	s, _ := Path(obj, "metadata", "name").(string)
	return s
}

// Path walks obj by map keys (string) and list indexes (int); nil when a
// step is missing.
func Path(obj any, path ...any) any {
	cur := obj
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k < 0 || k >= len(l) {
				return nil
			}
			cur = l[k]
		default:
			return nil
		}
	}
	return cur
}

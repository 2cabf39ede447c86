// Command manifests renders a kustomization of deploy/kubernetes (as
// `kubectl kustomize` does), validates every object offline against the
// Kubernetes OpenAPI schemas in deploy/kubernetes/schemas and prints the
// objects as one YAML stream: make manifests.
//
//	go run ./deploy/cmd/manifests [dir]   (default deploy/kubernetes/overlays/example)
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/causalrm/causalrm/deploy"
	"sigs.k8s.io/yaml"
)

func main() {
	dir := filepath.Join(deploy.Dir(), "overlays", "example")
	if len(os.Args) > 2 {
		fmt.Fprintln(os.Stderr, "usage: manifests [kustomization dir]")
		os.Exit(2)
	}
	if len(os.Args) == 2 {
		dir = os.Args[1]
	}
	objs, err := deploy.Render(dir)
	if err != nil {
		fail(err)
	}
	v, err := deploy.NewValidator()
	if err != nil {
		fail(err)
	}
	if err := v.ValidateAll(objs); err != nil {
		fail(err)
	}
	for i, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			fail(err)
		}
		if i > 0 {
			fmt.Println("---")
		}
		os.Stdout.Write(b)
	}
	fmt.Fprintf(os.Stderr, "manifests: %s: %d objects, valid against Kubernetes %s\n", dir, len(objs), deploy.SchemaRelease)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "manifests:", err)
	os.Exit(1)
}

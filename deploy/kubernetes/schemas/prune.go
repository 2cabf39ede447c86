//go:build ignore

// prune writes the subset of a Kubernetes release's OpenAPI v2 spec
// (api/openapi-spec/swagger.json of the k8s.io/kubernetes module) that the
// manifests in deploy/kubernetes need: the definitions of the kinds below
// and everything they reference, unmodified. See README.md.
//
//	go mod download -json k8s.io/kubernetes@v1.37.2   # prints its Dir
//	go run deploy/kubernetes/schemas/prune.go <Dir>/api/openapi-spec/swagger.json v1.37.2 \
//	    > deploy/kubernetes/schemas/kubernetes-v1.37.2-swagger.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// kinds are group/version/kind; "" is the core group.
var kinds = []string{
	"/v1/ConfigMap", "/v1/Secret", "/v1/Service", "/v1/ServiceAccount", "/v1/Namespace",
	"/v1/PersistentVolumeClaim", "/v1/PersistentVolume", "/v1/Pod",
	"apps/v1/StatefulSet", "apps/v1/Deployment",
	"batch/v1/Job",
	"policy/v1/PodDisruptionBudget",
	"autoscaling/v2/HorizontalPodAutoscaler",
	"networking.k8s.io/v1/NetworkPolicy",
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: prune swagger.json release")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	var spec struct {
		Definitions map[string]json.RawMessage `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		panic(err)
	}
	want := map[string]bool{}
	for _, k := range kinds {
		want[k] = true
	}
	out := map[string]json.RawMessage{}
	var queue []string
	for name, def := range spec.Definitions {
		var d struct {
			GVK []struct{ Group, Version, Kind string } `json:"x-kubernetes-group-version-kind"`
		}
		_ = json.Unmarshal(def, &d)
		for _, g := range d.GVK {
			if want[g.Group+"/"+g.Version+"/"+g.Kind] && !strings.HasSuffix(name, "List") {
				delete(want, g.Group+"/"+g.Version+"/"+g.Kind)
				queue = append(queue, name)
			}
		}
	}
	if len(want) > 0 {
		panic(fmt.Sprint("kinds not in the spec: ", want))
	}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if _, ok := out[name]; ok {
			continue
		}
		def, ok := spec.Definitions[name]
		if !ok {
			panic("missing definition " + name)
		}
		out[name] = def
		var walk func(any)
		walk = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				if r, ok := v["$ref"].(string); ok {
					queue = append(queue, strings.TrimPrefix(r, "#/definitions/"))
				}
				for _, x := range v {
					walk(x)
				}
			case []any:
				for _, x := range v {
					walk(x)
				}
			}
		}
		var d any
		_ = json.Unmarshal(def, &d)
		walk(d)
	}
	doc := map[string]any{
		"swagger": "2.0",
		"info": map[string]string{
			"title":   "Kubernetes",
			"version": os.Args[2],
			"x-source": "k8s.io/kubernetes@" + os.Args[2] + " api/openapi-spec/swagger.json, " +
				"definitions pruned to the kinds deploy/kubernetes uses by deploy/kubernetes/schemas/prune.go",
		},
		"definitions": out,
	}
	b, err := json.MarshalIndent(doc, "", " ")
	if err != nil {
		panic(err)
	}
	os.Stdout.Write(append(b, '\n'))
}

package deploy

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

var printer = message.NewPrinter(language.English)

// SchemaRelease is the Kubernetes release whose OpenAPI definitions the
// Validator uses (kubernetes/schemas/README.md).
const SchemaRelease = "v1.37.2"

//go:embed kubernetes/schemas/kubernetes-v1.37.2-swagger.json
var swaggerJSON []byte

// Validator checks objects against the OpenAPI v2 definitions of a
// Kubernetes release, strictly: as kubeconform -strict does, every object
// schema that lists its properties and does not preserve unknown fields is
// closed (a misspelled field is an error), IntOrString accepts a string or an
// integer and Quantity a string or a number (as the API server does), and
// fields set to null are dropped first (the API server treats them as unset).
type Validator struct {
	byGVK map[string]*jsonschema.Schema // "group/version/Kind" ("" group: core)
}

// NewValidator compiles the embedded schemas of SchemaRelease.
func NewValidator() (*Validator, error) {
	return NewValidatorFrom(swaggerJSON)
}

// NewValidatorFrom compiles a Kubernetes swagger.json (OpenAPI v2): the
// whole spec of a release, or a subset of its definitions.
func NewValidatorFrom(swagger []byte) (*Validator, error) {
	var spec struct {
		Definitions map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(swagger, &spec); err != nil {
		return nil, fmt.Errorf("schemas: %w", err)
	}
	defs := spec.Definitions
	for name, d := range defs {
		switch name {
		case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
			defs[name] = map[string]any{"type": []any{"string", "integer"}}
		case "io.k8s.apimachinery.pkg.api.resource.Quantity":
			defs[name] = map[string]any{"type": []any{"string", "number"}}
		default:
			closeObjects(d)
		}
	}
	const url = "file:///kubernetes-swagger.json"
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft4)
	if err := c.AddResource(url, map[string]any{"definitions": defs}); err != nil {
		return nil, fmt.Errorf("schemas: %w", err)
	}
	v := &Validator{byGVK: map[string]*jsonschema.Schema{}}
	names := make([]string, 0, len(defs))
	for name := range defs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		d, _ := defs[name].(map[string]any)
		gvks, _ := d["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			g, _ := g.(map[string]any)
			kind, _ := g["kind"].(string)
			if kind == "" || strings.HasSuffix(name, "List") {
				continue
			}
			s, err := c.Compile(url + "#/definitions/" + jsonPointerEscape(name))
			if err != nil {
				return nil, fmt.Errorf("schemas: %s: %w", name, err)
			}
			v.byGVK[fmt.Sprintf("%s/%s/%s", g["group"], g["version"], kind)] = s
		}
	}
	return v, nil
}

func jsonPointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// closeObjects sets additionalProperties: false on every schema under s that
// lists properties and neither sets additionalProperties nor preserves
// unknown fields.
func closeObjects(s any) {
	switch s := s.(type) {
	case map[string]any:
		if props, ok := s["properties"].(map[string]any); ok {
			_, has := s["additionalProperties"]
			if !has && s["x-kubernetes-preserve-unknown-fields"] != true {
				s["additionalProperties"] = false
			}
			for _, p := range props {
				closeObjects(p)
			}
		}
		for _, k := range []string{"items", "additionalProperties"} {
			if sub, ok := s[k]; ok {
				closeObjects(sub)
			}
		}
	case []any:
		for _, x := range s {
			closeObjects(x)
		}
	}
}

// GVK is "group/version/Kind" of obj ("" group for the core API).
func GVK(obj map[string]any) string {
	av, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	group, version := "", av
	if i := strings.LastIndex(av, "/"); i >= 0 {
		group, version = av[:i], av[i+1:]
	}
	return group + "/" + version + "/" + kind
}

// Validate checks obj against the schema of its apiVersion and kind. An
// object of a kind the schemas do not hold is an error (add the kind to
// kubernetes/schemas/prune.go and regenerate).
func (v *Validator) Validate(obj map[string]any) error {
	gvk := GVK(obj)
	s, ok := v.byGVK[gvk]
	if !ok {
		return fmt.Errorf("%s %q: no schema for %s in the Kubernetes %s schemas", obj["kind"], Name(obj), gvk, SchemaRelease)
	}
	// Through JSON: the validator wants JSON values (json.Number, []any, ...).
	b, err := json.Marshal(dropNulls(obj))
	if err != nil {
		return fmt.Errorf("%s %q: %w", obj["kind"], Name(obj), err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s %q: %w", obj["kind"], Name(obj), err)
	}
	if err := s.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return fmt.Errorf("%s %q does not match the Kubernetes %s schema of %s:\n%s", obj["kind"], Name(obj), SchemaRelease, gvk, describe(ve))
		}
		return fmt.Errorf("%s %q: %w", obj["kind"], Name(obj), err)
	}
	return nil
}

// ValidateAll validates every object and joins the errors.
func (v *Validator) ValidateAll(objs []map[string]any) error {
	var errs []error
	for _, o := range objs {
		if err := v.Validate(o); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// describe lists the leaf errors as "  /json/pointer: message".
func describe(ve *jsonschema.ValidationError) string {
	var lines []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			lines = append(lines, fmt.Sprintf("  /%s: %s", strings.Join(e.InstanceLocation, "/"), e.ErrorKind.LocalizedString(printer)))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func dropNulls(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			if x != nil {
				out[k] = dropNulls(x)
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = dropNulls(x)
		}
		return out
	}
	return v
}

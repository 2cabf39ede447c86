// Package strictyaml decodes a YAML settings file into a Go struct
// strictly, so that no setting changes silently: every key must name a
// field (unless unknown keys are allowed), a key may appear once, integer
// fields take integers only (not 1.5, not "3"), booleans true or false
// only, numbers numbers only, and an empty value is refused where it would
// leave the default in place. An error names the file, the line and the
// key, e.g. `job.yaml line 4: batch: 1.5 is not an integer`.
//
// It checks the document against the target's type first and then decodes
// it with gopkg.in/yaml.v3, so the values are exactly the decoder's.
package strictyaml

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxNodes bounds the values a document may hold, aliases counted each time
// they are used.
const MaxNodes = 100_000

// Error is a decoding error: Source is the file's name, Line its 1-based
// line (0: unknown), Key the setting's path (e.g. "data.train",
// "hidden[1]"; empty for the whole document) and Msg what is wrong.
type Error struct {
	Source string
	Line   int
	Key    string
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Source)
	if e.Line > 0 {
		fmt.Fprintf(&b, " line %d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Options adjust the checks.
type Options struct {
	// AllowUnknown skips keys that name no field instead of refusing them.
	AllowUnknown bool
	// Required lists, per struct type, the keys a mapping decoded into a
	// value of that type must all give (a partial mapping would leave the
	// others at zero).
	Required map[reflect.Type][]string
	// Lines, when not nil, receives the line of every key decoded, by its
	// path ("batch", "data.train", "hidden[0]"), so that a later check of
	// the decoded values can point at the line.
	Lines map[string]int
}

// Decode decodes the YAML document raw (from the file source) into v, a
// pointer to a struct whose fields keep their values where the document
// gives no key. An empty document changes nothing.
func Decode(source string, raw []byte, v any, opt Options) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &Error{Source: source, Msg: fmt.Sprintf("cannot parse the YAML: %v", r)}
		}
	}()
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("strictyaml: Decode needs a non-nil pointer, got %T", v)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil
		}
		return yamlErr(source, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == io.EOF:
	case err != nil:
		return yamlErr(source, err)
	case !isEmptyDoc(&extra):
		return &Error{Source: source, Line: extra.Line, Msg: "a second YAML document (after ---): the file must hold one"}
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if isNull(root) {
		return nil
	}
	w := &walker{source: source, opt: opt}
	if err := w.walk(root, rv.Type().Elem(), ""); err != nil {
		return err
	}
	// The document fits the type: decode it for real.
	dec = yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(!opt.AllowUnknown)
	if err := dec.Decode(v); err != nil && err != io.EOF {
		return yamlErr(source, err)
	}
	return nil
}

func isEmptyDoc(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.DocumentNode && (len(n.Content) == 0 || isNull(n.Content[0]) && n.Content[0].Value == ""))
}

// pkgPrefix is the "causal: " of a Go package's error, not for users.
var pkgPrefix = regexp.MustCompile(`^[a-z][a-z0-9]*: `)

// intLiteral is an integer too large for YAML's integers (which resolve
// it as a float): out of range, not "not an integer".
var intLiteral = regexp.MustCompile(`^[-+]?(0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+|[0-9][0-9_]*)$`)

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlErr turns a yaml.v3 error into an *Error with its line.
func yamlErr(source string, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := lineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Source: source, Line: line, Msg: m[2]}
	}
	return &Error{Source: source, Msg: msg}
}

type walker struct {
	source string
	opt    Options
	nodes  int
}

func (w *walker) errf(n *yaml.Node, key, format string, args ...any) error {
	return &Error{Source: w.source, Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

var (
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
)

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// show writes a value for a message.
func show(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:37] + "..."
	}
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 || v == "" {
		return strconv.Quote(v)
	}
	return v
}

func join(key, name string) string {
	if key == "" {
		return name
	}
	return key + "." + name
}

// walk checks node n (at path key) against the type t it will decode into,
// counting the nodes visited (aliases each time) against MaxNodes.
func (w *walker) walk(n *yaml.Node, t reflect.Type, key string) error {
	w.nodes++
	if w.nodes > MaxNodes {
		return w.errf(n, key, "more than %d values (aliases counted each time they are used)", MaxNodes)
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return w.errf(n, key, "unknown alias *%s", n.Value)
		}
		return w.walk(n.Alias, t, key)
	}
	if key != "" && w.opt.Lines != nil {
		if _, ok := w.opt.Lines[key]; !ok {
			w.opt.Lines[key] = n.Line
		}
	}
	if t.Implements(yamlUnmarshaler) || reflect.PointerTo(t).Implements(yamlUnmarshaler) {
		return nil // the type checks itself
	}
	if t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(textUnmarshaler) {
		return w.walkText(n, t, key)
	}
	switch t.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			return nil
		}
		return w.walk(n, t.Elem(), key)
	case reflect.Interface:
		return nil
	case reflect.Struct:
		return w.walkStruct(n, t, key)
	case reflect.Slice, reflect.Array:
		return w.walkList(n, t, key)
	case reflect.Map:
		return w.walkMap(n, t, key)
	}
	return w.walkScalar(n, t, key)
}

// walkText checks a value of a type that parses its own text (a duration,
// an address) by parsing it, so that the error says what is wrong with it.
func (w *walker) walkText(n *yaml.Node, t reflect.Type, key string) error {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		return w.errf(n, key, "want a single value, got %s", describe(n))
	}
	if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
		return w.errf(n, key, "%s", pkgPrefix.ReplaceAllString(err.Error(), ""))
	}
	return nil
}

// walkList checks a list for a slice or array type t (an array's length
// exactly) and each of its elements.
func (w *walker) walkList(n *yaml.Node, t reflect.Type, key string) error {
	if isNull(n) {
		return w.errf(n, key, "no value: give a list like [a, b] ([] for none), or remove the key")
	}
	if n.Kind != yaml.SequenceNode {
		return w.errf(n, key, "%s is not a list (want e.g. [a, b])", show(n))
	}
	if t.Kind() == reflect.Array && len(n.Content) != t.Len() {
		return w.errf(n, key, "want a list of %d values, got %d", t.Len(), len(n.Content))
	}
	for i, c := range n.Content {
		if err := w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", key, i)); err != nil {
			return err
		}
	}
	return nil
}

// walkMap checks a mapping for a map type t: plain keys, each given once,
// and each value.
func (w *walker) walkMap(n *yaml.Node, t reflect.Type, key string) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return w.errf(n, key, "%s is not a mapping (want key: value pairs)", show(n))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return w.errf(k, key, "a key must be a plain name, got %s", describe(k))
		}
		if prev, dup := seen[k.Value]; dup {
			return w.errf(k, join(key, k.Value), "given twice (first at line %d)", prev)
		}
		seen[k.Value] = k.Line
		if err := w.walk(v, t.Elem(), join(key, k.Value)); err != nil {
			return err
		}
	}
	return nil
}

// walkScalar checks a single value for a scalar type t: integers in range
// (an integer literal too large for YAML's int is out of range, not "not
// an integer"), numbers, booleans; any scalar reads as a string.
func (w *walker) walkScalar(n *yaml.Node, t reflect.Type, key string) error {
	if n.Kind != yaml.ScalarNode {
		return w.errf(n, key, "want a single value, got %s", describe(n))
	}
	if isNull(n) {
		return w.errf(n, key, "no value: give %s, or remove the key", want(t))
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Tag != "!!int" && !(n.Tag == "!!float" && intLiteral.MatchString(n.Value)) {
			return w.errf(n, key, "%s is not an integer", show(n))
		}
		var x int64
		if err := n.Decode(&x); err != nil || reflect.Zero(t).OverflowInt(x) {
			return w.errf(n, key, "%s is out of range (want an integer from %d to %d)", show(n), minInt(t), maxInt(t))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if n.Tag != "!!int" && !(n.Tag == "!!float" && intLiteral.MatchString(n.Value)) {
			return w.errf(n, key, "%s is not an integer", show(n))
		}
		var x uint64
		if err := n.Decode(&x); err != nil || reflect.Zero(t).OverflowUint(x) {
			return w.errf(n, key, "%s is out of range (want an integer from 0 to %d)", show(n), uint64(math.MaxUint64)>>(64-t.Bits()))
		}
	case reflect.Float32, reflect.Float64:
		if n.Tag != "!!int" && n.Tag != "!!float" {
			return w.errf(n, key, "%s is not a number", show(n))
		}
	case reflect.Bool:
		if n.Tag != "!!bool" {
			return w.errf(n, key, "%s is not true or false", show(n))
		}
	case reflect.String:
		// Any scalar reads as its text.
	default:
		return w.errf(n, key, "cannot be set in a file")
	}
	return nil
}

func orWhole(key string) string {
	if key == "" {
		return "the file"
	}
	return key
}

func minInt(t reflect.Type) int64 { return math.MinInt64 >> (64 - t.Bits()) }
func maxInt(t reflect.Type) int64 { return math.MaxInt64 >> (64 - t.Bits()) }

// describe names a node's kind for a message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	if isNull(n) {
		return "no value"
	}
	return show(n)
}

// want says what a scalar type takes, for messages.
func want(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	}
	return "a value"
}

func (w *walker) walkStruct(n *yaml.Node, t reflect.Type, key string) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		if key == "" {
			return w.errf(n, key, "want key: value pairs (like batch: 512), got %s", describe(n))
		}
		return w.errf(n, key, "%s is not a mapping (want key: value pairs)", describe(n))
	}
	fields, order := structFields(t)
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
			return w.errf(k, key, "a key must be a plain name, got %s (anchors may be used as values, not merged with <<)", describe(k))
		}
		name := k.Value
		path := join(key, name)
		if prev, dup := seen[name]; dup {
			return w.errf(k, path, "given twice (first at line %d)", prev)
		}
		seen[name] = k.Line
		ft, ok := fields[name]
		if !ok {
			if w.opt.AllowUnknown {
				continue
			}
			msg := fmt.Sprintf("unknown key %q", path)
			if s := Suggest(name, order); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", join(key, s))
			}
			where := "the file"
			if key != "" {
				where = key
			}
			return w.errf(k, "", "%s; the keys of %s are %s", msg, where, strings.Join(order, ", "))
		}
		if err := w.walk(v, ft, path); err != nil {
			return err
		}
	}
	for _, req := range w.opt.Required[t] {
		if _, ok := seen[req]; !ok {
			return w.errf(n, key, "%s missing: %s needs %s", req, orWhole(key), strings.Join(w.opt.Required[t], " and "))
		}
	}
	return nil
}

// structFields maps the YAML keys of struct type t (inline fields
// flattened, as yaml.v3 does) to their types, and lists the keys in order.
func structFields(t reflect.Type) (map[string]reflect.Type, []string) {
	fields := map[string]reflect.Type{}
	var order []string
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.PkgPath != "" && !f.Anonymous {
				continue
			}
			tag := f.Tag.Get("yaml")
			if tag == "-" {
				continue
			}
			parts := strings.Split(tag, ",")
			inline := false
			for _, p := range parts[1:] {
				if p == "inline" {
					inline = true
				}
			}
			if inline {
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					add(ft)
				}
				continue
			}
			if f.PkgPath != "" {
				continue
			}
			name := parts[0]
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			if _, dup := fields[name]; !dup {
				order = append(order, name)
			}
			fields[name] = f.Type
		}
	}
	add(t)
	return fields, order
}

// Suggest finds the known name closest to an unknown one: the same up to
// case and '-' for '_', a small typo, one a prefix of the other, or the
// initials of its words (learning_rate: lr). It returns "" when none is
// close.
func Suggest(name string, known []string) string {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	n := norm(name)
	for _, k := range known {
		if norm(k) == n {
			return k
		}
	}
	best, bestD := "", 3
	if len(n) <= 4 {
		bestD = 2
	}
	for _, k := range known {
		if d := Levenshtein(n, norm(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return best
	}
	var cands []string
	for _, k := range known {
		nk := norm(k)
		if (len(nk) >= 2 && strings.HasPrefix(n, nk)) || (len(n) >= 2 && strings.HasPrefix(nk, n)) ||
			(len(nk) >= 3 && strings.HasSuffix(n, nk)) || (len(n) >= 3 && strings.HasSuffix(nk, n)) || initials(n) == nk {
			cands = append(cands, k)
		}
	}
	if len(cands) > 0 {
		sort.SliceStable(cands, func(i, j int) bool { return len(cands[i]) > len(cands[j]) })
		return cands[0]
	}
	return ""
}

func initials(s string) string {
	var b strings.Builder
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return r == '_' || r == '-' }) {
		b.WriteByte(w[0])
	}
	return b.String()
}

// Levenshtein is the edit distance between a and b (bytes).
func Levenshtein(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

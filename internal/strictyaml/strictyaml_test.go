package strictyaml

import (
	"reflect"
	"strings"
	"testing"
)

type inner struct {
	A float64 `yaml:"a"`
	B float64 `yaml:"b"`
}

type settings struct {
	N     int            `yaml:"n"`
	U     uint64         `yaml:"u"`
	On    bool           `yaml:"on"`
	Name  string         `yaml:"name"`
	List  []int          `yaml:"list"`
	Pair  *inner         `yaml:"pair,omitempty"`
	M     map[string]int `yaml:"m"`
	Embed `yaml:",inline"`
	Skip  int             `yaml:"-"`
	Nest  [][][][][][]int `yaml:"nest"`
}

type Embed struct {
	Deep int `yaml:"deep"`
}

func TestDecode(t *testing.T) {
	opt := Options{Required: map[reflect.Type][]string{reflect.TypeFor[inner](): {"a", "b"}}}
	for _, c := range []struct{ in, want string }{
		{"n: 1.5", "f.yaml line 1: n: 1.5 is not an integer"},
		{"n: 99999999999999999999", "n: 99999999999999999999 is out of range"},
		{"u: -1", "u: -1 is out of range"},
		{"on: yes", "on: yes is not true or false"},
		{"list: [1, a]", "list[1]: a is not an integer"},
		{"pair: {a: 1}", "pair: b missing: pair needs a and b"},
		{"pair: 3", "pair: 3 is not a mapping"},
		{"m: {x: 1, x: 2}", "m.x: given twice"},
		{"deep: 1\ndeep: 2", "line 2: deep: given twice (first at line 1)"},
		{"skip: 1", `unknown key "skip"`},
		{"- 1\n- 2", "want key: value pairs"},
		{"n: &a 1\nu: *a\nname: *a\nlist: [*a, *a]", ""},
		{"a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nlist: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]", "unknown key"},
		{"n: 1\n---\nn: 2", "a second YAML document"},
		{"n: 1\n---\n", ""},
		{"", ""},
	} {
		var s settings
		err := Decode("f.yaml", []byte(c.in), &s, opt)
		if c.want == "" {
			if err != nil {
				t.Errorf("%q: %v", c.in, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.in, err, c.want)
		}
	}
	// An alias bomb is refused by the node budget, not expanded.
	bomb := "a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nnest: [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]"
	var s settings
	if err := Decode("f.yaml", []byte(bomb), &s, Options{AllowUnknown: true}); err == nil || !strings.Contains(err.Error(), "more than 100000 values") {
		t.Errorf("alias bomb: %v", err)
	}
	lines := map[string]int{}
	s = settings{N: 7}
	if err := Decode("f.yaml", []byte("name: x\nlist: [1, 2]\nextra: 1\n"), &s, Options{AllowUnknown: true, Lines: lines}); err != nil {
		t.Fatal(err)
	}
	if s.N != 7 || s.Name != "x" || len(s.List) != 2 || lines["list[1]"] != 2 || lines["name"] != 1 {
		t.Fatalf("decoded %+v, lines %v", s, lines)
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"batch", "lr", "max_epochs", "hidden", "weight_decay"}
	for in, want := range map[string]string{
		"batchsize": "batch", "learning_rate": "lr", "max-epochs": "max_epochs", "epochs": "max_epochs",
		"hiden": "hidden", "weight-decay": "weight_decay", "zzz": "",
	} {
		if got := Suggest(in, known); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

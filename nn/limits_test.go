package nn

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestValidateSizeLimits(t *testing.T) {
	cases := []struct {
		dims []int
		want []string
	}{
		{[]int{4096, 1000000000, 1}, []string{"hidden [1000000000] (input dimension 4096)", "4.1e12 parameters", "limit of 268435456", "1 GiB of float32"}},
		{[]int{4096, 65536, 1}, []string{"hidden [65536]", "268566529 parameters"}},
		{[]int{8, 100000, 1}, []string{"hidden[0] = 100000", "limit of 65536"}},
		{[]int{100000, 1}, []string{"input dimension = 100000"}},
		{[]int{8, 0, 1}, []string{"hidden[0] = 0"}},
		{[]int{8, -5, 1}, []string{"hidden[0] = -5"}},
		{append(append([]int{8}, make([]int, 70)...), 1), []string{"71 linear layers"}},
	}
	for _, c := range cases {
		for i := 1; i < len(c.dims)-1; i++ {
			if c.dims[i] == 0 && len(c.dims) > 10 {
				c.dims[i] = 2
			}
		}
		err := Config{Dims: c.dims, Slope: 0.01}.Validate()
		if err == nil || !errors.Is(err, ErrConfig) {
			t.Errorf("%v: %v", c.dims[:min(len(c.dims), 4)], err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %q lacks %q", c.dims[:min(len(c.dims), 4)], err, w)
			}
		}
	}
	if err := DefaultConfig(4096).Validate(); err != nil {
		t.Fatal(err)
	}
	if err := DefaultConfig(4096).CheckRows(4096); err != nil {
		t.Fatal(err)
	}
	if err := (Config{Dims: []int{65536, 8192, 1}, Slope: 0.01}).CheckRows(1 << 20); err == nil || !strings.Contains(err.Error(), "activations") {
		t.Fatalf("CheckRows: %v", err)
	}
}

// A model file whose JSON claims a huge shape is refused before anything of
// that size is allocated, and so is one whose tensors do not have the
// shapes its JSON claims.
func TestLoadRefusesHugeOrMismatchedShape(t *testing.T) {
	dir := t.TempDir()
	m, err := New(Config{Dims: []int{4, 3, 1}, Slope: 0.01}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := Save(dir, "reward", m, []int{-10, -10, -10, -10}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Load(filepath.Join(dir, "reward.json")); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "reward.json")
	orig, _ := os.ReadFile(cfgPath)
	for _, c := range []struct {
		dims string
		want string
	}{
		{`[4, 1000000000, 1]`, "parameters, more than the limit"},
		{`[4, 60000, 5000, 1]`, "parameters, more than the limit"},
		{`[4, 60000, 1]`, "shape"},  // within the limits, not the file's shapes
		{`[4000, 3, 1]`, "shape"},   // the input dimension differs
		{`[4, 3, 1, 1]`, "missing"}, // one layer more than the file
	} {
		bad := strings.Replace(string(orig), `"dims": [`, `"dims": `+c.dims+`, "old": [`, 1)
		if err := os.WriteFile(cfgPath, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		_, _, _, err := Load(cfgPath)
		runtime.ReadMemStats(&ms1)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("dims %s: got %v, want %q", c.dims, err, c.want)
		}
		if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 16<<20 {
			t.Errorf("dims %s: allocated %d bytes before refusing", c.dims, d)
		}
	}
	// The weights must be a file next to the JSON.
	bad := strings.Replace(string(orig), `"weights": "reward.safetensors"`, `"weights": "../../etc/passwd"`, 1)
	os.WriteFile(cfgPath, []byte(bad), 0o644)
	if _, _, _, err := Load(cfgPath); err == nil || !strings.Contains(err.Error(), "next to it") {
		t.Errorf("weights outside the directory: %v", err)
	}
}

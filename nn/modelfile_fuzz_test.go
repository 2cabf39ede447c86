package nn

import (
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// FuzzModelFile feeds a model's two files (the JSON config and the
// safetensors weights) to Decode, and what it accepts to Load from
// temporary files. Invariants: a model or an error, never a panic;
// allocation bounded by the input's size (a file that claims a huge shape
// is refused before anything of that size is allocated); an accepted model
// has the shape its config claims, and Load agrees with Decode.
func FuzzModelFile(f *testing.F) {
	dir := f.TempDir()
	m, err := New(Config{Dims: []int{4, 3, 2, 1}, Slope: 0.01}, 7)
	if err != nil {
		f.Fatal(err)
	}
	if err := Save(dir, "reward", m, []int{-14, -15, -3, 0}, map[string]string{"method": "naive"}); err != nil {
		f.Fatal(err)
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, "reward.json"))
	w, _ := os.ReadFile(filepath.Join(dir, "reward.safetensors"))
	f.Add(cfg, w)
	f.Add([]byte(strings.Replace(string(cfg), `"dims": [`, `"dims": [4, 1000000000, 1], "was": [`, 1)), w)
	f.Add([]byte(strings.Replace(string(cfg), `"dims": [`, `"dims": [4, 60000, 1], "was": [`, 1)), w)
	f.Add([]byte(`{"architecture":"mlp-leakyrelu","config":{"dims":[2,1],"leaky_slope":0},"weights":"w.safetensors"}`), w)
	f.Add(cfg, w[:len(w)/2])
	f.Add(cfg, []byte{})
	f.Add([]byte("{}"), []byte("\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, config, weights []byte) {
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		m, xexp, fc, err := Decode(config, weights)
		runtime.ReadMemStats(&ms1)
		if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 64<<20+64*uint64(len(config)+len(weights)) {
			t.Fatalf("allocated %d bytes for %d bytes of input", d, len(config)+len(weights))
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if len(m.Params) != fc.Config.NumParams() || (xexp != nil && len(xexp) != fc.Config.Dims[0]) {
			t.Fatalf("model of %d parameters for dims %v, x_exp %d", len(m.Params), fc.Config.Dims, len(xexp))
		}
		dir := t.TempDir()
		name := "model.json"
		if fc.Weights == name {
			name = "config.json"
		}
		if os.WriteFile(filepath.Join(dir, fc.Weights), weights, 0o644) != nil {
			return // a name the file system refuses
		}
		if err := os.WriteFile(filepath.Join(dir, name), config, 0o644); err != nil {
			t.Fatal(err)
		}
		m2, _, _, err := Load(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("Decode accepts, Load refuses: %v", err)
		}
		for i := range m.Params {
			if math.Float32bits(m.Params[i]) != math.Float32bits(m2.Params[i]) {
				t.Fatalf("Load and Decode differ at parameter %d", i)
			}
		}
	})
}

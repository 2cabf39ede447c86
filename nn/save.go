package nn

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/causalrm/causalrm/internal/atomicfile"
	"github.com/causalrm/causalrm/internal/safetensors"
)

// FileConfig is the JSON file saved next to a model's safetensors: it names
// the architecture so the weights can be loaded without code changes.
type FileConfig struct {
	Architecture string            `json:"architecture"` // "mlp-leakyrelu"
	Config       Config            `json:"config"`
	Weights      string            `json:"weights"` // file name of the safetensors
	Meta         map[string]string `json:"meta,omitempty"`
}

// tensorNames follows torch.nn.Sequential(Linear, LeakyReLU, ...) state
// dict names: layer l is module 2l.
func tensorNames(l int) (w, b string) {
	return fmt.Sprintf("%d.weight", 2*l), fmt.Sprintf("%d.bias", 2*l)
}

// Save writes dir/name.safetensors (weights, plus "x_exp", the grid the
// model's inputs are quantized onto) and dir/name.json. Both files are
// written atomically and are a pure function of the model, so equal
// models give equal bytes.
func Save(dir, name string, m *MLP, xexp []int, meta map[string]string) error {
	t := map[string]safetensors.Tensor{}
	cfg := m.Cfg
	for l := 0; l < cfg.Layers(); l++ {
		wn, bn := tensorNames(l)
		t[wn] = safetensors.FromFloat32([]int{cfg.Dims[l+1], cfg.Dims[l]}, m.Wd(l))
		t[bn] = safetensors.FromFloat32([]int{cfg.Dims[l+1]}, m.Bd(l))
	}
	if xexp != nil {
		e := make([]int64, len(xexp))
		for i, v := range xexp {
			e[i] = int64(v)
		}
		t["x_exp"] = safetensors.FromInt64([]int{len(e)}, e)
	}
	wfile := name + ".safetensors"
	if err := safetensors.Write(filepath.Join(dir, wfile), t, meta); err != nil {
		return err
	}
	fc := FileConfig{Architecture: "mlp-leakyrelu", Config: cfg, Weights: wfile, Meta: meta}
	b, err := json.MarshalIndent(fc, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, name+".json"), func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// MaxConfigFile bounds the size of a model's JSON file.
const MaxConfigFile = 1 << 20

// Load reads a model saved by Save, from either of its two files' paths.
// The JSON file's shape is checked against the size limits (Config.Validate)
// and the weights file's size and tensor shapes against the shape before
// the parameters are allocated, so a file claiming a huge model is refused
// rather than allocated.
func Load(path string) (*MLP, []int, *FileConfig, error) {
	base := strings.TrimSuffix(strings.TrimSuffix(path, ".json"), ".safetensors")
	raw, err := readAtMost(base+".json", MaxConfigFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load model: %w", err)
	}
	fc, err := parseFileConfig(base+".json", raw)
	if err != nil {
		return nil, nil, nil, err
	}
	wpath := filepath.Join(filepath.Dir(base), fc.Weights)
	// The weights file holds at most 8 bytes per value (F64 or I64) after
	// its header: anything larger is not this model's file.
	limit := 8 + safetensors.MaxHeaderSize + 8*(int64(fc.Config.NumParams())+int64(fc.Config.Dims[0]))
	wraw, err := readAtMost(wpath, limit)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load model %s.json: weights: %w", base, err)
	}
	m, xexp, err := decodeWeights(fc, wpath, wraw)
	if err != nil {
		return nil, nil, nil, err
	}
	return m, xexp, fc, nil
}

// Decode reads a model from the contents of its two files: the JSON file
// Save writes (name.json) and the safetensors file it names. It applies the
// checks of Load.
func Decode(config, weights []byte) (*MLP, []int, *FileConfig, error) {
	if len(config) > MaxConfigFile {
		return nil, nil, nil, fmt.Errorf("load model: the JSON file has %d bytes, more than the limit of %d", len(config), MaxConfigFile)
	}
	fc, err := parseFileConfig("model.json", config)
	if err != nil {
		return nil, nil, nil, err
	}
	m, xexp, err := decodeWeights(fc, fc.Weights, weights)
	if err != nil {
		return nil, nil, nil, err
	}
	return m, xexp, fc, nil
}

// readAtMost reads a file of at most limit bytes.
func readAtMost(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s has %d bytes, more than the %d its model can need", path, st.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s grew past %d bytes while being read", path, limit)
	}
	return b, nil
}

// parseFileConfig decodes and checks a model's JSON file.
func parseFileConfig(name string, raw []byte) (*FileConfig, error) {
	var fc FileConfig
	if err := json.Unmarshal(raw, &fc); err != nil {
		return nil, fmt.Errorf("load model %s: %w", name, err)
	}
	if fc.Architecture != "mlp-leakyrelu" {
		return nil, fmt.Errorf("load model %s: unknown architecture %q (want mlp-leakyrelu)", name, fc.Architecture)
	}
	if err := fc.Config.Validate(); err != nil {
		return nil, fmt.Errorf("load model %s: %w", name, err)
	}
	if fc.Weights == "" || fc.Weights != filepath.Base(fc.Weights) || fc.Weights == "." || fc.Weights == ".." ||
		strings.ContainsAny(fc.Weights, `/\`) {
		return nil, fmt.Errorf("load model %s: weights %q: want the name of a file next to it, like reward.safetensors", name, fc.Weights)
	}
	return &fc, nil
}

// minXExp and maxXExp bound the grid exponents of float32 inputs
// (GridExp of the smallest and largest float32 magnitudes).
const (
	minXExp = -149 - XBits
	maxXExp = 128 - XBits
)

// decodeWeights checks every tensor's dtype and shape against the config,
// then allocates the parameters and fills them.
func decodeWeights(fc *FileConfig, name string, raw []byte) (*MLP, []int, error) {
	tensors, _, err := safetensors.Decode(name, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("load model %s: %w", name, err)
	}
	cfg := fc.Config
	type want struct {
		name  string
		shape []int
	}
	var wants []want
	for l := 0; l < cfg.Layers(); l++ {
		wn, bn := tensorNames(l)
		wants = append(wants, want{wn, []int{cfg.Dims[l+1], cfg.Dims[l]}}, want{bn, []int{cfg.Dims[l+1]}})
	}
	for _, w := range wants {
		tt, ok := tensors[w.name]
		if !ok {
			return nil, nil, fmt.Errorf("load model %s: tensor %q missing", name, w.name)
		}
		if !slices.Equal(tt.Shape, w.shape) {
			return nil, nil, fmt.Errorf("load model %s: tensor %q has shape %v, the config's dims %v want %v", name, w.name, tt.Shape, cfg.Dims, w.shape)
		}
		if n := safetensors.DTypeSize(tt.DType); n == 0 || len(tt.Data) != n*tt.NumElements() {
			return nil, nil, fmt.Errorf("load model %s: tensor %q: dtype %q with %d bytes for shape %v", name, w.name, tt.DType, len(tt.Data), tt.Shape)
		}
	}
	var xexp []int
	if tt, ok := tensors["x_exp"]; ok {
		if !slices.Equal(tt.Shape, []int{cfg.Dims[0]}) {
			return nil, nil, fmt.Errorf("load model %s: tensor \"x_exp\" has shape %v, want [%d]", name, tt.Shape, cfg.Dims[0])
		}
		v, err := tt.Int64s()
		if err != nil {
			return nil, nil, fmt.Errorf("load model %s: tensor \"x_exp\": %w", name, err)
		}
		xexp = make([]int, len(v))
		for i, e := range v {
			if e < minXExp || e > maxXExp {
				return nil, nil, fmt.Errorf("load model %s: tensor \"x_exp\"[%d] = %d: want %d..%d", name, i, e, minXExp, maxXExp)
			}
			xexp[i] = int(e)
		}
	}
	m := wrap(cfg, make([]float32, cfg.NumParams()))
	for l := 0; l < cfg.Layers(); l++ {
		wn, bn := tensorNames(l)
		for _, p := range []struct {
			name string
			dst  []float32
		}{{wn, m.Wd(l)}, {bn, m.Bd(l)}} {
			v, err := tensors[p.name].Float32s()
			if err != nil {
				return nil, nil, fmt.Errorf("load model %s: tensor %q: %w", name, p.name, err)
			}
			if len(v) != len(p.dst) {
				return nil, nil, fmt.Errorf("load model %s: tensor %q has %d values, config wants %d", name, p.name, len(v), len(p.dst))
			}
			copy(p.dst, v)
		}
	}
	return m, xexp, nil
}

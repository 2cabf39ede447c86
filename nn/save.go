package nn

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

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
	return safetensors.WriteAtomic(filepath.Join(dir, name+".json"), func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

// Load reads a model saved by Save, from either of its two files' paths.
func Load(path string) (*MLP, []int, *FileConfig, error) {
	base := strings.TrimSuffix(strings.TrimSuffix(path, ".json"), ".safetensors")
	raw, err := os.ReadFile(base + ".json")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load model: %w", err)
	}
	var fc FileConfig
	if err := json.Unmarshal(raw, &fc); err != nil {
		return nil, nil, nil, fmt.Errorf("load model %s.json: %w", base, err)
	}
	if fc.Architecture != "mlp-leakyrelu" {
		return nil, nil, nil, fmt.Errorf("load model %s.json: unknown architecture %q", base, fc.Architecture)
	}
	if err := fc.Config.Validate(); err != nil {
		return nil, nil, nil, fmt.Errorf("load model %s.json: %w", base, err)
	}
	tensors, _, err := safetensors.Read(filepath.Join(filepath.Dir(base), fc.Weights))
	if err != nil {
		return nil, nil, nil, err
	}
	cfg := fc.Config
	m := wrap(cfg, make([]float32, cfg.NumParams()))
	for l := 0; l < cfg.Layers(); l++ {
		wn, bn := tensorNames(l)
		for _, p := range []struct {
			name string
			dst  []float32
		}{{wn, m.Wd(l)}, {bn, m.Bd(l)}} {
			tt, ok := tensors[p.name]
			if !ok {
				return nil, nil, nil, fmt.Errorf("load model %s: tensor %q missing", fc.Weights, p.name)
			}
			v, err := tt.Float32s()
			if err != nil {
				return nil, nil, nil, fmt.Errorf("load model %s: tensor %q: %w", fc.Weights, p.name, err)
			}
			if len(v) != len(p.dst) {
				return nil, nil, nil, fmt.Errorf("load model %s: tensor %q has %d values, config wants %d", fc.Weights, p.name, len(v), len(p.dst))
			}
			copy(p.dst, v)
		}
	}
	var xexp []int
	if tt, ok := tensors["x_exp"]; ok {
		v, err := tt.Int64s()
		if err != nil || len(v) != cfg.Dims[0] {
			return nil, nil, nil, fmt.Errorf("load model %s: bad x_exp tensor", fc.Weights)
		}
		for _, e := range v {
			xexp = append(xexp, int(e))
		}
	}
	return m, xexp, &fc, nil
}

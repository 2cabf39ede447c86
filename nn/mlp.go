// Package nn is the reward-model MLP of CAUSALRM.md section 2 on
// gorgonia.org/tensor: forward and analytic backward passes (an exact
// fixed-point form and a plain float32 form), PyTorch-default
// initialisation, Adam with L2 weight decay, and safetensors save/load.
package nn

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"gorgonia.org/tensor"
)

// ErrConfig reports an invalid model configuration.
var ErrConfig = errors.New("nn: invalid config")

// Config names the architecture: Dims[0] inputs, hidden widths, 1 output,
// LeakyReLU(Slope) after each hidden layer.
type Config struct {
	Dims  []int   `json:"dims"`
	Slope float64 `json:"leaky_slope"`
}

// DefaultConfig is the paper's reward model for embeddings of dimension d.
func DefaultConfig(d int) Config { return Config{Dims: []int{d, 256, 64, 1}, Slope: 0.01} }

// Validate checks the shape.
func (c Config) Validate() error {
	if len(c.Dims) < 2 {
		return fmt.Errorf("%w: dims %v: need at least input and output", ErrConfig, c.Dims)
	}
	for i, d := range c.Dims {
		if d < 1 {
			return fmt.Errorf("%w: dims[%d] = %d", ErrConfig, i, d)
		}
	}
	if c.Dims[len(c.Dims)-1] != 1 {
		return fmt.Errorf("%w: last dim must be 1 (a scalar logit), got %d", ErrConfig, c.Dims[len(c.Dims)-1])
	}
	if c.Slope < 0 || c.Slope >= 1 || math.IsNaN(c.Slope) {
		return fmt.Errorf("%w: leaky_slope %v not in [0,1)", ErrConfig, c.Slope)
	}
	return nil
}

// Layers is the number of linear layers.
func (c Config) Layers() int { return len(c.Dims) - 1 }

// NumParams is the length of the flat parameter vector.
func (c Config) NumParams() int {
	n := 0
	for l := 0; l < c.Layers(); l++ {
		n += c.Dims[l+1]*c.Dims[l] + c.Dims[l+1]
	}
	return n
}

// Offsets gives, per layer, where W (out x in, row-major) and b start in the
// flat vector. The layout is W1, b1, W2, b2, ...
func (c Config) Offsets() (w, b []int) {
	off := 0
	for l := 0; l < c.Layers(); l++ {
		w = append(w, off)
		off += c.Dims[l+1] * c.Dims[l]
		b = append(b, off)
		off += c.Dims[l+1]
	}
	return w, b
}

// MLP holds the parameters in one flat float32 vector; W and B are
// gorgonia tensors viewing it, so the optimizer and the all-reduce work on
// one contiguous slice.
type MLP struct {
	Cfg    Config
	Params []float32
	W, B   []*tensor.Dense
}

// New returns a model initialised like torch.nn.Linear: weights and biases
// uniform in +-1/sqrt(fan_in), drawn in the order W1, b1, W2, b2, ... from a
// PCG generator seeded with seed.
func New(cfg Config, seed uint64) (*MLP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := wrap(cfg, make([]float32, cfg.NumParams()))
	rng := rand.New(rand.NewPCG(seed, 0x6e6e2d696e6974)) // "nn-init"
	for l := 0; l < cfg.Layers(); l++ {
		bound := 1 / math.Sqrt(float64(cfg.Dims[l]))
		for _, t := range []*tensor.Dense{m.W[l], m.B[l]} {
			v := t.Data().([]float32)
			for i := range v {
				v[i] = float32((2*rng.Float64() - 1) * bound)
			}
		}
	}
	return m, nil
}

// wrap builds the tensor views over params.
func wrap(cfg Config, params []float32) *MLP {
	m := &MLP{Cfg: cfg, Params: params}
	wo, bo := cfg.Offsets()
	for l := 0; l < cfg.Layers(); l++ {
		in, out := cfg.Dims[l], cfg.Dims[l+1]
		m.W = append(m.W, tensor.New(tensor.WithShape(out, in), tensor.WithBacking(params[wo[l]:wo[l]+out*in])))
		m.B = append(m.B, tensor.New(tensor.WithShape(out), tensor.WithBacking(params[bo[l]:bo[l]+out])))
	}
	return m
}

// Clone returns a deep copy.
func (m *MLP) Clone() *MLP {
	return wrap(m.Cfg, append([]float32(nil), m.Params...))
}

// Wd returns layer l's weights as a row-major out x in slice.
func (m *MLP) Wd(l int) []float32 { return m.W[l].Data().([]float32) }

// Bd returns layer l's bias.
func (m *MLP) Bd(l int) []float32 { return m.B[l].Data().([]float32) }

// LeakyReLU with the configured slope.
func (c Config) leaky(z float64) float64 {
	if z > 0 {
		return z
	}
	return c.Slope * z
}

func (c Config) leakyGrad(z float64) float64 {
	if z > 0 {
		return 1
	}
	return c.Slope
}

// Package nn is the reward-model MLP of docs/method.md ("Models") on
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

// Size limits of a model. A config or a model file beyond them is refused
// by Validate before anything of that size is allocated: every process of a
// job holds several copies of the parameters (weights, gradient, Adam's two
// moments) and activations of batch x width.
const (
	// MaxWidth bounds every dimension: the input and each layer's units.
	MaxWidth = 1 << 16
	// MaxLayers bounds the number of linear layers.
	MaxLayers = 64
	// MaxParams bounds the parameter count: 2^28 is 1 GiB of float32 per
	// copy.
	MaxParams = 1 << 28
	// MaxActivations bounds rows x (sum of the dimensions) of one pass:
	// 4 GiB of float32 per copy.
	MaxActivations = 1 << 30
)

// Validate checks the shape and the size limits. The error names the part
// of the shape at fault: the input dimension, hidden[i] or the output.
func (c Config) Validate() error {
	if len(c.Dims) < 2 {
		return fmt.Errorf("%w: dims %v: need at least input and output", ErrConfig, c.Dims)
	}
	if l := len(c.Dims) - 1; l > MaxLayers {
		return fmt.Errorf("%w: %s: %d linear layers, more than the limit of %d", ErrConfig, c.describe(), l, MaxLayers)
	}
	for i, d := range c.Dims {
		if d < 1 {
			return fmt.Errorf("%w: %s = %d: want >= 1", ErrConfig, c.dimName(i), d)
		}
	}
	if c.Dims[len(c.Dims)-1] != 1 {
		return fmt.Errorf("%w: last dim must be 1 (a scalar logit), got %d", ErrConfig, c.Dims[len(c.Dims)-1])
	}
	if p := ParamCount(c.Dims); p > MaxParams {
		return fmt.Errorf("%w: %s: %s parameters, more than the limit of %d (1 GiB of float32 per copy)",
			ErrConfig, c.describe(), FormatCount(p), MaxParams)
	}
	for i, d := range c.Dims {
		if d > MaxWidth {
			return fmt.Errorf("%w: %s = %d: more than the limit of %d", ErrConfig, c.dimName(i), d, MaxWidth)
		}
	}
	if c.Slope < 0 || c.Slope >= 1 || math.IsNaN(c.Slope) {
		return fmt.Errorf("%w: leaky_slope %v not in [0,1)", ErrConfig, c.Slope)
	}
	return nil
}

// CheckRows refuses a pass over rows rows whose activations (rows x the sum
// of the dimensions) exceed MaxActivations. c must be valid.
func (c Config) CheckRows(rows int) error {
	sum := 0.0
	for _, d := range c.Dims {
		sum += float64(d)
	}
	if a := float64(rows) * sum; a > MaxActivations {
		return fmt.Errorf("%w: %s: %d rows per pass are %s activations, more than the limit of %d (4 GiB of float32)",
			ErrConfig, c.describe(), rows, FormatCount(a), MaxActivations)
	}
	return nil
}

// ParamCount is the parameter count of an MLP of the given dimensions
// (weights and biases), in float64 so that any int dimensions give a
// finite count without overflow.
func ParamCount(dims []int) float64 {
	n := 0.0
	for l := 0; l+1 < len(dims); l++ {
		n += float64(dims[l+1])*float64(dims[l]) + float64(dims[l+1])
	}
	return n
}

// FormatCount writes a count briefly: 268435456 below 10^9, else 4.1e12.
func FormatCount(v float64) string {
	if v < 1e9 {
		return fmt.Sprintf("%.0f", v)
	}
	e := int(math.Floor(math.Log10(v)))
	m := v / math.Pow(10, float64(e))
	if m >= 9.95 {
		m, e = m/10, e+1
	}
	return fmt.Sprintf("%.1fe%d", m, e)
}

// dimName names Dims[i] for messages.
func (c Config) dimName(i int) string {
	switch i {
	case 0:
		return "input dimension"
	case len(c.Dims) - 1:
		return "output dimension"
	}
	return fmt.Sprintf("hidden[%d]", i-1)
}

// describe names the shape for messages: hidden [256 64] (input dimension 4096).
func (c Config) describe() string {
	if len(c.Dims) < 2 {
		return fmt.Sprintf("dims %v", c.Dims)
	}
	hidden := c.Dims[1 : len(c.Dims)-1]
	if len(hidden) > 8 {
		return fmt.Sprintf("%d hidden layers (input dimension %d)", len(hidden), c.Dims[0])
	}
	return fmt.Sprintf("hidden %v (input dimension %d)", hidden, c.Dims[0])
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

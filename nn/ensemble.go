package nn

import (
	"fmt"
	"slices"
)

// Average returns one MLP whose logit is the mean of the models' logits:
// their hidden layers side by side (the first layer's rows stacked, each
// later hidden layer block-diagonal) and the output layer's weights
// divided by their number, its bias their mean. The models must share a
// config; the result is an ordinary model of K times the hidden widths,
// so it saves, loads and runs like any other (in PyTorch too).
func Average(models ...*MLP) (*MLP, error) {
	k := len(models)
	if k == 0 {
		return nil, fmt.Errorf("%w: no models to average", ErrConfig)
	}
	cfg := models[0].Cfg
	for _, m := range models[1:] {
		if !slices.Equal(m.Cfg.Dims, cfg.Dims) || m.Cfg.Slope != cfg.Slope {
			return nil, fmt.Errorf("%w: averaging models of dims %v and %v", ErrConfig, cfg.Dims, m.Cfg.Dims)
		}
	}
	L := cfg.Layers()
	if k == 1 || L == 1 { // one model, or a linear one: the mean of the parameters is the mean logit
		avg := models[0].Clone()
		for i := range avg.Params {
			var s float32
			for _, m := range models {
				s += m.Params[i]
			}
			avg.Params[i] = s / float32(k)
		}
		return avg, nil
	}
	dims := make([]int, len(cfg.Dims))
	for i, d := range cfg.Dims {
		dims[i] = d
		if i > 0 && i < L {
			dims[i] = k * d
		}
	}
	out := Config{Dims: dims, Slope: cfg.Slope}
	if err := out.Validate(); err != nil {
		return nil, err
	}
	avg := wrap(out, make([]float32, out.NumParams()))
	inv := 1 / float32(k)
	for l := range L {
		in, o := cfg.Dims[l], cfg.Dims[l+1]
		W, B := avg.Wd(l), avg.Bd(l)
		cols := out.Dims[l] // the merged layer's input width
		for j, m := range models {
			w, b := m.Wd(l), m.Bd(l)
			if l == L-1 { // the output: one row, every model's units side by side
				for c := range in {
					W[j*in+c] = w[c] * inv
				}
				B[0] += b[0] * inv
				continue
			}
			colOff := j * in
			if l == 0 {
				colOff = 0 // every model reads the same input
			}
			for r := range o {
				copy(W[(j*o+r)*cols+colOff:(j*o+r)*cols+colOff+in], w[r*in:(r+1)*in])
			}
			copy(B[j*o:(j+1)*o], b)
		}
	}
	return avg, nil
}

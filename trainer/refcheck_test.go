package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/nn"
)

// refBatch is the independent side of the gradient tests: a batch's rows
// with their estimator inputs, evaluated by a plain float64 forward pass.
type refBatch struct {
	tr    *Trainer
	m     causal.Method
	model *nn.MLP
	rows  []int32 // train rows of the batch
	p, g  []float64
	norm  float64 // B, or the observed rows for naive and noise
}

func newRefBatch(tr *Trainer, st *stage, m causal.Method, model *nn.MLP, batch []int32) *refBatch {
	rb := &refBatch{tr: tr, m: m, model: model, norm: float64(len(batch))}
	if m.UsesPropensity() {
		rb.p = tr.PHatTrain
	}
	if m.UsesImputation() {
		rb.g = tr.GHatTrain
		if m.UsesFlipRates() && tr.cfg.imputation() == ImputationClean {
			// the clean-label probability g implies, written out
			r := tr.Rates
			rb.g = make([]float64, len(tr.GHatTrain))
			for i, g := range tr.GHatTrain {
				rb.g[i] = math.Min(1, math.Max(0, (g-r.Rho10)/(1-r.Rho01-r.Rho10)))
			}
		}
	}
	nobs := 0
	for _, i := range batch {
		r := st.rows[i]
		rb.rows = append(rb.rows, r)
		nobs += int(tr.ds.Train.O[r])
	}
	if m.NormalizeByObserved() {
		rb.norm = float64(nobs)
	}
	return rb
}

// each calls fn with every row's logit under params and its estimator input.
func (rb *refBatch) each(params []float64, fn func(f float64, in causal.RowInput)) {
	train := rb.tr.ds.Train
	for _, r := range rb.rows {
		fn(nn.RefForward64(rb.model.Cfg, params, toF64(train.Row(int(r)))), rowInput(train, rb.p, rb.g, r))
	}
}

// checkFD compares grad with central finite differences of obj at params
// on n random parameters and returns the first mismatch.
func checkFD(params []float64, grad []float32, obj func([]float64) float64, n int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 9))
	for k := 0; k < n; k++ {
		i := rng.IntN(len(params))
		h := 1e-5 * math.Max(1, math.Abs(params[i]))
		pp := append([]float64(nil), params...)
		pp[i] += h
		up := obj(pp)
		pp[i] -= 2 * h
		fd := (up - obj(pp)) / (2 * h)
		if got := float64(grad[i]); math.Abs(got-fd) > 2e-4*math.Abs(fd)+2e-6 {
			return fmt.Errorf("param %d: step gradient %.8g, finite difference %.8g", i, got, fd)
		}
	}
	return nil
}

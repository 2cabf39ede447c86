package nn

// Runner runs one model's forward and backward passes over batches of rows:
// the CPU Engine of this package, or a GPU engine (package gpu) that keeps
// the data and parameters on the device and gives the same bits in exact
// mode. The trainer drives either through this interface.
type Runner interface {
	Forward(x []float32, rows []int32) []float64
	Maxima(dldf []float64) []float64
	Partial(maxima []float64, dst []int64) error
	PartialFast(dldf []float64, dst []float32)
	Grad(sum []int64, maxima []float64, scale float64, grad []float32) error
	// Touch says the parameters changed (after an optimizer step).
	Touch()
	// Err is the first failure of a device the runner drives (nil on the
	// CPU): the methods without an error result record it here, and their
	// results are not to be used once it is set.
	Err() error
}

// Resident is a Runner that can keep the gradient, the parameters and
// Adam's moments on its device between steps, when nothing outside the
// process needs the gradient (one process, no all-reduce). The trainer
// then calls Keep once, Step instead of Grad and Adam.Update, and Sync
// before it reads the model's parameters.
type Resident interface {
	Runner
	// Keep makes Partial and PartialFast leave the gradient on the device
	// (dst is not written).
	Keep()
	// Step turns the last partial gradient into the gradient (exact: on
	// the grids of maxima, times scale, as Grad does; fast: times scale,
	// failing with ErrNonFinite on a NaN or Inf) and applies Adam with
	// opt's constants (opt.Advance), as Adam.Update does, on the device.
	Step(opt *Adam, maxima []float64, scale float64) error
	// Sync copies the parameters and Adam's moments back into the model
	// and opt.
	Sync(opt *Adam) error
}

// RunnerFactory makes the runner of a model; exact, xexp and batch are as
// for NewEngine.
type RunnerFactory func(m *MLP, exact bool, xexp []int, batch int) (Runner, error)

// CPURunner is the RunnerFactory of the CPU Engine.
func CPURunner(m *MLP, exact bool, xexp []int, batch int) (Runner, error) {
	return NewEngine(m, exact, xexp, batch)
}

// Err is always nil: the CPU engine has no device to fail.
func (e *Engine) Err() error { return nil }

// Grids turns reduced maxima into the per-layer grid exponents of dz and of
// the layer inputs (layer 0's inputs are XExp), as Partial and Grad use
// them. Another runner computing the same exact step uses it to agree with
// this engine on every grid.
func (e *Engine) Grids(maxima []float64) (dzExp, aExp [][]int, err error) {
	return e.grids(maxima)
}

// FwdBits, BwdBits and BackBits are the grid widths of layer l's three
// exact products (forward, weight gradient, input gradient): how the
// 52-bit budget of a float64 sum is split between the two operands.
func (e *Engine) FwdBits(l int) (int, int)  { return e.fwdBits(l) }
func (e *Engine) BwdBits(l int) (int, int)  { return e.bwdBits(l) }
func (e *Engine) BackBits(l int) (int, int) { return e.backBits(l) }

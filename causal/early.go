package causal

import "math"

// EarlyStopper tracks the best validation value of a training stage and says
// when Patience consecutive epochs have passed without a strict improvement.
// It is deterministic: ties never count as improvements, so the earliest best
// epoch is kept. The zero value (plus Patience) is ready to use; its fields
// are exported only so that a trainer can checkpoint and restore it.
type EarlyStopper struct {
	Patience  int     `json:"patience"`
	BestEpoch int     `json:"best_epoch"`
	BestVal   float64 `json:"best_val"`
	Wait      int     `json:"wait"` // epochs since the last improvement
	Seen      bool    `json:"seen"` // whether BestEpoch/BestVal hold a value
}

// Observe records the validation value of an epoch. improved is true when val
// is strictly below the best so far (the first finite-or-infinite non-NaN
// value always improves; NaN never does). stop is true once Patience
// consecutive epochs have not improved (at the first non-improvement when
// Patience <= 0).
func (e *EarlyStopper) Observe(epoch int, val float64) (improved, stop bool) {
	if !math.IsNaN(val) && (!e.Seen || val < e.BestVal) {
		e.BestEpoch, e.BestVal, e.Wait, e.Seen = epoch, val, 0, true
		return true, false
	}
	e.Wait++
	return false, e.Wait >= e.Patience
}

// Best returns the epoch and value of the best observation, or (-1, +Inf)
// before any non-NaN value was observed.
func (e *EarlyStopper) Best() (epoch int, val float64) {
	if !e.Seen {
		return -1, math.Inf(1)
	}
	return e.BestEpoch, e.BestVal
}

package trainer

// RunningLoss is the in-progress stage's train loss for observability: the
// mean train loss of the current epoch's steps so far or, at an epoch's
// first step, the last completed epoch's train loss. Valid only inside the
// step hook; ok is false elsewhere and before any step of the stage.
func (t *Trainer) RunningLoss() (loss float64, ok bool) {
	l := t.live
	if l == nil {
		return 0, false
	}
	if l.step > 0 {
		return l.trainSum / float64(l.step), true
	}
	if n := len(l.res.Train); n > 0 {
		return l.res.Train[n-1], true
	}
	return 0, false
}

// EpochLosses is the in-progress stage's name with the mean training loss
// and the validation loss of each epoch it has completed (epoch i at index
// i-1). Valid only inside the step hook ("" elsewhere); the slices are the
// trainer's own and must not be changed.
func (t *Trainer) EpochLosses() (stage string, train, val []float64) {
	l := t.live
	if l == nil {
		return "", nil, nil
	}
	return l.st.name, l.res.Train, l.res.Val
}

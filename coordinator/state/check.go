package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/causalrm/causalrm/internal/strictyaml"
	jobspec "github.com/causalrm/causalrm/job"
	"github.com/causalrm/causalrm/trainer"
)

// CheckExactlyOnce checks that log covers every step of every epoch of every
// stage exactly once: for each stage in stepsPerEpoch, epochs 1..epochs[stage]
// (1-based, as the trainer counts them)
// and steps [0, stepsPerEpoch[stage]). It names the first missing, repeated or
// unexpected step.
func CheckExactlyOnce(log []StepRange, stepsPerEpoch map[string]int, epochs map[string]int) error {
	type key struct {
		stage string
		epoch int
	}
	count := map[key][]int{}
	for _, r := range log {
		steps, ok := stepsPerEpoch[r.Stage]
		if !ok {
			return fmt.Errorf("stage %q epoch %d steps [%d,%d): unexpected stage", r.Stage, r.Epoch, r.From, r.To)
		}
		if r.Epoch < 1 || r.Epoch > epochs[r.Stage] {
			return fmt.Errorf("stage %q epoch %d: unexpected epoch (stage has %d)", r.Stage, r.Epoch, epochs[r.Stage])
		}
		if r.From < 0 || r.To > steps || r.From >= r.To {
			return fmt.Errorf("stage %q epoch %d: bad range [%d,%d) of %d steps", r.Stage, r.Epoch, r.From, r.To, steps)
		}
		k := key{r.Stage, r.Epoch}
		if count[k] == nil {
			count[k] = make([]int, steps)
		}
		for s := r.From; s < r.To; s++ {
			count[k][s]++
		}
	}
	stages := make([]string, 0, len(stepsPerEpoch))
	for st := range stepsPerEpoch {
		stages = append(stages, st)
	}
	sort.Strings(stages)
	for _, st := range stages {
		for e := 1; e <= epochs[st]; e++ {
			c := count[key{st, e}]
			for s := 0; s < stepsPerEpoch[st]; s++ {
				n := 0
				if c != nil {
					n = c[s]
				}
				if n != 1 {
					return fmt.Errorf("stage %q epoch %d step %d committed %d times, want exactly once", st, e, s, n)
				}
			}
		}
	}
	return nil
}

// MaxConfigBytes bounds a job spec's Config.
const MaxConfigBytes = 1 << 20

// checkJobConfig decodes a job spec's Config as the workers will
// (jobspec.DecodeConfig: strictly, integers must be integers, flip_rates needs
// both rates, the codec must suit the reduction) and validates its
// settings, sizes included (the model's parameter count, the activations
// of a pass). Errors name the field, e.g.
// `invalid job spec: field "config.hidden": [1000000000]: ...`.
// An empty or null Config is not checked.
func checkJobConfig(raw json.RawMessage, shards int) error {
	lines := map[string]int{}
	c, err := jobspec.DecodeConfig(raw, lines)
	var se *strictyaml.Error
	var fe *trainer.FieldError
	switch {
	case errors.Is(err, jobspec.ErrNoConfig):
		return nil
	case errors.As(err, &se) && se.Key != "":
		return specErr("config."+se.Key, "line %d: %s", se.Line, se.Msg)
	case errors.As(err, &se) && se.Line > 0:
		return specErr("config", "line %d: %s", se.Line, se.Msg)
	case errors.As(err, &fe):
		return specErr("config."+fe.Field, "%v: %s", fe.Value, fe.Want)
	case err != nil:
		return specErr("config", "%v", err)
	}
	if _, given := lines["shards"]; given && c.Shards != shards {
		return specErr("shards", "%d, but the job's config says %d", shards, c.Shards)
	}
	return nil
}

package chaos

import (
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
)

// Pause is how long one worker stood still for one generation change, as
// the worker logged it ("generation change pause": from the failure or the
// boundary's decision to the first call completed on the new ring).
type Pause struct {
	Worker     string  `json:"worker"`
	Generation uint64  `json:"generation"`
	Cause      string  `json:"cause"`
	Seconds    float64 `json:"seconds"`
}

// Class is the pause's cause as the kinds of its changes, sorted and
// joined by "+" ("join", "crash", "join+leave"); planned changes are the
// joins and leaves alone.
func (p Pause) Class() string {
	c, err := state.ParseCause(p.Cause)
	if err != nil || len(c) == 0 {
		return "unknown"
	}
	var kinds []string
	for _, ch := range c {
		kinds = append(kinds, ch.Kind.String())
	}
	sort.Strings(kinds)
	return strings.Join(slices.Compact(kinds), "+")
}

// Planned reports whether every change of the pause's cause is a join or
// a leave: the changes the target "one step + 100 ms" is about.
func (p Pause) Planned() bool {
	c, err := state.ParseCause(p.Cause)
	if err != nil || len(c) == 0 {
		return false
	}
	for _, ch := range c {
		if ch.Kind != state.ChangeJoin && ch.Kind != state.ChangeLeave {
			return false
		}
	}
	return true
}

var pauseRE = regexp.MustCompile(`msg="generation change pause".* generation=(\d+) cause=("(?:[^"\\]|\\.)*"|\S+) pause=(\S+)`)

// parsePauses reads a worker's log for its generation change pauses.
func parsePauses(worker string, log []byte) []Pause {
	var out []Pause
	for _, m := range pauseRE.FindAllSubmatch(log, -1) {
		gen, err := strconv.ParseUint(string(m[1]), 10, 64)
		if err != nil {
			continue
		}
		cause := string(m[2])
		if u, err := strconv.Unquote(cause); err == nil {
			cause = u
		}
		d, err := time.ParseDuration(string(m[3]))
		if err != nil {
			continue
		}
		out = append(out, Pause{Worker: worker, Generation: gen, Cause: cause, Seconds: d.Seconds()})
	}
	return out
}

// spread is the median, 90th percentile and maximum of v (v is sorted in
// place); ok is false for an empty v.
func spread(v []float64) (median, p90, max float64, ok bool) {
	if len(v) == 0 {
		return 0, 0, 0, false
	}
	sort.Float64s(v)
	at := func(q float64) float64 { return v[int(q*float64(len(v)-1)+0.5)] }
	return at(0.5), at(0.9), v[len(v)-1], true
}

package chaos

import (
	"context"
	"sync"
	"time"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/coordinator/state"
)

// commit is a change of the committed watermark seen by the monitor.
type commit struct {
	T    time.Time
	Step uint64
}

// monitor polls the coordinators' status (directly, never through the
// proxies a fault may cut) and keeps the committed steps over time.
type monitor struct {
	client *coordinator.Client
	every  time.Duration

	mu         sync.Mutex
	last       coordinator.Status
	have       bool
	lastErr    error
	commits    []commit
	lastChange time.Time
	first      time.Time // the first committed step (zero: none yet)
	rewinds    []state.Rewind
	leaders    []leaderChange
	finished   chan struct{} // closed when the job is done or failed
	closeOnce  sync.Once
}

type leaderChange struct {
	T      time.Time
	Leader string
}

func newMonitor(client *coordinator.Client) *monitor {
	return &monitor{client: client, every: 150 * time.Millisecond, finished: make(chan struct{}), lastChange: time.Now()}
}

// run polls until ctx ends.
func (m *monitor) run(ctx context.Context) {
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		m.poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *monitor) poll(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	st, err := m.client.Status(cctx)
	cancel()
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.lastErr = err
		return
	}
	m.lastErr = nil
	prevStep := m.last.Watermark.GlobalStep
	if !m.have || st.Watermark.GlobalStep != prevStep {
		if st.Watermark.GlobalStep > 0 || m.have {
			m.commits = append(m.commits, commit{T: now, Step: st.Watermark.GlobalStep})
			m.lastChange = now
		}
		if m.first.IsZero() && st.Watermark.GlobalStep > 0 {
			m.first = now
		}
	}
	if len(st.Rewinds) > len(m.rewinds) {
		m.rewinds = append([]state.Rewind(nil), st.Rewinds...)
	}
	if n := len(m.leaders); st.Leader != "" && (n == 0 || m.leaders[n-1].Leader != st.Leader) {
		m.leaders = append(m.leaders, leaderChange{T: now, Leader: st.Leader})
	}
	m.last, m.have = st, true
	if st.JobStatus.Phase == state.JobDone || st.JobStatus.Phase == state.JobFailed {
		m.closeOnce.Do(func() { close(m.finished) })
	}
}

// status is the last status read (ok false before the first).
func (m *monitor) status() (coordinator.Status, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last, m.have
}

func (m *monitor) leader() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last.Leader
}

// step is the committed watermark last read.
func (m *monitor) step() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last.Watermark.GlobalStep
}

// firstCommit is when the first step was seen committed.
func (m *monitor) firstCommit() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.first
}

// sinceChange is how long the watermark has not moved.
func (m *monitor) sinceChange() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return time.Since(m.lastChange)
}

// resetStall restarts the stall clock (the workers' launch).
func (m *monitor) resetStall() {
	m.mu.Lock()
	m.lastChange = time.Now()
	m.mu.Unlock()
}

func (m *monitor) history() ([]commit, []state.Rewind, []leaderChange) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]commit(nil), m.commits...), append([]state.Rewind(nil), m.rewinds...), append([]leaderChange(nil), m.leaders...)
}

// recovery is the time from a fault at tf (watermark stepAt then) to the
// next committed step that the fault could not have been before: the
// first commit at least two report intervals past stepAt (a report in
// flight at the fault covers at most one), or, when the step log was
// rewound after the fault (a restart from a checkpoint), the first commit
// past the rewind. redone is the steps the rewinds after the fault (and
// before until, the next fault, when not zero) undid.
func recovery(commits []commit, rewinds []state.Rewind, tf, until time.Time, stepAt uint64, reportEvery int) (took time.Duration, redone uint64, ok bool) {
	var rw *state.Rewind
	for i := range rewinds {
		if rewinds[i].Time >= tf.UnixNano() && (until.IsZero() || rewinds[i].Time < until.UnixNano()) {
			if rw == nil {
				rw = &rewinds[i]
			}
			if rewinds[i].From > rewinds[i].To {
				redone += rewinds[i].From - rewinds[i].To
			}
		}
	}
	for _, c := range commits {
		if c.T.Before(tf) {
			continue
		}
		if rw != nil {
			if c.T.UnixNano() > rw.Time && c.Step > rw.To {
				return c.T.Sub(tf), redone, true
			}
			continue
		}
		if c.Step >= stepAt+2*uint64(reportEvery) {
			return c.T.Sub(tf), redone, true
		}
	}
	return 0, redone, false
}

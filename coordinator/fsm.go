package coordinator

import (
	"io"
	"sync"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/hashicorp/raft"
)

type applyResult struct {
	value any
	err   error
}

// fsm is the raft FSM over state.State. changed is closed (and replaced)
// after every applied command or restore.
type fsm struct {
	mu      sync.RWMutex
	st      *state.State
	changed chan struct{}
}

func newFSM() *fsm { return &fsm{st: &state.State{}, changed: make(chan struct{})} }

func (f *fsm) Apply(l *raft.Log) any {
	c, err := state.DecodeCommand(l.Data)
	if err != nil {
		return applyResult{err: err}
	}
	f.mu.Lock()
	v, err := f.st.Apply(c)
	ch := f.changed
	f.changed = make(chan struct{})
	f.mu.Unlock()
	close(ch)
	return applyResult{value: v, err: err}
}

// read calls fn with the state under the read lock; fn must not keep it.
func (f *fsm) read(fn func(s *state.State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.st)
}

// watch returns the channel closed at the next change.
func (f *fsm) watch() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

func (f *fsm) clone() state.State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.Clone()
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	c := f.clone()
	return &fsmSnapshot{st: &c}, nil
}

func (f *fsm) Restore(r io.ReadCloser) error {
	defer r.Close()
	s, err := state.Decode(r)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.st = s
	ch := f.changed
	f.changed = make(chan struct{})
	f.mu.Unlock()
	close(ch)
	return nil
}

type fsmSnapshot struct{ st *state.State }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.st.Encode(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

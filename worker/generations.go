package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
)

// generations follows the coordinators' generations for one worker: it
// keeps every generation the watch delivers, wakes whoever waits for one,
// and ends the collective call in flight when a crash generation newer
// than the ring's arrives (the call would wait for the dead member until
// its timeout).
type generations struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	byNum   map[uint64]state.Generation
	latest  uint64
	changed chan struct{}      // closed and replaced when a generation arrives
	err     error              // the watch's error, once it ended with one
	abort   context.CancelFunc // cancels the call in flight (nil: none)
	ring    uint64             // the generation of the worker's ring
}

// watchGenerations starts the watch; stop ends it.
func watchGenerations(c Coordinator) *generations {
	ctx, cancel := context.WithCancel(context.Background())
	w := &generations{cancel: cancel, done: make(chan struct{}), byNum: map[uint64]state.Generation{}, changed: make(chan struct{})}
	go w.watch(ctx, c)
	return w
}

func (w *generations) watch(ctx context.Context, c Coordinator) {
	defer close(w.done)
	gens, errs := c.WatchGenerations(ctx, 0)
	for {
		select {
		case g, ok := <-gens:
			if !ok {
				return
			}
			w.mu.Lock()
			w.byNum[g.Number] = g
			w.latest = max(w.latest, g.Number)
			w.wakeLocked()
			if g.Number > w.ring && reconciles(g) && w.abort != nil {
				w.abort()
			}
			w.mu.Unlock()
		case err := <-errs:
			w.mu.Lock()
			w.err = err
			w.wakeLocked()
			if w.abort != nil {
				w.abort()
			}
			w.mu.Unlock()
			return
		case <-ctx.Done():
			return
		}
	}
}

func (w *generations) wakeLocked() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// untilNewer is ctx, also cancelled when a generation newer than n (or the
// watch's end) arrives: a wait on the current generations (a state fetch
// from members that may be dead) must not outlive them.
func (w *generations) untilNewer(ctx context.Context, n uint64) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		for {
			w.mu.Lock()
			newer, ch, ended := w.latest > n, w.changed, w.err != nil
			w.mu.Unlock()
			if newer || ended {
				cancel()
				return
			}
			select {
			case <-ch:
			case <-cctx.Done():
				return
			}
		}
	}()
	return cctx, cancel
}

// stop ends the watch and waits for it.
func (w *generations) stop() {
	w.cancel()
	<-w.done
}

// errNoGeneration is wait's error when no generation it accepts came in
// time.
var errNoGeneration = errors.New("no new generation")

// wait returns the newest generation for which ok holds, waiting for one
// up to timeout.
func (w *generations) wait(ctx context.Context, timeout time.Duration, ok func(state.Generation) bool) (state.Generation, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		w.mu.Lock()
		for n := w.latest; n > 0; n-- {
			if g, found := w.byNum[n]; found && ok(g) {
				w.mu.Unlock()
				return g, nil
			}
		}
		ch, werr := w.changed, w.err
		w.mu.Unlock()
		if werr != nil {
			return state.Generation{}, fmt.Errorf("watching generations: %w", werr)
		}
		select {
		case <-ch:
		case <-t.C:
			return state.Generation{}, errNoGeneration
		case <-ctx.Done():
			return state.Generation{}, ctx.Err()
		}
	}
}

// newestWhere is the newest generation seen for which ok holds, without
// waiting.
func (w *generations) newestWhere(ok func(state.Generation) bool) (state.Generation, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for n := w.latest; n > 0; n-- {
		if g, found := w.byNum[n]; found && ok(g) {
			return g, true
		}
	}
	return state.Generation{}, false
}

// newest is the number of the newest generation seen.
func (w *generations) newest() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

// newestStart is the newest start (or restart) generation seen, if any:
// its members all begin together from the same state.
func (w *generations) newestStart() (state.Generation, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for n := w.latest; n > 0; n-- {
		if g, ok := w.byNum[n]; ok && isStart(g) {
			return g, true
		}
	}
	return state.Generation{}, false
}

// ringIs records the generation of the worker's ring: crash generations
// newer than it end the call in flight.
func (w *generations) ringIs(n uint64) {
	w.mu.Lock()
	w.ring = n
	w.mu.Unlock()
}

// inFlight records the cancel of the collective call in flight (nil: the
// call is over). A crash generation newer than the ring's that is already
// known ends the call at once: it arrived before the call began, and the
// call would wait for the dead member until its timeout.
func (w *generations) inFlight(cancel context.CancelFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.abort = cancel
	if cancel == nil {
		return
	}
	for n := w.ring + 1; n <= w.latest; n++ {
		if g, ok := w.byNum[n]; ok && reconciles(g) {
			cancel()
			return
		}
	}
}

// reconciles reports a generation that removes members the coordinator
// found dead, or relinks the members after a failed link: it ends the calls
// in flight and is what the survivors reconcile on.
func reconciles(g state.Generation) bool {
	return g.Cause.Has(state.ChangeCrash) || g.Cause.Has(state.ChangeRelink)
}

// isStart reports a generation whose members all begin together (the first,
// or a restart after every worker was lost).
func isStart(g state.Generation) bool { return g.Cause.IsStart() }

// get is generation n, if seen.
func (w *generations) get(n uint64) (state.Generation, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g, ok := w.byNum[n]
	return g, ok
}

// listing is every generation seen since the newest start generation that
// lists id, newest first: the generations a joiner may enter the ring at.
func (w *generations) listing(id string) []state.Generation {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []state.Generation
	for n := w.latest; n > 0; n-- {
		g, ok := w.byNum[n]
		if !ok {
			continue
		}
		if g.Index(id) >= 0 {
			out = append(out, g)
		}
		if isStart(g) {
			break
		}
	}
	return out
}

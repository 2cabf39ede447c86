package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/syncio"
)

// elasticPool supervises the worker processes of train --workers N in
// exact mode. It tolerates what the elastic runtime tolerates: a worker
// that dies (kill -9, an out-of-memory kill) or is removed (paused past the
// heartbeat timeout, then resumed) while the job runs is replaced by a new
// worker process, which joins at a step boundary with a live peer's state,
// so the job still writes the one-process bytes. It gives up when the job
// fails, on ctrl-C, or when the slots have used up their restarts.
type elasticPool struct {
	self     string
	env      []string
	log      io.Writer
	args     func(slot int, id string) []string
	phase    func() state.JobPhase // the job's phase, from the coordinators
	restarts int                   // per slot

	procs []*exec.Cmd
	tries []int
	exits chan slotExit
}

type slotExit struct {
	slot int
	id   string
	err  error
}

// workerID is the id of the attempt-th process of a slot: w<slot> first,
// then w<slot>.<attempt> (a new registration: the old one is gone).
func workerID(slot, attempt int) string {
	if attempt == 0 {
		return fmt.Sprintf("w%d", slot)
	}
	return fmt.Sprintf("w%d.%d", slot, attempt)
}

func (p *elasticPool) start(slot int) error {
	id := workerID(slot, p.tries[slot])
	c, err := startChild(p.self, p.args(slot, id), p.env, p.log, nil)
	if err != nil {
		return err
	}
	p.procs[slot] = c
	go func() {
		err := c.Wait()
		if err != nil {
			err = fmt.Errorf("worker %s: %w", id, err)
		}
		p.exits <- slotExit{slot, id, err}
	}()
	return nil
}

// run starts n workers and supervises them until every slot's last
// process exited; it returns the failure that ended the job (nil when the
// workers finished).
func (p *elasticPool) run(ctx context.Context, n int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	p.self, p.log = self, syncio.NewWriter(p.log)
	p.procs, p.tries, p.exits = make([]*exec.Cmd, n), make([]int, n), make(chan slotExit, n)
	running := 0
	var first error
	halt := func(why error) {
		if first == nil {
			first = why
			signalAll(p.procs, syscall.SIGKILL)
		}
	}
	for i := range n {
		if err := p.start(i); err != nil {
			halt(err)
			break
		}
		running++
	}
	done := ctx.Done()
	for running > 0 {
		select {
		case x := <-p.exits:
			running--
			p.procs[x.slot] = nil
			if x.err == nil || first != nil {
				continue
			}
			replace, why := p.replaceable(x)
			if why != nil {
				halt(why)
			}
			if !replace {
				continue
			}
			p.tries[x.slot]++
			fmt.Fprintf(p.log, "train: %v; the job goes on: starting %s in its place (restart %d of %d)\n",
				x.err, workerID(x.slot, p.tries[x.slot]), p.tries[x.slot], p.restarts)
			if err := p.start(x.slot); err != nil {
				halt(err)
				continue
			}
			running++
		case <-done:
			done = nil
			halt(ctx.Err())
		}
	}
	return first
}

// replaceable decides about a worker that failed: replace it (the job
// runs), let it be (the job is done: a worker removed while paused may
// exit with an error after the others finished), or stop with why (the job
// failed or never started, or the slot used up its restarts).
func (p *elasticPool) replaceable(x slotExit) (replace bool, why error) {
	switch p.phase() {
	case state.JobDone:
		return false, nil
	case state.JobRunning:
	default: // failed, or no generation yet: nothing to rejoin
		return false, x.err
	}
	if p.tries[x.slot] >= p.restarts {
		return false, fmt.Errorf("%w (restarted %d times already)", x.err, p.tries[x.slot])
	}
	return true, nil
}

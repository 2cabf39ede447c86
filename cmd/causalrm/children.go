package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/causalrm/causalrm/internal/syncio"
)

// children are worker processes started and supervised by a launcher
// (train --workers N): they die with it (Pdeathsig), share its log, and
// are all reaped before it returns.
type children struct {
	procs []*exec.Cmd
	errs  chan error
}

// startChildren starts n copies of this binary; args gives child i's
// arguments and files the listening sockets it inherits (fd 3 on), which
// are closed here once the child has them.
func startChildren(n int, log io.Writer, env []string, args func(i int) []string, files func(i int) []*os.File) (*children, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	log = syncio.NewWriter(log) // the children's output is copied concurrently
	ch := &children{procs: make([]*exec.Cmd, n), errs: make(chan error, n)}
	for i := 0; i < n; i++ {
		var fs []*os.File
		if files != nil {
			fs = files(i)
		}
		c, err := startChild(self, args(i), env, log, fs)
		if err != nil {
			ch.signal(syscall.SIGKILL)
			for j := 0; j < i; j++ {
				<-ch.errs
			}
			return nil, err
		}
		ch.procs[i] = c
		go func(i int, c *exec.Cmd) {
			if err := c.Wait(); err != nil {
				ch.errs <- fmt.Errorf("worker %d: %w", i, err)
				return
			}
			ch.errs <- nil
		}(i, c)
	}
	return ch, nil
}

// startChild starts this binary with args, the environment plus env, its
// output on log and files inherited from fd 3 on (closed here once the
// child has them); it dies with its parent (Pdeathsig).
func startChild(self string, args, env []string, log io.Writer, files []*os.File) (*exec.Cmd, error) {
	c := exec.Command(self, args...)
	c.Env = append(os.Environ(), env...)
	c.ExtraFiles = files
	c.Stdout, c.Stderr = log, log
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := c.Start()
	for _, f := range files {
		f.Close()
	}
	return c, err
}

// signal sends sig to every started child; ones already gone are skipped.
func (ch *children) signal(sig os.Signal) { signalAll(ch.procs, sig) }

// supervise waits for every child: the first failure or the end of ctx
// stops the others with stop (then SIGKILL after grace, if grace > 0). It
// returns the first failure (or ctx's error), once all are reaped.
func (ch *children) supervise(ctx context.Context, stop os.Signal, grace time.Duration) error {
	var first error
	var kill *time.Timer
	halt := func(why error) {
		if first != nil {
			return
		}
		first = why
		ch.signal(stop)
		if grace > 0 {
			kill = time.AfterFunc(grace, func() { ch.signal(syscall.SIGKILL) })
		}
	}
	done := ctx.Done()
	for remaining := len(ch.procs); remaining > 0; {
		select {
		case err := <-ch.errs:
			remaining--
			if err != nil {
				halt(err)
			}
		case <-done:
			done = nil
			halt(ctx.Err())
		}
	}
	if kill != nil {
		kill.Stop()
	}
	return first
}

// stageWorkers checks that n workers fit the job's virtual shards and
// prepares the staging directory the launcher renames into job.Out on
// success; it returns a copy of the job for the workers to change.
func stageWorkers(job *Job, n int, force bool, log io.Writer) (string, Job, error) {
	if n > job.Shards {
		return "", Job{}, fmt.Errorf("--workers %d: more workers than virtual shards (%d); raise --shards", n, job.Shards)
	}
	staging, err := prepareOut(job.Out, force, job.Inputs(), log)
	if err != nil {
		return "", Job{}, err
	}
	return staging, *job, nil
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childWithID is the pid of this process's child worker started with
// --id id (0: none yet).
func childWithID(id string) int {
	entries, _ := os.ReadDir("/proc")
	me := strconv.Itoa(os.Getpid())
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// stat: pid (comm) state ppid ...
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) < 2 || f[1] != me {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(cmd, []byte("\x00--id\x00"+id+"\x00")) {
			return pid
		}
	}
	return 0
}

// train --workers tolerates what the elastic runtime tolerates: a worker
// that fails, is killed with SIGKILL mid-stage, or is paused past the
// heartbeat timeout is replaced by a new worker process, and the job still
// writes the one-process model bytes. (Before, any worker fault made the
// launcher kill the recovered run and write nothing.)
func TestLauncherReplacesFailedWorkers(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data.safetensors")
	if out, err := run(t, "simulate", "--rows", "1600", "--test-rows", "200", "--dim", "16", "--latent", "4", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	common := []string{"--data", data, "--max-epochs", "3", "--hidden", "8,4", "--batch", "64", "--shards", "12", "--quiet"}
	ref := filepath.Join(dir, "ref")
	if out, err := run(t, append([]string{"train", "--out", ref}, common...)...); err != nil {
		t.Fatalf("one process: %v\n%s", err, out)
	}
	want, _ := fileSHA256(filepath.Join(ref, "reward.safetensors"))
	for _, tc := range []struct {
		name  string
		delay string // per step: the job must outlast the fault
		fault func(t *testing.T)
	}{
		{"fails after joining", "15ms", nil},
		{"kill -9 mid-stage", "15ms", func(t *testing.T) {
			pid := waitChild(t, "w1")
			time.Sleep(1500 * time.Millisecond)
			syscall.Kill(pid, syscall.SIGKILL)
		}},
		{"paused past the heartbeat timeout", "60ms", func(t *testing.T) {
			pid := waitChild(t, "w1")
			time.Sleep(1500 * time.Millisecond)
			syscall.Kill(pid, syscall.SIGSTOP)
			time.Sleep(5 * time.Second)
			syscall.Kill(pid, syscall.SIGCONT)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(stepDelayEnv, tc.delay)
			if tc.fault == nil {
				t.Setenv(faultEnv, "2")
			}
			out := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			done := make(chan struct{})
			var log string
			var err error
			go func() {
				defer close(done)
				log, err = run(t, append([]string{"train", "--out", out, "--workers", "3"}, common...)...)
			}()
			if tc.fault != nil {
				tc.fault(t)
			}
			<-done
			if err != nil {
				t.Fatalf("train --workers 3: %v\n%s", err, tail(log, 3000))
			}
			if !strings.Contains(log, "in its place") {
				t.Fatalf("no worker was replaced:\n%s", tail(log, 3000))
			}
			got, _ := fileSHA256(filepath.Join(out, "reward.safetensors"))
			if got != want {
				t.Fatalf("reward.safetensors sha256 %s, one process %s\n%s", got, want, tail(log, 3000))
			}
		})
	}
}

func waitChild(t *testing.T, id string) int {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if pid := childWithID(id); pid > 0 {
			return pid
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("worker %s never started", id)
	return -1
}

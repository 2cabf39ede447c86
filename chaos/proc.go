package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/causalrm/causalrm/internal/tcpproxy"
	"golang.org/x/sys/unix"
)

// Role says what a process of a run is.
type Role string

// The roles of a run's processes.
const (
	RoleCoordinator Role = "coordinator"
	RoleWorker      Role = "worker"
)

// proc is one child process of a run: a coordinator or a worker, started
// from the causalrm binary. Its output goes to a log file and a tail kept
// in memory (for the stall report).
type proc struct {
	name  string
	role  Role
	index int // the coordinator's index (coordinators only)
	// link is the proxy in front of a worker's collective listener: its
	// peers dial it, so link faults disturb the data plane (workers only).
	link  *tcpproxy.Proxy
	args  []string
	cmd   *exec.Cmd
	log   *logSink
	start time.Time

	done chan struct{} // closed once the process is reaped
	end  time.Time     // set before done closes
	err  error         // the Wait error; set before done closes

	mu      sync.Mutex
	stopped bool   // SIGSTOPped and not yet continued
	ended   string // why chaos ended it ("kill -9", "SIGTERM", ...); "" if it ended by itself
}

// exited reports whether the process has been reaped.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig unless the process has exited; why records the reason
// of a kill or a termination (empty for SIGSTOP and SIGCONT).
func (p *proc) signal(sig syscall.Signal, why string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited() {
		return errors.New(p.name + " has exited")
	}
	switch sig {
	case syscall.SIGSTOP:
		p.stopped = true
	case syscall.SIGCONT:
		p.stopped = false
	}
	if why != "" && p.ended == "" {
		p.ended = why
	}
	return p.cmd.Process.Signal(sig)
}

// limitFileSize sets the process's RLIMIT_FSIZE soft limit (prlimit(2)):
// with a tiny limit every write that extends a file fails with EFBIG, as on
// a full disk (Go ignores the SIGXFSZ that comes with it), without a mount
// or root. It returns the limit before, for the restore.
func (p *proc) limitFileSize(soft uint64) (old uint64, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited() {
		return 0, errors.New(p.name + " has exited")
	}
	var cur unix.Rlimit
	if err := unix.Prlimit(p.cmd.Process.Pid, unix.RLIMIT_FSIZE, nil, &cur); err != nil {
		return 0, err
	}
	next := unix.Rlimit{Cur: min(soft, cur.Max), Max: cur.Max}
	return cur.Cur, unix.Prlimit(p.cmd.Process.Pid, unix.RLIMIT_FSIZE, &next, nil)
}

func (p *proc) isStopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

func (p *proc) endedBy() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ended
}

// exitText describes how the process ended.
func (p *proc) exitText() string {
	if !p.exited() {
		return "running"
	}
	s := "exit 0"
	if p.err != nil {
		s = p.err.Error()
	}
	if why := p.endedBy(); why != "" {
		s += " (" + why + ")"
	}
	return s
}

// cleanExit reports an exit status of 0.
func (p *proc) cleanExit() bool { return p.exited() && p.err == nil }

// startProc starts bin with args; its output goes to logPath.
func startProc(bin, name string, role Role, args, env []string, logPath string) (*proc, error) {
	sink, err := newLogSink(logPath)
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, role: role, args: args, log: sink, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = sink, sink
	// A chaos run that dies takes its children with it; a ctrl-C at the
	// terminal reaches chaos only (their own process group), which then
	// stops them itself.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		sink.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.start = time.Now()
	go func() {
		err := p.cmd.Wait()
		p.end = time.Now()
		p.err = err
		sink.Close()
		close(p.done)
	}()
	return p, nil
}

// logSink writes a process's output to its log file and keeps the last
// tailBytes of it in memory.
type logSink struct {
	mu   sync.Mutex
	f    *os.File
	tail []byte
}

const tailBytes = 16 << 10

func newLogSink(path string) (*logSink, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &logSink{f: f}, nil
}

func (s *logSink) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		_, _ = s.f.Write(b)
	}
	s.tail = append(s.tail, b...)
	if len(s.tail) > 2*tailBytes {
		s.tail = append([]byte(nil), s.tail[len(s.tail)-tailBytes:]...)
	}
	return len(b), nil
}

func (s *logSink) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

// String is the tail of the output.
func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.tail)
}

// lastLines returns the last n lines of the output.
func (s *logSink) lastLines(n int) []string {
	t := bytes.TrimRight([]byte(s.String()), "\n")
	lines := strings.Split(string(t), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 1 && lines[0] == "" {
		return nil
	}
	return lines
}

//go:build unix

package nn

import (
	"syscall"
	"time"
)

// cpuTime is the process's user+system CPU time so far (benchmarks on a
// shared machine divide by it as well as by wall time).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

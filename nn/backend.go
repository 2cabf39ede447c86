package nn

import (
	"runtime"
	"sync/atomic"

	"gonum.org/v1/gonum/blas"
	"gorgonia.org/tensor"
)

// BLAS is the level-3 implementation every GEMM of this package goes through:
// the one gorgonia.org/tensor is set to use (tensor.Use). Which one that is
// is fixed at build time: pure-Go gonum by default, OpenBLAS with the
// "openblas" build tag (see backend_openblas.go).
func BLAS() blas.Float64 { return tensor.WhichBLAS() }

func blas32() blas.Float32 { return tensor.WhichBLAS() }

// Backend names the BLAS backend compiled in.
func Backend() string { return backendName }

// SetThreads sets how many threads the arithmetic may use: GOMAXPROCS for
// the pure-Go parts and, with OpenBLAS, its thread pool. In exact mode the
// result does not depend on it.
func SetThreads(n int) {
	if n < 1 {
		n = runtime.NumCPU()
	}
	runtime.GOMAXPROCS(n)
	setBLASThreads(n)
	threads.Store(int64(n))
}

// Threads reports the value last given to SetThreads (default: NumCPU).
func Threads() int { return int(threads.Load()) }

// threads is process-wide (like GOMAXPROCS) and may be set while other
// engines run, hence atomic.
var threads atomic.Int64

func init() { threads.Store(int64(runtime.NumCPU())) }

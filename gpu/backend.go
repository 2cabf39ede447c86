// Package gpu runs the reward model's forward and backward passes on a
// CUDA GPU (nn.Runner), with the CPU engine's bits in exact mode: the two
// big products are cuBLAS DGEMMs over integer-valued operands whose sums
// stay below 2^53, every other reduction is a maximum or an int64 sum, and
// the element kernels (kernels/kernels.cu) round each operation as the CPU
// loops do. The data and parameters stay on the device; a step moves the
// batch's row indices and per-row loss derivatives in, and the logits,
// gradient maxima and the partial gradient (what the all-reduce needs) out.
//
// Everything runs over a Backend: the CUDA one, or a host emulation that
// runs the same kernels in Go, so that the engine's memory plan, launches
// and argument lists are tested without a GPU.
package gpu

import (
	"unsafe"

	"github.com/causalrm/causalrm/cuda"
)

// Ptr is an address in a backend's memory.
type Ptr = cuda.Ptr

// Backend is the device an engine runs on. All calls are issued in order
// on one stream; Download returns when the data is on the host.
type Backend interface {
	Name() string
	Alloc(bytes int) (Ptr, error)
	Free(p Ptr)
	MemInfo() (free, total uint64, err error)
	Upload(dst Ptr, src unsafe.Pointer, bytes int) error
	Download(dst unsafe.Pointer, src Ptr, bytes int) error
	// Row-major C = op(A) op(B) (alpha 1, beta 0), gonum's blas semantics.
	Dgemm(tA, tB bool, m, n, k int, a Ptr, lda int, b Ptr, ldb int, c Ptr, ldc int) error
	Sgemm(tA, tB bool, m, n, k int, a Ptr, lda int, b Ptr, ldb int, c Ptr, ldc int) error
	// Launch runs the named kernel of kernels.cu over a grid of blocks.
	Launch(kernel string, grid, block [3]uint32, args ...any) error
}

// upload and download move whole typed slices.
func upload[T any](b Backend, dst Ptr, src []T) error {
	if len(src) == 0 {
		return nil
	}
	return b.Upload(dst, unsafe.Pointer(unsafe.SliceData(src)), len(src)*int(unsafe.Sizeof(src[0])))
}

func download[T any](b Backend, dst []T, src Ptr) error {
	if len(dst) == 0 {
		return nil
	}
	return b.Download(unsafe.Pointer(unsafe.SliceData(dst)), src, len(dst)*int(unsafe.Sizeof(dst[0])))
}

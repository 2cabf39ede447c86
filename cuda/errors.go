package cuda

import (
	"errors"
	"fmt"
	"unsafe"
)

var (
	// ErrNoDriver wraps every error that means the CUDA driver is unusable:
	// libcuda could not be loaded, lacks a symbol, or cuInit failed.
	ErrNoDriver = errors.New("cuda: CUDA driver (libcuda) not available")
	// ErrNoCUBLAS wraps every error that means cuBLAS could not be loaded.
	ErrNoCUBLAS = errors.New("cuda: cuBLAS not available")
)

// errClosed is returned by methods of a closed Device.
var errClosed = errors.New("cuda: device is closed")

// cuError is a failed driver call; Error names the call, what it was
// asked to do, and the result by its CUDA name and description.
type cuError struct {
	call string // e.g. "cuMemAlloc_v2(1048576 bytes)"
	code int32
}

func (e *cuError) Error() string {
	return fmt.Sprintf("cuda: %s: %s", e.call, resultString(e.code))
}

// check turns a CUresult into an error (nil for CUDA_SUCCESS).
func check(r int32, call string) error {
	if r == 0 {
		return nil
	}
	return &cuError{call: call, code: r}
}

// resultString is "CUDA_ERROR_X (description)", falling back to the number
// when the driver cannot name the result (or is not loaded).
func resultString(r int32) string {
	if drv == nil {
		return fmt.Sprintf("CUresult %d", r)
	}
	var name, desc *byte
	if drv.cuGetErrorName(r, &name) != 0 || name == nil {
		return fmt.Sprintf("CUresult %d", r)
	}
	s := goString(name)
	if drv.cuGetErrorString(r, &desc) == 0 && desc != nil {
		s += " (" + goString(desc) + ")"
	}
	return s
}

// goString copies a NUL-terminated C string; the driver owns the memory.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// cublasStatusNames names the cublasStatus_t values cuBLAS documents.
var cublasStatusNames = map[int32]string{
	1:  "CUBLAS_STATUS_NOT_INITIALIZED",
	3:  "CUBLAS_STATUS_ALLOC_FAILED",
	7:  "CUBLAS_STATUS_INVALID_VALUE",
	8:  "CUBLAS_STATUS_ARCH_MISMATCH",
	11: "CUBLAS_STATUS_MAPPING_ERROR",
	13: "CUBLAS_STATUS_EXECUTION_FAILED",
	14: "CUBLAS_STATUS_INTERNAL_ERROR",
	15: "CUBLAS_STATUS_NOT_SUPPORTED",
	16: "CUBLAS_STATUS_LICENSE_ERROR",
}

// blasError is a failed cuBLAS call.
type blasError struct {
	call   string
	status int32
}

func (e *blasError) Error() string {
	name, ok := cublasStatusNames[e.status]
	if !ok {
		name = fmt.Sprintf("CUBLAS_STATUS_%d", e.status)
	}
	return fmt.Sprintf("cuda: %s: %s", e.call, name)
}

// checkBLAS turns a cublasStatus_t into an error (nil for success).
func checkBLAS(s int32, call string) error {
	if s == 0 {
		return nil
	}
	return &blasError{call: call, status: s}
}

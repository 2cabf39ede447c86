package cuda

import (
	"fmt"
	"math"
	"runtime"
)

// cublasOperation_t values.
const (
	opN int32 = 0
	opT int32 = 1
)

// colMajorGemm is a cublas?gemm call: column-major, C = alpha*op(A)*op(B) + beta*C
// with op(A) m x k.
type colMajorGemm struct {
	transA, transB int32
	m, n, k        int32
	a              Ptr
	lda            int32
	b              Ptr
	ldb            int32
	c              Ptr
	ldc            int32
}

// colMajorArgs maps a row-major gemm (gonum blas semantics) to cuBLAS's
// column-major one. A row-major matrix is its transpose in column-major,
// so C^T = alpha*op(B)^T*op(A)^T + beta*C^T: swap the operands and the
// dimensions m and n; the transposition flags and leading dimensions carry
// over. Shapes are checked as gonum does, so a bad call fails here with a
// clear message rather than as CUBLAS_STATUS_INVALID_VALUE.
func colMajorArgs(tA, tB bool, m, n, k int, a Ptr, lda int, b Ptr, ldb int, c Ptr, ldc int) (colMajorGemm, error) {
	if m < 0 || n < 0 || k < 0 {
		return colMajorGemm{}, fmt.Errorf("cuda: gemm: negative size m=%d n=%d k=%d", m, n, k)
	}
	colsA, colsB := k, n // columns of the stored row-major A and B
	if tA {
		colsA = m
	}
	if tB {
		colsB = k
	}
	switch {
	case lda < max(1, colsA):
		return colMajorGemm{}, fmt.Errorf("cuda: gemm: lda %d < %d", lda, max(1, colsA))
	case ldb < max(1, colsB):
		return colMajorGemm{}, fmt.Errorf("cuda: gemm: ldb %d < %d", ldb, max(1, colsB))
	case ldc < max(1, n):
		return colMajorGemm{}, fmt.Errorf("cuda: gemm: ldc %d < %d", ldc, max(1, n))
	}
	for _, v := range []int{m, n, k, lda, ldb, ldc} {
		if v > math.MaxInt32 {
			return colMajorGemm{}, fmt.Errorf("cuda: gemm: dimension %d exceeds int32", v)
		}
	}
	op := func(t bool) int32 {
		if t {
			return opT
		}
		return opN
	}
	return colMajorGemm{
		transA: op(tB), transB: op(tA),
		m: int32(n), n: int32(m), k: int32(k),
		a: b, lda: int32(ldb),
		b: a, ldb: int32(lda),
		c: c, ldc: int32(ldc),
	}, nil
}

// Dgemm computes C = alpha*op(A)*op(B) + beta*C on the stream, all
// matrices row-major in device memory, with gonum blas semantics.
func (d *Device) Dgemm(tA, tB bool, m, n, k int, alpha float64, a Ptr, lda int, b Ptr, ldb int, beta float64, c Ptr, ldc int) error {
	return d.gemm("cublasDgemm_v2", tA, tB, m, n, k, a, lda, b, ldb, c, ldc, func(g colMajorGemm) int32 {
		// alpha and beta are read through host pointers during the call:
		// Device fields are heap memory that outlives it.
		d.alpha64, d.beta64 = alpha, beta
		return cublasLib.cublasDgemm(d.handle, g.transA, g.transB, g.m, g.n, g.k, &d.alpha64,
			uint64(g.a), g.lda, uint64(g.b), g.ldb, &d.beta64, uint64(g.c), g.ldc)
	})
}

// Sgemm is Dgemm in float32. Whether it may use TF32 tensor cores is
// SetTF32's choice (off by default).
func (d *Device) Sgemm(tA, tB bool, m, n, k int, alpha float32, a Ptr, lda int, b Ptr, ldb int, beta float32, c Ptr, ldc int) error {
	return d.gemm("cublasSgemm_v2", tA, tB, m, n, k, a, lda, b, ldb, c, ldc, func(g colMajorGemm) int32 {
		d.alpha32, d.beta32 = alpha, beta
		return cublasLib.cublasSgemm(d.handle, g.transA, g.transB, g.m, g.n, g.k, &d.alpha32,
			uint64(g.a), g.lda, uint64(g.b), g.ldb, &d.beta32, uint64(g.c), g.ldc)
	})
}

// gemm is what Dgemm and Sgemm share: the operands mapped to column-major,
// nothing to do for an empty C, the context held on this thread for call.
func (d *Device) gemm(name string, tA, tB bool, m, n, k int, a Ptr, lda int, b Ptr, ldb int, c Ptr, ldc int, call func(colMajorGemm) int32) error {
	g, err := colMajorArgs(tA, tB, m, n, k, a, lda, b, ldb, c, ldc)
	if err != nil || m == 0 || n == 0 {
		return err
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer runtime.UnlockOSThread()
	return checkBLAS(call(g), fmt.Sprintf("%s(m=%d n=%d k=%d)", name, m, n, k))
}

// SetTF32 lets Sgemm round inputs to TF32 on tensor cores
// (CUBLAS_TF32_TENSOR_OP_MATH) or not (CUBLAS_DEFAULT_MATH): faster, but
// only about 10 bits of mantissa.
func (d *Device) SetTF32(on bool) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer runtime.UnlockOSThread()
	mode := int32(0)
	if on {
		mode = 3
	}
	return checkBLAS(cublasLib.cublasSetMathMode(d.handle, mode), fmt.Sprintf("cublasSetMathMode(%d)", mode))
}

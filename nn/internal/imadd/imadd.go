// Package imadd holds the assembly micro-kernel of nn's integer GEMM
// (nn/intgemm.go): a Go assembly file cannot live in a package that uses
// cgo, as nn does with OpenBLAS.
package imadd

// Tile is the micro-kernel's tile: MR rows by NR columns.
const (
	MR = 6
	NR = 16
)

// Madd6x16 adds to the int64 tile c (row stride ldc) the products of the
// packed int16 panels a (k2 pairs x MR rows x 2) and b (k2 pairs x NR
// columns x 2), summed in int32 over blocks of kb pairs and shifted left by
// shift. The caller guarantees 2*kb*max|a|*max|b| <= 2^31-1 and |a|, |b| <=
// 32767. It panics where AVX2 is missing (Available).
func Madd6x16(a, b []int16, c []int64, ldc, k2, kb int, shift uint) {
	if k2 < 1 {
		return
	}
	if kb < 1 {
		panic("imadd: kb < 1")
	}
	_ = a[k2*2*MR-1]
	_ = b[k2*2*NR-1]
	_ = c[(MR-1)*ldc+NR-1]
	madd(a, b, c, ldc, k2, kb, shift)
}

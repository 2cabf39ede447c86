package imadd

import "golang.org/x/sys/cpu"

// Available reports whether Madd6x16 runs here (AVX2).
var Available = cpu.X86.HasAVX2

//go:noescape
func madd6x16(a *int16, b *int16, c *int64, ldc, k2, kb int, shift uint64)

func madd(a, b []int16, c []int64, ldc, k2, kb int, shift uint) {
	if !Available {
		panic("imadd: no AVX2")
	}
	madd6x16(&a[0], &b[0], &c[0], ldc, k2, kb, uint64(shift))
}

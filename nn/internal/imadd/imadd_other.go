//go:build !amd64

package imadd

// Available reports whether Madd6x16 runs here: never off amd64.
const Available = false

func madd(a, b []int16, c []int64, ldc, k2, kb int, shift uint) {
	panic("imadd: no AVX2")
}

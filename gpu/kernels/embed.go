// Package kernels holds the CUDA C sources of the GPU engine's element
// kernels and the PTX generated from them (scripts/gen-ptx.sh), which the
// driver compiles at load time: building causalrm needs no CUDA toolkit.
package kernels

import _ "embed"

// PTX is kernels.ptx.
//
//go:embed kernels.ptx
var PTX []byte

//go:build openblas

package nn

/*
#cgo LDFLAGS: -lopenblas
void openblas_set_num_threads(int num_threads);
*/
import "C"

import (
	"gonum.org/v1/netlib/blas/netlib"
	"gorgonia.org/tensor"
)

const backendName = "openblas (cgo, gonum netlib)"

func init() { tensor.Use(netlib.Implementation{}) }

func setBLASThreads(n int) { C.openblas_set_num_threads(C.int(n)) }

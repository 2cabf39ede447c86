package gpu

import (
	"fmt"
	"unsafe"

	"github.com/causalrm/causalrm/cuda"
	"github.com/causalrm/causalrm/gpu/kernels"
)

// cudaBackend runs the engine on a CUDA GPU: the kernels from the
// embedded PTX, the GEMMs in cuBLAS.
type cudaBackend struct {
	d     *cuda.Device
	mod   *cuda.Module
	funcs map[string]cuda.Function
	name  string
}

// OpenCUDA opens GPU ordinal with the libraries found as cuda.Open finds
// them (libDir: --cuda-libs) and loads the kernels.
func OpenCUDA(ordinal int, libDir string) (*Device, error) {
	d, err := cuda.Open(ordinal, cuda.Options{LibDir: libDir})
	if err != nil {
		return nil, err
	}
	mod, err := d.LoadModule(kernels.PTX)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("loading the GPU kernels: %w", err)
	}
	b := &cudaBackend{d: d, mod: mod, funcs: map[string]cuda.Function{}, name: fmt.Sprintf("cuda:%d", ordinal)}
	return NewDevice(b, d.Close), nil
}

// SetTF32 lets fast mode's SGEMMs use TF32 tensor cores (off by default).
func (d *Device) SetTF32(on bool) error {
	if c, ok := d.b.(*cudaBackend); ok {
		return c.d.SetTF32(on)
	}
	return nil
}

// Info describes the GPU, or is empty for another backend.
func (d *Device) Info() string {
	if c, ok := d.b.(*cudaBackend); ok {
		return c.d.Info().String()
	}
	return d.b.Name()
}

func (c *cudaBackend) Name() string                     { return c.name }
func (c *cudaBackend) Alloc(n int) (Ptr, error)         { return c.d.Alloc(n) }
func (c *cudaBackend) Free(p Ptr)                       { _ = c.d.Free(p) }
func (c *cudaBackend) MemInfo() (uint64, uint64, error) { return c.d.MemInfo() }
func (c *cudaBackend) Upload(dst Ptr, src unsafe.Pointer, n int) error {
	return c.d.Upload(dst, src, n)
}
func (c *cudaBackend) Download(dst unsafe.Pointer, src Ptr, n int) error {
	return c.d.Download(dst, src, n)
}
func (c *cudaBackend) Dgemm(tA, tB bool, m, n, k int, a Ptr, lda int, b Ptr, ldb int, cc Ptr, ldc int) error {
	return c.d.Dgemm(tA, tB, m, n, k, 1, a, lda, b, ldb, 0, cc, ldc)
}
func (c *cudaBackend) Sgemm(tA, tB bool, m, n, k int, a Ptr, lda int, b Ptr, ldb int, cc Ptr, ldc int) error {
	return c.d.Sgemm(tA, tB, m, n, k, 1, a, lda, b, ldb, 0, cc, ldc)
}

func (c *cudaBackend) Launch(kernel string, grid, block [3]uint32, args ...any) error {
	f, ok := c.funcs[kernel]
	if !ok {
		var err error
		if f, err = c.mod.Function(kernel); err != nil {
			return err
		}
		c.funcs[kernel] = f
	}
	return c.d.Launch(f, grid, block, 0, cuda.Pack(args...))
}

// sync waits for the device's stream (a no-op off CUDA): for timings.
func (d *Device) sync() error {
	if c, ok := d.b.(*cudaBackend); ok {
		return c.d.Sync()
	}
	return nil
}

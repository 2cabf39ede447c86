package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Options says where to look for the libraries beyond the standard sonames.
type Options struct {
	LibDir string // a directory to search after the standard sonames; empty: $CAUSALRM_CUDA_LIBS
}

// libDir resolves the extra search directory.
func (o Options) libDir() string {
	if o.LibDir != "" {
		return o.LibDir
	}
	return os.Getenv("CAUSALRM_CUDA_LIBS")
}

const dlFlags = purego.RTLD_NOW | purego.RTLD_GLOBAL

var (
	driverNames = []string{"libcuda.so.1", "libcuda.so"}
	cublasNames = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"}
)

// driverAPI holds the bound libcuda entry points. CUresult is int32,
// handles are uintptr, CUdevice is int32, CUdeviceptr is uint64.
type driverAPI struct {
	path string

	cuInit                    func(flags uint32) int32
	cuDriverGetVersion        func(v *int32) int32
	cuDeviceGet               func(dev *int32, ordinal int32) int32
	cuDeviceGetCount          func(n *int32) int32
	cuDeviceGetName           func(name *byte, n int32, dev int32) int32
	cuDeviceGetAttribute      func(v *int32, attr int32, dev int32) int32
	cuDeviceTotalMem          func(bytes *uintptr, dev int32) int32
	cuDevicePrimaryCtxRetain  func(ctx *uintptr, dev int32) int32
	cuDevicePrimaryCtxRelease func(dev int32) int32
	cuCtxSetCurrent           func(ctx uintptr) int32
	cuStreamCreate            func(s *uintptr, flags uint32) int32
	cuStreamDestroy           func(s uintptr) int32
	cuStreamSynchronize       func(s uintptr) int32
	cuMemAlloc                func(p *uint64, n uintptr) int32
	cuMemFree                 func(p uint64) int32
	cuMemGetInfo              func(free, total *uintptr) int32
	cuMemcpyHtoDAsync         func(dst uint64, src unsafe.Pointer, n uintptr, s uintptr) int32
	cuMemcpyDtoHAsync         func(dst unsafe.Pointer, src uint64, n uintptr, s uintptr) int32
	cuMemsetD8Async           func(dst uint64, v uint8, n uintptr, s uintptr) int32
	cuModuleLoadDataEx        func(m *uintptr, image unsafe.Pointer, nopt uint32, opts *int32, vals *uintptr) int32
	cuModuleGetFunction       func(f *uintptr, m uintptr, name string) int32
	cuModuleUnload            func(m uintptr) int32
	cuLaunchKernel            func(f uintptr, gx, gy, gz, bx, by, bz, shared uint32, s uintptr, params, extra unsafe.Pointer) int32
	cuGetErrorName            func(r int32, s **byte) int32
	cuGetErrorString          func(r int32, s **byte) int32

	// Optional (driver 12.4+): the kernel's parameter layout, so Launch
	// can pass exactly the size the kernel takes. Nil when absent.
	cuFuncGetParamInfo func(f uintptr, i uintptr, off, size *uintptr) int32
}

func (a *driverAPI) symbols() []symbol {
	return []symbol{
		{"cuInit", &a.cuInit},
		{"cuDriverGetVersion", &a.cuDriverGetVersion},
		{"cuDeviceGet", &a.cuDeviceGet},
		{"cuDeviceGetCount", &a.cuDeviceGetCount},
		{"cuDeviceGetName", &a.cuDeviceGetName},
		{"cuDeviceGetAttribute", &a.cuDeviceGetAttribute},
		{"cuDeviceTotalMem_v2", &a.cuDeviceTotalMem},
		{"cuDevicePrimaryCtxRetain", &a.cuDevicePrimaryCtxRetain},
		{"cuDevicePrimaryCtxRelease_v2", &a.cuDevicePrimaryCtxRelease},
		{"cuCtxSetCurrent", &a.cuCtxSetCurrent},
		{"cuStreamCreate", &a.cuStreamCreate},
		{"cuStreamDestroy_v2", &a.cuStreamDestroy},
		{"cuStreamSynchronize", &a.cuStreamSynchronize},
		{"cuMemAlloc_v2", &a.cuMemAlloc},
		{"cuMemFree_v2", &a.cuMemFree},
		{"cuMemGetInfo_v2", &a.cuMemGetInfo},
		{"cuMemcpyHtoDAsync_v2", &a.cuMemcpyHtoDAsync},
		{"cuMemcpyDtoHAsync_v2", &a.cuMemcpyDtoHAsync},
		{"cuMemsetD8Async", &a.cuMemsetD8Async},
		{"cuModuleLoadDataEx", &a.cuModuleLoadDataEx},
		{"cuModuleGetFunction", &a.cuModuleGetFunction},
		{"cuModuleUnload", &a.cuModuleUnload},
		{"cuLaunchKernel", &a.cuLaunchKernel},
		{"cuGetErrorName", &a.cuGetErrorName},
		{"cuGetErrorString", &a.cuGetErrorString},
	}
}

// blasAPI holds the bound cuBLAS entry points (cublasStatus_t is int32).
type blasAPI struct {
	path string

	cublasCreate      func(h *uintptr) int32
	cublasDestroy     func(h uintptr) int32
	cublasSetStream   func(h, s uintptr) int32
	cublasSetMathMode func(h uintptr, mode int32) int32
	cublasGetVersion  func(h uintptr, v *int32) int32
	cublasDgemm       func(h uintptr, ta, tb, m, n, k int32, alpha *float64, a uint64, lda int32, b uint64, ldb int32, beta *float64, c uint64, ldc int32) int32
	cublasSgemm       func(h uintptr, ta, tb, m, n, k int32, alpha *float32, a uint64, lda int32, b uint64, ldb int32, beta *float32, c uint64, ldc int32) int32
}

func (a *blasAPI) symbols() []symbol {
	return []symbol{
		{"cublasCreate_v2", &a.cublasCreate},
		{"cublasDestroy_v2", &a.cublasDestroy},
		{"cublasSetStream_v2", &a.cublasSetStream},
		{"cublasSetMathMode", &a.cublasSetMathMode},
		{"cublasGetVersion_v2", &a.cublasGetVersion},
		{"cublasDgemm_v2", &a.cublasDgemm},
		{"cublasSgemm_v2", &a.cublasSgemm},
	}
}

type symbol struct {
	name string
	fn   any // pointer to a func variable
}

// bindSymbols resolves every symbol before registering any, so a library
// missing one gives an error naming all the missing ones rather than the
// panic purego.RegisterLibFunc would raise.
func bindSymbols(h uintptr, syms []symbol) error {
	addrs := make([]uintptr, len(syms))
	var missing []string
	for i, s := range syms {
		p, err := purego.Dlsym(h, s.name)
		if err != nil || p == 0 {
			missing = append(missing, s.name)
			continue
		}
		addrs[i] = p
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing symbols %s", strings.Join(missing, ", "))
	}
	for i, s := range syms {
		purego.RegisterFunc(s.fn, addrs[i])
	}
	return nil
}

// Loaded libraries are process-wide: a success is kept for good; a failure
// is kept per search directory, so the same options give the same error
// without retrying, while a different directory is still tried.
var (
	loadMu     sync.Mutex
	drv        *driverAPI
	cublasLib  *blasAPI
	drvFailed  = map[string]error{}
	blasFailed = map[string]error{}
)

// loadDriver loads and binds libcuda once.
func loadDriver(dir string) (*driverAPI, error) {
	loadMu.Lock()
	defer loadMu.Unlock()
	if drv != nil {
		return drv, nil
	}
	if err, ok := drvFailed[dir]; ok {
		return nil, err
	}
	a := new(driverAPI)
	path, h, err := openFirst(driverNames, dir, a.symbols(), false)
	if err != nil {
		err = fmt.Errorf("%w: %v; install the NVIDIA driver, or set --cuda-libs or $CAUSALRM_CUDA_LIBS to the directory holding libcuda.so.1", ErrNoDriver, err)
		drvFailed[dir] = err
		return nil, err
	}
	if p, err := purego.Dlsym(h, "cuFuncGetParamInfo"); err == nil && p != 0 {
		purego.RegisterFunc(&a.cuFuncGetParamInfo, p)
	}
	a.path = path
	drv = a
	return drv, nil
}

// loadBLAS loads and binds cuBLAS once.
func loadBLAS(dir string) (*blasAPI, error) {
	loadMu.Lock()
	defer loadMu.Unlock()
	if cublasLib != nil {
		return cublasLib, nil
	}
	if err, ok := blasFailed[dir]; ok {
		return nil, err
	}
	a := new(blasAPI)
	path, _, err := openFirst(cublasNames, dir, a.symbols(), true)
	if err != nil {
		err = fmt.Errorf("%w: %v; set --cuda-libs or $CAUSALRM_CUDA_LIBS to the directory holding libcublas.so.N", ErrNoCUBLAS, err)
		blasFailed[dir] = err
		return nil, err
	}
	a.path = path
	cublasLib = a
	return cublasLib, nil
}

// openFirst dlopens the first of names (as sonames, then as files in dir)
// that loads and has every symbol, binds them and returns what was opened.
// With preloadLt, a file in dir is preceded by dir/libcublasLt.so<same
// suffix> when that exists: cuBLAS needs it and the loader would not look
// in dir for it. The error lists every candidate and why it failed.
func openFirst(names []string, dir string, syms []symbol, preloadLt bool) (string, uintptr, error) {
	var tried []string
	try := func(path string) uintptr {
		h, err := purego.Dlopen(path, dlFlags)
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s (%s)", path, dlMessage(path, err)))
			return 0
		}
		if err := bindSymbols(h, syms); err != nil {
			tried = append(tried, fmt.Sprintf("%s (%v)", path, err))
			_ = purego.Dlclose(h)
			return 0
		}
		return h
	}
	for _, n := range names {
		if h := try(n); h != 0 {
			return n, h, nil
		}
	}
	if dir != "" {
		for _, n := range names {
			path := filepath.Join(dir, n)
			if preloadLt {
				lt := filepath.Join(dir, strings.Replace(n, "libcublas.", "libcublasLt.", 1))
				if _, err := os.Stat(lt); err == nil {
					if _, err := purego.Dlopen(lt, dlFlags); err != nil {
						tried = append(tried, fmt.Sprintf("%s (%s)", lt, dlMessage(lt, err)))
					}
				}
			}
			if h := try(path); h != 0 {
				return path, h, nil
			}
		}
	}
	if dir == "" {
		tried = append(tried, "no library directory given")
	}
	return "", 0, fmt.Errorf("tried %s", strings.Join(tried, "; "))
}

// dlMessage drops dlerror's leading "path: ", which the caller already shows.
func dlMessage(path string, err error) string {
	return strings.TrimPrefix(err.Error(), path+": ")
}

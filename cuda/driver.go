// Package cuda loads the CUDA driver API and cuBLAS at run time (purego, no
// cgo), so the binary builds and runs without CUDA and uses a GPU only
// where one is present.
//
// A Device owns one primary context, one non-blocking stream and one cuBLAS
// handle bound to that stream; all work goes on that stream in order.
// Device methods are not safe for concurrent use: callers serialise them.
package cuda

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"unsafe"
)

// Ptr is a device address (CUdeviceptr).
type Ptr uint64

// Info describes an opened device and the libraries behind it.
type Info struct {
	Ordinal      int
	Name         string
	Driver       int // cuDriverGetVersion, e.g. 13000
	Major, Minor int // compute capability
	TotalMem     uint64
	CUBLAS       int    // cublasGetVersion_v2, e.g. 130002
	DriverLib    string // the soname or path actually loaded
	CUBLASLib    string
}

// String is one line for `causalrm version`, e.g.
// "cuda:0 NVIDIA H200 (sm_90, 139.8 GiB), driver 13.0, cuBLAS 13.0.2 (libcublas.so.13)".
func (i Info) String() string {
	return fmt.Sprintf("cuda:%d %s (sm_%d%d, %.1f GiB), driver %d.%d, cuBLAS %s (%s)",
		i.Ordinal, i.Name, i.Major, i.Minor, float64(i.TotalMem)/(1<<30),
		i.Driver/1000, i.Driver%1000/10, cublasVersion(i.CUBLAS), i.CUBLASLib)
}

// cublasVersion decodes CUBLAS_VERSION: major*10000+minor*100+patch since
// cuBLAS 12, major*1000+minor*100+patch before.
func cublasVersion(v int) string {
	if v >= 100000 {
		return fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
	}
	return fmt.Sprintf("%d.%d.%d", v/1000, v%1000/100, v%100)
}

// Device is an opened GPU. Not safe for concurrent use.
type Device struct {
	dev     int32
	ctx     uintptr
	stream  uintptr
	handle  uintptr // cuBLAS
	info    Info
	closed  bool
	modules []*Module

	// Heap-resident scratch that C reads through pointers during a call:
	// living in the Device keeps it alive and unmoved across the call.
	alpha64, beta64 float64
	alpha32, beta32 float32
	launch          launchExtra
	argBuf          []byte
}

// Open loads the libraries, initialises the driver and sets up device
// ordinal: primary context, a non-blocking stream and a cuBLAS handle on
// it in CUBLAS_DEFAULT_MATH mode (no TF32 unless SetTF32).
func Open(ordinal int, opts Options) (*Device, error) {
	if ordinal < 0 || ordinal > math.MaxInt32 {
		return nil, fmt.Errorf("cuda: device ordinal %d out of range", ordinal)
	}
	dir := opts.libDir()
	a, err := loadDriver(dir)
	if err != nil {
		return nil, err
	}
	if err := check(a.cuInit(0), "cuInit"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoDriver, err)
	}
	b, err := loadBLAS(dir)
	if err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	d := &Device{info: Info{Ordinal: ordinal, DriverLib: a.path, CUBLASLib: b.path}}
	if err := check(a.cuDeviceGet(&d.dev, int32(ordinal)), fmt.Sprintf("cuDeviceGet(%d)", ordinal)); err != nil {
		var n int32
		if a.cuDeviceGetCount(&n) == 0 {
			err = fmt.Errorf("%w (%d devices)", err, n)
		}
		return nil, err
	}
	if err := d.describe(a); err != nil {
		return nil, err
	}
	if err := check(a.cuDevicePrimaryCtxRetain(&d.ctx, d.dev), "cuDevicePrimaryCtxRetain"); err != nil {
		return nil, err
	}
	if err := d.setup(a, b); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return d, nil
}

// describe fills Info from device queries.
func (d *Device) describe(a *driverAPI) error {
	var ver, major, minor int32
	var total uintptr
	name := make([]byte, 256)
	err := errors.Join(
		check(a.cuDriverGetVersion(&ver), "cuDriverGetVersion"),
		check(a.cuDeviceGetName(&name[0], int32(len(name)), d.dev), "cuDeviceGetName"),
		check(a.cuDeviceGetAttribute(&major, 75, d.dev), "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MAJOR)"),
		check(a.cuDeviceGetAttribute(&minor, 76, d.dev), "cuDeviceGetAttribute(COMPUTE_CAPABILITY_MINOR)"),
		check(a.cuDeviceTotalMem(&total, d.dev), "cuDeviceTotalMem_v2"),
	)
	if err != nil {
		return err
	}
	d.info.Name = goString(&name[0])
	d.info.Driver, d.info.Major, d.info.Minor = int(ver), int(major), int(minor)
	d.info.TotalMem = uint64(total)
	return nil
}

// setup makes the context current and creates the stream and cuBLAS handle.
// The caller holds the OS thread.
func (d *Device) setup(a *driverAPI, b *blasAPI) error {
	if err := check(a.cuCtxSetCurrent(d.ctx), "cuCtxSetCurrent"); err != nil {
		return err
	}
	if err := check(a.cuStreamCreate(&d.stream, 0x1), "cuStreamCreate(CU_STREAM_NON_BLOCKING)"); err != nil {
		return err
	}
	if err := checkBLAS(b.cublasCreate(&d.handle), "cublasCreate_v2"); err != nil {
		return err
	}
	var v int32
	err := errors.Join(
		checkBLAS(b.cublasSetStream(d.handle, d.stream), "cublasSetStream_v2"),
		checkBLAS(b.cublasSetMathMode(d.handle, 0), "cublasSetMathMode(CUBLAS_DEFAULT_MATH)"),
		checkBLAS(b.cublasGetVersion(d.handle, &v), "cublasGetVersion_v2"),
	)
	d.info.CUBLAS = int(v)
	return err
}

// Probe opens ordinal, describes it and closes it again; the error wraps
// ErrNoDriver (or ErrNoCUBLAS) where there is no usable GPU.
func Probe(ordinal int, opts Options) (Info, error) {
	d, err := Open(ordinal, opts)
	if err != nil {
		return Info{}, err
	}
	info := d.Info()
	return info, d.Close()
}

// Info describes the device.
func (d *Device) Info() Info { return d.info }

// enter pins the goroutine to its OS thread and makes the device's context
// current there: the driver's current context is per thread and goroutines
// move between threads. On success the caller must runtime.UnlockOSThread.
func (d *Device) enter() error {
	if d.closed {
		return errClosed
	}
	runtime.LockOSThread()
	if err := check(drv.cuCtxSetCurrent(d.ctx), "cuCtxSetCurrent"); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	return nil
}

// Close destroys the cuBLAS handle, the modules and the stream and
// releases the primary context. A second Close does nothing.
func (d *Device) Close() error {
	if d.closed {
		return nil
	}
	var errs []error
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if d.ctx != 0 {
		errs = append(errs, check(drv.cuCtxSetCurrent(d.ctx), "cuCtxSetCurrent"))
	}
	if d.stream != 0 {
		errs = append(errs, check(drv.cuStreamSynchronize(d.stream), "cuStreamSynchronize"))
	}
	if d.handle != 0 {
		errs = append(errs, checkBLAS(cublasLib.cublasDestroy(d.handle), "cublasDestroy_v2"))
	}
	for _, m := range d.modules {
		errs = append(errs, check(drv.cuModuleUnload(m.h), "cuModuleUnload"))
	}
	if d.stream != 0 {
		errs = append(errs, check(drv.cuStreamDestroy(d.stream), "cuStreamDestroy_v2"))
	}
	if d.ctx != 0 {
		errs = append(errs, check(drv.cuDevicePrimaryCtxRelease(d.dev), "cuDevicePrimaryCtxRelease_v2"))
	}
	d.closed, d.handle, d.modules, d.stream, d.ctx = true, 0, nil, 0, 0
	return errors.Join(errs...)
}

// MemInfo reports free and total device memory.
func (d *Device) MemInfo() (free, total uint64, err error) {
	if err := d.enter(); err != nil {
		return 0, 0, err
	}
	defer runtime.UnlockOSThread()
	var f, t uintptr
	err = check(drv.cuMemGetInfo(&f, &t), "cuMemGetInfo_v2")
	return uint64(f), uint64(t), err
}

// Alloc allocates bytes of device memory; 0 bytes gives Ptr 0, which Free
// accepts. The error names the size and how much memory was free.
func (d *Device) Alloc(bytes int) (Ptr, error) {
	if bytes < 0 {
		return 0, fmt.Errorf("cuda: Alloc(%d bytes): negative size", bytes)
	}
	if bytes == 0 {
		return 0, nil
	}
	if err := d.enter(); err != nil {
		return 0, err
	}
	defer runtime.UnlockOSThread()
	var p uint64
	if err := check(drv.cuMemAlloc(&p, uintptr(bytes)), fmt.Sprintf("cuMemAlloc_v2(%d bytes)", bytes)); err != nil {
		var f, t uintptr
		if drv.cuMemGetInfo(&f, &t) == 0 {
			err = fmt.Errorf("%w; %d of %d bytes free", err, f, t)
		}
		return 0, err
	}
	return Ptr(p), nil
}

// Free releases memory from Alloc; Free(0) does nothing.
func (d *Device) Free(p Ptr) error {
	if p == 0 {
		return nil
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer runtime.UnlockOSThread()
	return check(drv.cuMemFree(uint64(p)), "cuMemFree_v2")
}

// Upload copies bytes from host src to dst on the stream. The driver
// stages pageable memory before returning, so src may be reused at once.
func (d *Device) Upload(dst Ptr, src unsafe.Pointer, bytes int) error {
	if bytes <= 0 {
		return sizeErr("Upload", bytes)
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer runtime.UnlockOSThread()
	return check(drv.cuMemcpyHtoDAsync(uint64(dst), src, uintptr(bytes), d.stream),
		fmt.Sprintf("cuMemcpyHtoDAsync_v2(%d bytes)", bytes))
}

// Download copies bytes from src to host dst and waits for the stream, so
// dst holds the data (and all earlier work is done) when it returns.
func (d *Device) Download(dst unsafe.Pointer, src Ptr, bytes int) error {
	if bytes <= 0 {
		return sizeErr("Download", bytes)
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer runtime.UnlockOSThread()
	if err := check(drv.cuMemcpyDtoHAsync(dst, uint64(src), uintptr(bytes), d.stream),
		fmt.Sprintf("cuMemcpyDtoHAsync_v2(%d bytes)", bytes)); err != nil {
		return err
	}
	return check(drv.cuStreamSynchronize(d.stream), "cuStreamSynchronize")
}

// Memset8 sets bytes bytes at dst to v on the stream.
func (d *Device) Memset8(dst Ptr, v uint8, bytes int) error {
	if bytes <= 0 {
		return sizeErr("Memset8", bytes)
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer runtime.UnlockOSThread()
	return check(drv.cuMemsetD8Async(uint64(dst), v, uintptr(bytes), d.stream),
		fmt.Sprintf("cuMemsetD8Async(%d bytes)", bytes))
}

// Sync waits for all work queued on the stream; asynchronous kernel
// faults surface here.
func (d *Device) Sync() error {
	if err := d.enter(); err != nil {
		return err
	}
	defer runtime.UnlockOSThread()
	return check(drv.cuStreamSynchronize(d.stream), "cuStreamSynchronize")
}

// sizeErr lets a zero-byte copy be a no-op and rejects a negative one.
func sizeErr(op string, bytes int) error {
	if bytes == 0 {
		return nil
	}
	return fmt.Errorf("cuda: %s(%d bytes): negative size", op, bytes)
}

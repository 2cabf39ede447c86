package cuda

import (
	"bytes"
	"fmt"
	"runtime"
	"unsafe"
)

// Module is loaded PTX (or cubin); the Device that loaded it unloads it
// on Close.
type Module struct {
	d *Device
	h uintptr
}

// Function is a kernel in a Module.
type Function struct {
	h      uintptr // CUfunction
	name   string
	params int // bytes of parameters the kernel takes; -1 if the driver cannot say
}

// JIT options for cuModuleLoadDataEx (CUjit_option).
const (
	jitErrorLogBuffer    = 5
	jitErrorLogBufferLen = 6
	jitLogSize           = 16 << 10
)

// LoadModule JIT-compiles ptx for the device. On failure the error carries
// the JIT's error log, which names the offending PTX line.
func (d *Device) LoadModule(ptx []byte) (*Module, error) {
	if len(ptx) == 0 {
		return nil, fmt.Errorf("cuda: LoadModule: empty image")
	}
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer runtime.UnlockOSThread()

	image := make([]byte, len(ptx)+1) // the driver wants a NUL-terminated image
	copy(image, ptx)
	// The log buffer is written by C through an address stored as an
	// integer in vals: pin it so it is on the heap and stays put.
	log := make([]byte, jitLogSize)
	var pin runtime.Pinner
	pin.Pin(&log[0])
	defer pin.Unpin()
	opts := []int32{jitErrorLogBuffer, jitErrorLogBufferLen}
	vals := []uintptr{uintptr(unsafe.Pointer(&log[0])), uintptr(len(log))}

	var h uintptr
	r := drv.cuModuleLoadDataEx(&h, unsafe.Pointer(&image[0]), uint32(len(opts)), &opts[0], &vals[0])
	runtime.KeepAlive(image)
	if err := check(r, fmt.Sprintf("cuModuleLoadDataEx(%d bytes)", len(ptx))); err != nil {
		msg := log[:min(int(vals[1]), len(log))]
		if i := bytes.IndexByte(msg, 0); i >= 0 {
			msg = msg[:i]
		}
		if len(msg) > 0 {
			return nil, fmt.Errorf("%w\n%s", err, msg)
		}
		return nil, err
	}
	m := &Module{d: d, h: h}
	d.modules = append(d.modules, m)
	return m, nil
}

// Function looks up the kernel called name (its mangled name for C++).
func (m *Module) Function(name string) (Function, error) {
	if err := m.d.enter(); err != nil {
		return Function{}, err
	}
	defer runtime.UnlockOSThread()
	var f uintptr
	if err := check(drv.cuModuleGetFunction(&f, m.h, name), fmt.Sprintf("cuModuleGetFunction(%q)", name)); err != nil {
		return Function{}, err
	}
	return Function{h: f, name: name, params: paramSize(f)}, nil
}

// paramSize is the end of the kernel's last parameter (cuFuncGetParamInfo,
// driver 12.4+), or -1 where the driver lacks it. cuLaunchKernel rejects a
// parameter buffer longer than this (as CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES)
// and silently accepts a shorter one, so Launch needs the exact size.
func paramSize(f uintptr) int {
	if drv.cuFuncGetParamInfo == nil {
		return -1
	}
	end := 0
	for i := uintptr(0); ; i++ {
		var off, size uintptr
		if drv.cuFuncGetParamInfo(f, i, &off, &size) != 0 {
			return end
		}
		end = max(end, int(off+size))
	}
}

// launchExtra is cuLaunchKernel's `extra` array: {BUFFER_POINTER, &buf,
// BUFFER_SIZE, &size, END}. The markers 1, 2, 0 are not pointers, so the
// slots are uintptr; it lives in the Device, so its heap address is stable.
type launchExtra struct {
	slots [5]uintptr
	size  uintptr
}

// Launch queues f on the device's stream with the parameter buffer args
// (see Pack). The driver copies args during the call, so it may be reused.
// Where the driver reports the kernel's parameter size, args must cover it
// and may exceed it only by Pack's trailing padding; only that size is passed.
func (d *Device) Launch(f Function, grid, block [3]uint32, shared uint32, args []byte) error {
	if f.h == 0 {
		return fmt.Errorf("cuda: Launch: zero Function")
	}
	n := len(args)
	if f.params >= 0 {
		if n < f.params || n > (f.params+7)&^7 {
			return fmt.Errorf("cuda: Launch(%s): kernel takes %d bytes of parameters, got %d", f.name, f.params, n)
		}
		n = f.params
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer runtime.UnlockOSThread()
	r := d.launch1(f, grid, block, shared, args[:n])
	if r == errLaunchOutOfResources && f.params < 0 && n%8 == 0 && n >= 4 {
		// Without the kernel's parameter size, the buffer may end in Pack's
		// 4 bytes of padding after a 4-byte parameter: retry without them.
		if d.launch1(f, grid, block, shared, args[:n-4]) == 0 {
			r = 0
		}
	}
	return check(r, fmt.Sprintf("cuLaunchKernel(%s, grid %v, block %v, shared %d, %d bytes of parameters)", f.name, grid, block, shared, n))
}

const errLaunchOutOfResources = 701 // CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES

// launch1 calls cuLaunchKernel with args as the single parameter buffer.
// The caller holds the OS thread with the context current.
func (d *Device) launch1(f Function, grid, block [3]uint32, shared uint32, args []byte) int32 {
	var extra unsafe.Pointer
	if len(args) > 0 {
		// Copy into Device-owned heap memory so the addresses stored in
		// the extra array stay valid however the caller allocated args.
		if cap(d.argBuf) < len(args) {
			d.argBuf = make([]byte, len(args))
		}
		buf := d.argBuf[:len(args)]
		copy(buf, args)
		e := &d.launch
		e.size = uintptr(len(buf))
		e.slots = [5]uintptr{1, uintptr(unsafe.Pointer(&buf[0])), 2, uintptr(unsafe.Pointer(&e.size)), 0}
		extra = unsafe.Pointer(&e.slots[0])
	}
	r := drv.cuLaunchKernel(f.h, grid[0], grid[1], grid[2], block[0], block[1], block[2],
		shared, d.stream, nil, extra)
	runtime.KeepAlive(d)
	return r
}

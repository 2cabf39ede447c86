package gpu

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/causalrm/causalrm/nn"
)

// ErrDeviceSpec reports a --device value that is neither cpu nor cuda[:N].
var ErrDeviceSpec = errors.New("gpu: bad device")

// ParseDevice reads "cpu", "cuda" (device 0) or "cuda:N". It returns
// ordinal -1 for the CPU.
func ParseDevice(s string) (ordinal int, err error) {
	switch s = strings.TrimSpace(strings.ToLower(s)); {
	case s == "" || s == "cpu":
		return -1, nil
	case s == "cuda":
		return 0, nil
	case strings.HasPrefix(s, "cuda:"):
		n, err := strconv.Atoi(s[len("cuda:"):])
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%w %q: the ordinal after cuda: must be a number >= 0", ErrDeviceSpec, s)
		}
		return n, nil
	}
	return 0, fmt.Errorf("%w %q: want cpu, cuda or cuda:N", ErrDeviceSpec, s)
}

// Device is one backend shared by every engine of a process: it
// serialises their calls (one stream), keeps each embedding matrix
// uploaded once, and frees the buffers of engines that are gone.
type Device struct {
	mu    sync.Mutex
	b     Backend
	close func() error
	data  map[dataKey]*dataEntry

	pmu     sync.Mutex
	pending []Ptr
}

type dataKey struct {
	p *float32
	n int
}

type dataEntry struct {
	ptr    Ptr
	sample [16]float32
}

// NewDevice wraps a backend; close (may be nil) runs at Close.
func NewDevice(b Backend, close func() error) *Device {
	return &Device{b: b, close: close, data: map[dataKey]*dataEntry{}}
}

// Name is the backend's.
func (d *Device) Name() string { return d.b.Name() }

// Runner is an nn.RunnerFactory of engines on this device.
func (d *Device) Runner(m *nn.MLP, exact bool, xexp []int, batch int) (nn.Runner, error) {
	var e *Engine
	err := d.do(func() error {
		var err error
		e, err = newEngine(d, m, exact, xexp, batch)
		return err
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Close frees everything and closes the backend.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, v := range d.data {
		d.b.Free(v.ptr)
		delete(d.data, k)
	}
	if d.close != nil {
		err := d.close()
		d.close = nil
		return err
	}
	return nil
}

// do runs f with the device to itself, after the frees queued by
// engines that were garbage collected.
func (d *Device) do(f func() error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pmu.Lock()
	p := d.pending
	d.pending = nil
	d.pmu.Unlock()
	d.free(p...)
	return f()
}

func (d *Device) freeLater(p ...Ptr) {
	d.pmu.Lock()
	d.pending = append(d.pending, p...)
	d.pmu.Unlock()
}

func (d *Device) free(p ...Ptr) {
	for _, x := range p {
		d.b.Free(x)
	}
}

// alloc takes bytes of device memory for what, refusing with the sizes
// named when they do not fit.
func (d *Device) alloc(bytes int, what string) (Ptr, error) {
	free, total, err := d.b.MemInfo()
	if err != nil {
		return 0, err
	}
	if uint64(bytes) > free {
		return 0, fmt.Errorf("gpu %s: %s need %s of device memory, %s free of %s", d.b.Name(), what, mib(uint64(bytes)), mib(free), mib(total))
	}
	return d.b.Alloc(bytes)
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// embeddings returns x on the device, uploading it the first time (and
// again if its contents changed in place: a sample of 16 values is
// compared on every call).
func (d *Device) embeddings(x []float32) (Ptr, error) {
	if len(x) == 0 {
		return 0, nil
	}
	k := dataKey{unsafe.SliceData(x), len(x)}
	var s [16]float32
	for i := range s {
		s[i] = x[i*(len(x)-1)/15]
	}
	if e, ok := d.data[k]; ok {
		if e.sample == s {
			return e.ptr, nil
		}
		d.b.Free(e.ptr)
		delete(d.data, k)
	}
	p, err := d.alloc(4*len(x), fmt.Sprintf("the embeddings (%d values)", len(x)))
	if err != nil {
		return 0, err
	}
	if err := upload(d.b, p, x); err != nil {
		d.b.Free(p)
		return 0, err
	}
	d.data[k] = &dataEntry{ptr: p, sample: s}
	return p, nil
}

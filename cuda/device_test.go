package cuda

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"

	"gonum.org/v1/gonum/blas/gonum"
)

// openDevice opens device 0 or skips: these tests need a GPU.
func openDevice(t *testing.T) *Device {
	t.Helper()
	d, err := Open(0, Options{})
	if err != nil {
		t.Skipf("no CUDA device: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	t.Logf("%s (driver %s, cuBLAS %s)", d.Info(), d.Info().DriverLib, d.Info().CUBLASLib)
	return d
}

// upload copies x to new device memory freed at the end of the test.
func upload[T any](t *testing.T, d *Device, x []T) Ptr {
	t.Helper()
	n := len(x) * int(unsafe.Sizeof(x[0]))
	p, err := d.Alloc(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Free(p) })
	if err := d.Upload(p, unsafe.Pointer(&x[0]), n); err != nil {
		t.Fatal(err)
	}
	return p
}

func download[T any](t *testing.T, d *Device, x []T, p Ptr) {
	t.Helper()
	if err := d.Download(unsafe.Pointer(&x[0]), p, len(x)*int(unsafe.Sizeof(x[0]))); err != nil {
		t.Fatal(err)
	}
}

func TestDeviceRoundTrip(t *testing.T) {
	d := openDevice(t)
	rng := rand.New(rand.NewPCG(1, 2))

	src := make([]float64, 1000)
	for i := range src {
		src[i] = rng.NormFloat64()
	}
	p := upload(t, d, src)
	got := make([]float64, len(src))
	download(t, d, got, p)
	if !slicesEqual(got, src) {
		t.Fatal("download differs from upload")
	}
	if err := d.Memset8(p, 0xab, 16); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 24)
	download(t, d, raw, p)
	for i, b := range raw {
		want := byte(0xab)
		if i >= 16 {
			want = byte(math.Float64bits(src[2]) >> (8 * (i - 16)))
		}
		if b != want {
			t.Fatalf("after Memset8, byte %d = %#x, want %#x", i, b, want)
		}
	}
	free, total, err := d.MemInfo()
	if err != nil || free == 0 || free > total {
		t.Errorf("MemInfo = %d, %d, %v", free, total, err)
	}
	if _, err := d.Alloc(1 << 50); err == nil || !strings.Contains(err.Error(), "cuMemAlloc_v2(1125899906842624 bytes)") ||
		!strings.Contains(err.Error(), "bytes free") {
		t.Errorf("Alloc(1 PiB): %v, want an error naming the size and free memory", err)
	}

	const m, n, k = 37, 53, 29
	for _, tA := range []bool{false, true} {
		for _, tB := range []bool{false, true} {
			ra, ca, rb, cb := storedDims(tA, tB, m, n, k)
			lda, ldb, ldc := ca+3, cb+1, n+2
			seed := rng.Uint64()
			a, b, c := intMatrix(ra, ca, lda, &seed), intMatrix(rb, cb, ldb, &seed), intMatrix(m, n, ldc, &seed)
			want := append([]float64(nil), c...)
			gonum.Implementation{}.Dgemm(trans(tA), trans(tB), m, n, k, 2, a, lda, b, ldb, -3, want, ldc)

			pc := upload(t, d, c)
			if err := d.Dgemm(tA, tB, m, n, k, 2, upload(t, d, a), lda, upload(t, d, b), ldb, -3, pc, ldc); err != nil {
				t.Fatal(err)
			}
			got := make([]float64, len(c))
			download(t, d, got, pc)
			if !slicesEqual(got, want) {
				t.Errorf("Dgemm tA=%v tB=%v differs from gonum", tA, tB)
			}

			// float32: random operands, compared with gonum in float64.
			a32, b32, c32 := randF32(rng, a), randF32(rng, b), randF32(rng, c)
			want = widen(c32)
			gonum.Implementation{}.Dgemm(trans(tA), trans(tB), m, n, k, 1.5, widen(a32), lda, widen(b32), ldb, 0.5, want, ldc)
			pc = upload(t, d, c32)
			if err := d.Sgemm(tA, tB, m, n, k, 1.5, upload(t, d, a32), lda, upload(t, d, b32), ldb, 0.5, pc, ldc); err != nil {
				t.Fatal(err)
			}
			got32 := make([]float32, len(c32))
			download(t, d, got32, pc)
			var maxErr, maxRef float64
			for i := range want {
				maxErr = math.Max(maxErr, math.Abs(float64(got32[i])-want[i]))
				maxRef = math.Max(maxRef, math.Abs(want[i]))
			}
			if rel := maxErr / maxRef; !(rel < 1e-5) {
				t.Errorf("Sgemm tA=%v tB=%v: relative error %.3g", tA, tB, rel)
			}
		}
	}
	if err := d.SetTF32(true); err != nil {
		t.Error(err)
	}
	if err := d.SetTF32(false); err != nil {
		t.Error(err)
	}
}

// randF32 is a float32 matrix shaped like x: uniform in [-1, 1), padding kept.
func randF32(rng *rand.Rand, x []float64) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = float32(v)
		if v != 1e6 {
			y[i] = float32(2*rng.Float64() - 1)
		}
	}
	return y
}

func widen(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

// axpbPTX computes y[i] = float32(float64(a*x[i]) + b) for i < n: its
// parameters (Ptr, Ptr, float32, float64, int32) need padding, checking
// Pack and Launch's parameter buffer against the compiler's layout.
const axpbPTX = `
.version 7.0
.target sm_75
.address_size 64

.visible .entry axpb(.param .u64 y, .param .u64 x, .param .f32 a, .param .f64 b, .param .u32 n)
{
	.reg .pred %p<2>;
	.reg .b32 %r<6>;
	.reg .f32 %f<5>;
	.reg .f64 %d<4>;
	.reg .b64 %rd<8>;

	ld.param.u64 %rd1, [y];
	ld.param.u64 %rd2, [x];
	ld.param.f32 %f1, [a];
	ld.param.f64 %d1, [b];
	ld.param.u32 %r1, [n];
	mov.u32 %r2, %ctaid.x;
	mov.u32 %r3, %ntid.x;
	mov.u32 %r4, %tid.x;
	mad.lo.s32 %r5, %r2, %r3, %r4;
	setp.ge.u32 %p1, %r5, %r1;
	@%p1 bra DONE;
	cvta.to.global.u64 %rd3, %rd2;
	cvta.to.global.u64 %rd4, %rd1;
	mul.wide.u32 %rd5, %r5, 4;
	add.s64 %rd6, %rd3, %rd5;
	ld.global.f32 %f2, [%rd6];
	mul.rn.f32 %f3, %f1, %f2;
	cvt.f64.f32 %d2, %f3;
	add.rn.f64 %d3, %d2, %d1;
	cvt.rn.f32.f64 %f4, %d3;
	add.s64 %rd7, %rd4, %rd5;
	st.global.f32 [%rd7], %f4;
DONE:
	ret;
}
`

func TestLaunchPTX(t *testing.T) {
	d := openDevice(t)
	if _, err := d.LoadModule([]byte(".version 7.0\n.target sm_75\n.address_size 64\nbogus;\n")); err == nil ||
		!strings.Contains(err.Error(), "cuModuleLoadDataEx") || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("LoadModule(bad PTX): %v, want an error carrying the JIT log", err)
	} else {
		t.Logf("bad PTX: %v", err)
	}
	mod, err := d.LoadModule([]byte(axpbPTX))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mod.Function("nope"); err == nil {
		t.Error("Function(nope) succeeded")
	}
	f, err := mod.Function("axpb")
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000
	x := make([]float32, n+24) // 24 guard elements past n
	for i := range x {
		x[i] = float32(i)
	}
	px, py := upload(t, d, x), upload(t, d, make([]float32, len(x)))
	if err := d.Launch(f, [3]uint32{(n + 127) / 128, 1, 1}, [3]uint32{128, 1, 1}, 0,
		Pack(py, px, float32(2), 0.25, n)); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	checkAxpb(t, d, py, len(x), n, 2, 0.25)

	if f.params != 36 {
		t.Errorf("axpb takes %d bytes of parameters, want 36", f.params)
	}
	if err := d.Launch(f, [3]uint32{1, 1, 1}, [3]uint32{1, 1, 1}, 0, Pack(py, px, float32(2), 0.25)); err == nil ||
		!strings.Contains(err.Error(), "takes 36 bytes of parameters, got 32") {
		t.Errorf("Launch with a parameter missing: %v", err)
	}
	// As on a driver without cuFuncGetParamInfo: the padded buffer is retried.
	old := Function{h: f.h, name: f.name, params: -1}
	if err := d.Launch(old, [3]uint32{(n + 127) / 128, 1, 1}, [3]uint32{128, 1, 1}, 0,
		Pack(py, px, float32(3), 0.5, n)); err != nil {
		t.Fatal(err)
	}
	checkAxpb(t, d, py, len(x), n, 3, 0.5)
}

// checkAxpb checks y (len elements) against axpb of x[i] = i for i < n.
func checkAxpb(t *testing.T, d *Device, py Ptr, size, n int, a float32, b float64) {
	t.Helper()
	y := make([]float32, size)
	download(t, d, y, py)
	for i, v := range y {
		want := float32(0)
		if i < n {
			want = a*float32(i) + float32(b)
		}
		if v != want {
			t.Fatalf("y[%d] = %g, want %g", i, v, want)
		}
	}
}

func TestClosedDevice(t *testing.T) {
	d := openDevice(t)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Alloc(8); !errors.Is(err, errClosed) {
		t.Errorf("Alloc after Close: %v", err)
	}
	if err := d.Dgemm(false, false, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0, 1); !errors.Is(err, errClosed) {
		t.Errorf("Dgemm after Close: %v", err)
	}
}

// BenchmarkLaunch measures the host cost of one Launch (purego call,
// thread pinning, context check) for a tiny kernel.
func BenchmarkLaunch(b *testing.B) {
	d, err := Open(0, Options{})
	if err != nil {
		b.Skipf("no CUDA device: %v", err)
	}
	defer d.Close()
	mod, err := d.LoadModule([]byte(axpbPTX))
	if err != nil {
		b.Fatal(err)
	}
	f, err := mod.Function("axpb")
	if err != nil {
		b.Fatal(err)
	}
	p, err := d.Alloc(4 * 128)
	if err != nil {
		b.Fatal(err)
	}
	args := Pack(p, p, float32(1), 0.0, 128)
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Launch(f, [3]uint32{1, 1, 1}, [3]uint32{128, 1, 1}, 0, args); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
}

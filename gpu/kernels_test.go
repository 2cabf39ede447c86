package gpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

// buf is a kernel argument that lives in device memory: uploaded before
// the launch (outputs too, poisoned, so an unwritten element shows) and
// downloaded after it.
type buf struct{ data any }

// launchOn runs one kernel on b with the buffers' contents and returns
// every buffer's contents afterwards.
func launchOn(t *testing.T, b Backend, name string, grid, block [3]uint32, args ...any) []any {
	t.Helper()
	var ptrs []Ptr
	var outs []any
	call := make([]any, len(args))
	for i, a := range args {
		bf, ok := a.(*buf)
		if !ok {
			call[i] = a
			continue
		}
		v := reflect.ValueOf(bf.data)
		size := v.Len() * int(v.Type().Elem().Size())
		p, err := b.Alloc(size)
		if err != nil {
			t.Fatal(err)
		}
		ptrs = append(ptrs, p)
		switch d := bf.data.(type) {
		case []float64:
			err = upload(b, p, d)
		case []float32:
			err = upload(b, p, d)
		case []int32:
			err = upload(b, p, d)
		case []int64:
			err = upload(b, p, d)
		}
		if err != nil {
			t.Fatal(err)
		}
		call[i] = p
	}
	if err := b.Launch(name, grid, block, call...); err != nil {
		t.Fatalf("%s on %s: %v", name, b.Name(), err)
	}
	k := 0
	for _, a := range args {
		bf, ok := a.(*buf)
		if !ok {
			continue
		}
		p := ptrs[k]
		k++
		var err error
		switch d := bf.data.(type) {
		case []float64:
			o := make([]float64, len(d))
			err, outs = download(b, o, p), append(outs, o)
		case []float32:
			o := make([]float32, len(d))
			err, outs = download(b, o, p), append(outs, o)
		case []int32:
			o := make([]int32, len(d))
			err, outs = download(b, o, p), append(outs, o)
		case []int64:
			o := make([]int64, len(d))
			err, outs = download(b, o, p), append(outs, o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range ptrs {
		b.Free(p)
	}
	return outs
}

// bitsEqual compares two buffers' contents bit for bit.
func bitsEqual(a, b any) (int, bool) {
	switch x := a.(type) {
	case []float64:
		y := b.([]float64)
		for i := range x {
			if math.Float64bits(x[i]) != math.Float64bits(y[i]) && !(x[i] != x[i] && y[i] != y[i]) {
				return i, false
			}
		}
	case []float32:
		y := b.([]float32)
		for i := range x {
			if math.Float32bits(x[i]) != math.Float32bits(y[i]) && !(x[i] != x[i] && y[i] != y[i]) {
				return i, false
			}
		}
	default:
		if !reflect.DeepEqual(a, b) {
			return -1, false
		}
	}
	return 0, true
}

// edgy draws values over a wide range of magnitudes with zeros, negative
// zeros, subnormals and (where nan) NaNs and infinities among them.
func edgy(rng *rand.Rand, n int, nan bool) []float64 {
	v := make([]float64, n)
	for i := range v {
		switch r := rng.IntN(40); {
		case r == 0:
			v[i] = 0
		case r == 1:
			v[i] = math.Copysign(0, -1)
		case r == 2:
			v[i] = 5e-324 * float64(rng.IntN(1000))
		case r == 3 && nan:
			v[i] = math.NaN()
		case r == 4 && nan:
			v[i] = math.Inf(1 - 2*rng.IntN(2))
		default:
			v[i] = rng.NormFloat64() * math.Ldexp(1, rng.IntN(80)-40)
		}
	}
	return v
}

func to32(v []float64) []float32 {
	o := make([]float32, len(v))
	for i, x := range v {
		o[i] = float32(x)
	}
	return o
}

func ints(rng *rand.Rand, n, lo, hi int) []int32 {
	o := make([]int32, n)
	for i := range o {
		o[i] = int32(lo + rng.IntN(hi-lo))
	}
	return o
}

func poison64(n int) []float64 {
	o := make([]float64, n)
	for i := range o {
		o[i] = -12345.678
	}
	return o
}

// TestKernelsMatchHost holds every CUDA kernel to its host emulation bit
// for bit, on awkward sizes and values (the GPU half of the kernel tests;
// the host half is the engine test against the CPU engine).
func TestKernelsMatchHost(t *testing.T) {
	host, _ := NewHost()
	var other Backend
	if cu := cudaForTest(t); cu != nil {
		other = cu.b
	} else {
		// Without a GPU the cases still run, host against host: that checks
		// the cases themselves (sizes, argument lists), not the kernels.
		other, _ = NewHost()
	}
	rng := rand.New(rand.NewPCG(11, 12))
	const m, d, n, out = 37, 300, 50, 41
	rows := ints(rng, m, 0, n)
	x := to32(edgy(rng, n*d, false))
	w := to32(edgy(rng, out*d, true))
	wClean := to32(edgy(rng, out*d, false))
	cs := make([]float64, d)
	for j := range cs {
		cs[j] = math.Ldexp(1, rng.IntN(60)-30)
	}
	v := edgy(rng, m*d, true)
	vClean := edgy(rng, m*d, false)
	integers := make([]float64, max(m, out)*d)
	for i := range integers {
		integers[i] = math.Trunc(rng.NormFloat64() * math.Ldexp(1, rng.IntN(52)))
	}
	// Column reductions over more rows than one block's 256, with dst not
	// zero: they combine into it.
	const tall = 700
	vTall, vTallClean, intTall := edgy(rng, tall*d, true), edgy(rng, tall*d, false), make([]float64, tall*d)
	for i := range intTall {
		intTall[i] = math.Trunc(rng.NormFloat64() * math.Ldexp(1, rng.IntN(50)))
	}
	row := func(k int) ([3]uint32, [3]uint32) { return perRow(k) }
	colRows := func(k int) ([3]uint32, [3]uint32) { return perColRows(tall, k) }
	cases := []struct {
		name string
		geo  func(int) ([3]uint32, [3]uint32)
		n    int
		args []any
	}{
		{"widen_rows", flat, m * d, []any{&buf{poison64(m * d)}, &buf{x}, &buf{rows}, &buf{cs}, int32(m), int32(d)}},
		{"gather_rows", flat, m * d, []any{&buf{to32(poison64(m * d))}, &buf{x}, &buf{rows}, int32(m), int32(d)}},
		{"quant_wrows", row, out, []any{&buf{poison64(out * d)}, &buf{ints(rng, out, 0, 1)}, &buf{w}, &buf{cs}, int32(out), int32(d), int32(30)}},
		{"quant_wrows", row, out, []any{&buf{poison64(out * d)}, &buf{ints(rng, out, 0, 1)}, &buf{wClean}, Ptr(0), int32(out), int32(d), int32(17)}},
		{"fwd_exact", flat, m * out, []any{&buf{edgy(rng, m*out, false)}, &buf{poison64(m * out)}, &buf{ints(rng, m, -60, 60)}, &buf{ints(rng, out, -60, 60)}, &buf{to32(edgy(rng, out, false))}, 0.01, int32(m), int32(out)}},
		{"fwd_exact", flat, m * out, []any{&buf{edgy(rng, m*out, false)}, Ptr(0), Ptr(0), &buf{ints(rng, out, -60, 60)}, &buf{to32(edgy(rng, out, false))}, 0.01, int32(m), int32(out)}},
		{"quant_rows", row, m, []any{&buf{poison64(m * d)}, &buf{ints(rng, m, 0, 1)}, &buf{v}, int32(m), int32(d), int32(26)}},
		{"col_grid", flat, d, []any{&buf{poison64(d)}, &buf{w}, int32(out), int32(d), int32(26)}},
		{"quant_wcols", flat, out * d, []any{&buf{poison64(out * d)}, &buf{wClean}, &buf{cs}, int32(out), int32(d)}},
		{"bwd_exact", flat, m * d, []any{&buf{vClean}, &buf{ints(rng, m, -50, 50)}, &buf{cs}, &buf{edgy(rng, m*d, false)}, 0.01, int32(m), int32(d)}},
		{"col_maxabs", colRows, d, []any{&buf{edgy(rng, d, true)}, &buf{vTall}, int32(tall), int32(d)}},
		{"zero64", flat, d, []any{&buf{make([]int64, d)}, int32(d)}},
		{"quant_cols", flat, m * d, []any{&buf{poison64(m * d)}, &buf{vClean}, &buf{ints(rng, d, -40, 40)}, int32(m), int32(d)}},
		{"to_int64", flat, m * d, []any{&buf{make([]int64, m*d)}, &buf{integers[:m*d]}, int32(m * d)}},
		{"col_sum_i64", colRows, d, []any{&buf{make([]int64, d)}, &buf{intTall}, int32(tall), int32(d)}},
		{"fwd_fast", flat, m * out, []any{&buf{to32(edgy(rng, m*out, false))}, &buf{to32(poison64(m * out))}, &buf{to32(edgy(rng, out, false))}, float32(0.01), int32(m), int32(out)}},
		{"grad_exact", flat, out * d, []any{&buf{to32(poison64(out * d))}, &buf{i64(integers[:out*d])}, &buf{ints(rng, out, -70, 20)}, &buf{ints(rng, d, -30, 30)}, 1.0 / 3, int32(out), int32(d)}},
		{"grad_bias", flat, out, []any{&buf{to32(poison64(out))}, &buf{i64(integers[:out])}, &buf{ints(rng, out, -70, 20)}, 1.0 / 7, int32(out)}},
		{"scale_f32", flat, m * d, []any{&buf{to32(poison64(m * d))}, &buf{to32(v)}, float32(1.0 / 3), &buf{[]int32{math.MaxInt32}}, int32(m * d)}},
		{"adam", flat, m * d, []any{&buf{to32(edgy(rng, m*d, false))}, &buf{to32(edgy(rng, m*d, false))}, &buf{to32(edgy(rng, m*d, false))}, &buf{absf(to32(edgy(rng, m*d, false)))}, float32(5e-4 / 0.1), float32(1 / math.Sqrt(0.001)), float32(0.9), float32(0.999), float32(1e-6), float32(1e-8), int32(m * d)}},
		{"col_sum_f32", colRows, d, []any{&buf{to32(poison64(3 * d))}, &buf{to32(vTallClean)}, int32(tall), int32(d)}},
		{"col_sum_f32_fin", flat, d, []any{&buf{to32(poison64(d))}, &buf{to32(edgy(rng, 3*d, false))}, int32(3), int32(d)}},
		{"bwd_fast", flat, m * d, []any{&buf{to32(vClean)}, &buf{to32(edgy(rng, m*d, false))}, float32(0.01), int32(m * d)}},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%d_%s", i, c.name), func(t *testing.T) {
			g, bl := c.geo(c.n)
			want := launchOn(t, host, c.name, g, bl, c.args...)
			got := launchOn(t, other, c.name, g, bl, c.args...)
			for k := range want {
				if i, ok := bitsEqual(want[k], got[k]); !ok {
					t.Fatalf("buffer %d differs at element %d: host %v, %s %v", k, i, elem(want[k], i), other.Name(), elem(got[k], i))
				}
			}
		})
	}
}

func i64(v []float64) []int64 {
	o := make([]int64, len(v))
	for i, x := range v {
		o[i] = int64(x)
	}
	return o
}

func absf(v []float32) []float32 {
	for i, x := range v {
		v[i] = float32(math.Abs(float64(x)))
	}
	return v
}

func elem(v any, i int) any {
	if i < 0 {
		return v
	}
	return reflect.ValueOf(v).Index(i).Interface()
}

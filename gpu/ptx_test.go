package gpu

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/causalrm/causalrm/gpu/kernels"
	"github.com/causalrm/causalrm/nn"
)

// TestPTXHasNoFMA: the exact kernels must round every multiply and add on
// its own, as the CPU loops do; a contracted fma would change bits.
func TestPTXHasNoFMA(t *testing.T) {
	if i := bytes.Index(kernels.PTX, []byte("fma.")); i >= 0 {
		t.Fatalf("kernels.ptx contains an fma at byte %d: regenerate it with scripts/gen-ptx.sh (no contraction)", i)
	}
	if !bytes.Contains(kernels.PTX, []byte("mul.rn.f64")) {
		t.Fatal("kernels.ptx has no mul.rn.f64: not the exact kernels?")
	}
}

// TestPTXMatchesSources: every kernel of kernels.cu is in the committed
// PTX with as many parameters as the source declares, and the host
// emulation has each of them and no other.
func TestPTXMatchesSources(t *testing.T) {
	src, err := os.ReadFile("kernels/kernels.cu")
	if err != nil {
		t.Fatal(err)
	}
	params, err := ptxParams(kernels.PTX)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`extern "C" __global__ void (\w+)\(([^)]*)\)`)
	found := 0
	for _, m := range re.FindAllSubmatch(src, -1) {
		name, args := string(m[1]), strings.Split(string(m[2]), ",")
		found++
		p, ok := params[name]
		if !ok {
			t.Errorf("kernel %s of kernels.cu is not in kernels.ptx: regenerate it (scripts/gen-ptx.sh)", name)
			continue
		}
		if len(p) != len(args) {
			t.Errorf("kernel %s: %d parameters in kernels.cu, %d in kernels.ptx", name, len(args), len(p))
		}
		if _, ok := hostKernels[name]; !ok {
			t.Errorf("kernel %s has no host emulation", name)
		}
	}
	if found != len(params) || found < 10 {
		t.Fatalf("%d kernels in kernels.cu, %d in kernels.ptx", found, len(params))
	}
	for name := range hostKernels {
		if _, ok := params[name]; !ok {
			t.Errorf("host emulation of %s, a kernel not in kernels.ptx", name)
		}
	}
}

// TestLaunchChecks: a launch whose arguments do not match the PTX, or
// whose block shape does not match the kernel's reduction, is refused.
func TestLaunchChecks(t *testing.T) {
	h, _ := NewHost()
	p, _ := h.Alloc(64)
	cases := []struct {
		name  string
		block [3]uint32
		args  []any
		want  string
	}{
		{"to_int64", [3]uint32{256, 1, 1}, []any{p, p, 3}, "argument 2 is int"},
		{"to_int64", [3]uint32{256, 1, 1}, []any{p, p}, "takes 3 arguments"},
		{"fwd_fast", [3]uint32{256, 1, 1}, []any{p, p, p, 0.5, int32(1), int32(1)}, "argument 3 is float64"},
		{"quant_rows", [3]uint32{128, 1, 1}, []any{p, p, p, int32(1), int32(1), int32(3)}, "needs blocks of"},
		{"nope", [3]uint32{1, 1, 1}, nil, "no kernel nope"},
	}
	for _, c := range cases {
		err := h.Launch(c.name, [3]uint32{1, 1, 1}, c.block, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: got %v, want an error containing %q", c.name, c.args, err, c.want)
		}
	}
}

// TestMemoryPlanRefused: an engine or an embedding matrix that does not
// fit is refused with the sizes named, and nothing stays allocated.
func TestMemoryPlanRefused(t *testing.T) {
	h, _ := NewHost()
	h.Limit = 1 << 20
	dev := NewDevice(h, nil)
	m, _ := nn.New(nn.Config{Dims: []int{512, 256, 1}, Slope: 0.01}, 1) // 131k params: 1.5 MiB of buffers
	xexp := make([]int, 512)
	if _, err := dev.Runner(m, true, xexp, 64); err == nil || !strings.Contains(err.Error(), "MiB free of 1.0 MiB") {
		t.Fatalf("got %v, want a refusal naming the free memory", err)
	}
	if h.used != 0 {
		t.Fatalf("%d bytes left allocated after a refused engine", h.used)
	}
	small, _ := nn.New(nn.Config{Dims: []int{8, 4, 1}, Slope: 0.01}, 1)
	r, err := dev.Runner(small, true, make([]int, 8), 16)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 8*40000) // 1.2 MiB
	r.Forward(x, []int32{0, 1})
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "the embeddings (320000 values) need 1.2 MiB") {
		t.Fatalf("got %v, want a refusal of the embeddings with their size", err)
	}
}

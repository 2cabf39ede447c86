package cuda

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebitengine/purego"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

func TestPack(t *testing.T) {
	got := Pack(Ptr(0x1122334455667788), int32(-2), float64(1.5), float32(2.5), int32(7), Ptr(9))
	want := make([]byte, 40)
	le := binary.LittleEndian
	le.PutUint64(want[0:], 0x1122334455667788) // Ptr at 0
	le.PutUint32(want[8:], 0xfffffffe)         // int32 at 8, then 4 bytes padding
	le.PutUint64(want[16:], math.Float64bits(1.5))
	le.PutUint32(want[24:], math.Float32bits(2.5))
	le.PutUint32(want[28:], 7)
	le.PutUint64(want[32:], 9)
	if !bytes.Equal(got, want) {
		t.Errorf("Pack mix:\n got %x\nwant %x", got, want)
	}

	// 0:u32, 8:i64, 16:int, 24:u64, 32:f32, 36 rounded to 40
	got = Pack(uint32(1), int64(-1), int(-3), uint64(5), float32(-1))
	want = make([]byte, 40)
	le.PutUint32(want[0:], 1)
	le.PutUint64(want[8:], math.MaxUint64)
	le.PutUint32(want[16:], uint32(0xfffffffd))
	le.PutUint64(want[24:], 5)
	le.PutUint32(want[32:], math.Float32bits(-1))
	if !bytes.Equal(got, want) {
		t.Errorf("Pack second mix:\n got %x\nwant %x", got, want)
	}
	if got := Pack(int32(1)); len(got) != 8 {
		t.Errorf("Pack(int32) is %d bytes, want 8 (rounded up)", len(got))
	}
	if got := Pack(); len(got) != 0 {
		t.Errorf("Pack() is %d bytes, want 0", len(got))
	}

	for name, arg := range map[string]any{"string": "x", "int8": int8(1), "big int": int(1) << 40, "float32 ptr": new(float32)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Pack(%s) did not panic", name)
				}
			}()
			Pack(Ptr(1), arg)
		}()
	}
}

// refColMajorGemm is cuBLAS's gemm semantics in plain Go: column-major,
// op codes 0 (N) and 1 (T).
func refColMajorGemm(tA, tB int32, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	at := func(i, l int) float64 {
		if tA == opT {
			return a[l+i*lda]
		}
		return a[i+l*lda]
	}
	bt := func(l, j int) float64 {
		if tB == opT {
			return b[j+l*ldb]
		}
		return b[l+j*ldb]
	}
	for j := 0; j < n; j++ {
		for i := 0; i < m; i++ {
			var s float64
			for l := 0; l < k; l++ {
				s += at(i, l) * bt(l, j)
			}
			c[i+j*ldc] = alpha*s + beta*c[i+j*ldc]
		}
	}
}

// intMatrix is a rows x cols row-major matrix with leading dimension ld,
// small integers in the used part and a sentinel in the padding, so
// products are exact and stray writes show.
func intMatrix(rows, cols, ld int, seed *uint64) []float64 {
	x := make([]float64, rows*ld)
	for i := range x {
		if i%ld >= cols {
			x[i] = 1e6
			continue
		}
		*seed = *seed*6364136223846793005 + 1442695040888963407
		x[i] = float64(int(*seed>>59) - 16) // -16..15
	}
	return x
}

func trans(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}

// storedDims are the rows and columns of A and B as stored, for
// C (m x n) = op(A) op(B) over k.
func storedDims(tA, tB bool, m, n, k int) (ra, ca, rb, cb int) {
	ra, ca, rb, cb = m, k, k, n
	if tA {
		ra, ca = k, m
	}
	if tB {
		rb, cb = n, k
	}
	return ra, ca, rb, cb
}

func TestColMajorArgs(t *testing.T) {
	const m, n, k = 5, 7, 3
	seed := uint64(1)
	for _, tA := range []bool{false, true} {
		for _, tB := range []bool{false, true} {
			ra, ca, rb, cb := storedDims(tA, tB, m, n, k)
			lda, ldb, ldc := ca+2, cb+3, n+1
			a, b := intMatrix(ra, ca, lda, &seed), intMatrix(rb, cb, ldb, &seed)
			c := intMatrix(m, n, ldc, &seed)
			want := append([]float64(nil), c...)
			gonum.Implementation{}.Dgemm(trans(tA), trans(tB), m, n, k, 2, a, lda, b, ldb, -3, want, ldc)

			g, err := colMajorArgs(tA, tB, m, n, k, 1, lda, 2, ldb, 3, ldc)
			if err != nil {
				t.Fatal(err)
			}
			mem := map[Ptr][]float64{1: a, 2: b, 3: append([]float64(nil), c...)}
			refColMajorGemm(g.transA, g.transB, int(g.m), int(g.n), int(g.k), 2,
				mem[g.a], int(g.lda), mem[g.b], int(g.ldb), -3, mem[g.c], int(g.ldc))
			if got := mem[3]; !slicesEqual(got, want) {
				t.Errorf("tA=%v tB=%v: column-major call %+v gives\n%v\nwant\n%v", tA, tB, g, got, want)
			}
		}
	}

	bad := []struct {
		name                   string
		tA, tB                 bool
		m, n, k, lda, ldb, ldc int
	}{
		{"negative m", false, false, -1, 2, 2, 2, 2, 2},
		{"lda < k", false, false, 3, 4, 5, 4, 4, 4},
		{"lda < m (tA)", true, false, 3, 4, 5, 2, 4, 4},
		{"ldb < n", false, false, 3, 4, 5, 5, 3, 4},
		{"ldb < k (tB)", false, true, 3, 4, 5, 5, 4, 4},
		{"ldc < n", false, false, 3, 4, 5, 5, 4, 3},
		{"lda 0 for k 0", false, false, 3, 4, 0, 0, 4, 4},
	}
	for _, c := range bad {
		if _, err := colMajorArgs(c.tA, c.tB, c.m, c.n, c.k, 1, c.lda, 2, c.ldb, 3, c.ldc); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}

func slicesEqual(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// driverInstalled reports whether a standard libcuda soname loads here.
func driverInstalled() bool {
	for _, n := range driverNames {
		if h, err := purego.Dlopen(n, dlFlags); err == nil {
			_ = purego.Dlclose(h)
			return true
		}
	}
	return false
}

func TestOpenWithoutDriver(t *testing.T) {
	if driverInstalled() {
		t.Skip("a CUDA driver is installed here, so Open cannot be made to fail to find it")
	}
	dir := t.TempDir()
	_, err := Open(0, Options{LibDir: dir})
	if !errors.Is(err, ErrNoDriver) {
		t.Fatalf("Open without a driver: %v, want an error wrapping ErrNoDriver", err)
	}
	for _, s := range []string{"libcuda.so.1", "libcuda.so", filepath.Join(dir, "libcuda.so.1")} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not name %q: %v", s, err)
		}
	}
	if _, err := Probe(0, Options{LibDir: dir}); !errors.Is(err, ErrNoDriver) {
		t.Errorf("Probe without a driver: %v, want ErrNoDriver", err)
	}

	env := t.TempDir()
	t.Setenv("CAUSALRM_CUDA_LIBS", env)
	if _, err := Open(0, Options{}); !errors.Is(err, ErrNoDriver) || !strings.Contains(err.Error(), env) {
		t.Errorf("Open with $CAUSALRM_CUDA_LIBS=%s: %v, want ErrNoDriver naming the directory", env, err)
	}
}

func TestCUBLASLookup(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"libcublas.so.99", "libcublasLt.so.99"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("not an ELF file"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var fn func() int32
	_, _, err := openFirst([]string{"libcublas.so.99"}, dir, []symbol{{"cublasCreate_v2", &fn}}, true)
	if err == nil {
		t.Fatal("openFirst loaded a junk file")
	}
	for _, s := range []string{"libcublas.so.99 (", filepath.Join(dir, "libcublasLt.so.99") + " (", filepath.Join(dir, "libcublas.so.99") + " ("} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error does not report %q: %v", s, err)
		}
	}

	// A library that loads but lacks a symbol is reported as such.
	_, _, err = openFirst([]string{"libc.so.6"}, "", []symbol{{"cuInit", &fn}}, false)
	if err == nil || !strings.Contains(err.Error(), "missing symbols cuInit") {
		t.Errorf("libc as libcuda: %v, want missing symbols cuInit", err)
	}

	for _, n := range cublasNames {
		if h, err := purego.Dlopen(n, dlFlags); err == nil {
			_ = purego.Dlclose(h)
			t.Skipf("%s is installed here, so loadBLAS cannot be made to fail", n)
		}
	}
	_, err = loadBLAS(dir)
	if !errors.Is(err, ErrNoCUBLAS) || !strings.Contains(err.Error(), "$CAUSALRM_CUDA_LIBS") ||
		!strings.Contains(err.Error(), filepath.Join(dir, "libcublas.so.13")) {
		t.Errorf("loadBLAS: %v, want ErrNoCUBLAS naming the paths tried and the hint", err)
	}
	if _, err2 := loadBLAS(dir); err2 != err {
		t.Errorf("second loadBLAS with the same dir: %v, want the cached error", err2)
	}
}

func TestInfoString(t *testing.T) {
	i := Info{Ordinal: 0, Name: "NVIDIA H200", Driver: 13000, Major: 9, Minor: 0,
		TotalMem: 150109900000, CUBLAS: 130002, CUBLASLib: "libcublas.so.13"}
	want := "cuda:0 NVIDIA H200 (sm_90, 139.8 GiB), driver 13.0, cuBLAS 13.0.2 (libcublas.so.13)"
	if got := i.String(); got != want {
		t.Errorf("Info.String:\n got %s\nwant %s", got, want)
	}
	for v, want := range map[int]string{120904: "12.9.4", 11201: "11.2.1", 130100: "13.1.0"} {
		if got := cublasVersion(v); got != want {
			t.Errorf("cublasVersion(%d) = %s, want %s", v, got, want)
		}
	}
}

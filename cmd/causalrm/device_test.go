package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/causalrm/causalrm/cuda"
)

// noGPU skips a test that needs the machine to lack a usable GPU.
func noGPU(t *testing.T) {
	t.Helper()
	t.Setenv(cudaLibsEnv, "")
	if _, err := cuda.Probe(0, cuda.Options{}); err == nil {
		t.Skip("this machine has a GPU")
	}
}

// leftBehind lists what a failed command left in dir besides keep.
func leftBehind(t *testing.T, dir string, keep ...string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		if !slices.Contains(keep, e.Name()) {
			left = append(left, e.Name())
		}
	}
	return left
}

// A bad --device fails, naming the flag, before anything is read or
// written (the data file does not even exist).
func TestDeviceBadSpecFailsFirst(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "missing.safetensors")
	out := filepath.Join(dir, "out", "run")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"train", "--device", "bogus"}, []string{"--device", `"bogus"`, "cuda:N"}},
		{[]string{"train", "--device", "cuda:x"}, []string{"--device", "cuda:x"}},
		{[]string{"train", "--device", "cuda,cpu"}, []string{"--device", "--workers"}},
		{[]string{"train", "--workers", "2", "--device", "cuda,bogus"}, []string{"--device", `"bogus"`}},
		{[]string{"train", "--workers", "2", "--device", "cpu,,cpu"}, []string{"--device", "empty"}},
		{[]string{"train", "--workers", "1", "--device", "cpu,cpu"}, []string{"--device", "2 devices for 1 workers"}},
		{[]string{"eval", "--model", filepath.Join(dir, "reward.json"), "--device", "gpu"}, []string{"--device", `"gpu"`}},
		{[]string{"worker", "--device", "cuda:-1"}, []string{"--device", "cuda:-1"}},
		{[]string{"bench", "train", "--device", "cuda,cpu"}, []string{"--device", "one device"}},
	} {
		args := append(tc.args, "--data", data, "--out", out)
		if tc.args[0] != "train" && tc.args[0] != "worker" {
			args = append(tc.args, "--data", data)
		}
		log, err := run(t, args...)
		if err == nil {
			t.Fatalf("%v succeeded:\n%s", tc.args, log)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not contain %q", tc.args, err, w)
			}
		}
	}
	if left := leftBehind(t, dir); len(left) > 0 {
		t.Fatalf("a bad --device left files behind: %v", left)
	}
}

// train --device cuda on a machine without the CUDA driver fails with an
// error naming the flag and libcuda, before the data is read and without
// creating the output directory (or its parents, or a staging directory).
func TestDeviceCUDAWithoutDriver(t *testing.T) {
	noGPU(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data.safetensors")
	if out, err := run(t, "simulate", "--rows", "200", "--test-rows", "50", "--dim", "8", "--latent", "4", "--out", data); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out)
	}
	for _, extra := range [][]string{nil, {"--workers", "2"}, {"--workers", "2", "--device", "cpu,cuda:1"}} {
		out := filepath.Join(dir, "runs", "gpu")
		args := append([]string{"train", "--data", data, "--out", out, "--device", "cuda", "--quiet"}, extra...)
		log, err := run(t, args...)
		if err == nil {
			t.Fatalf("%v succeeded without a GPU:\n%s", args, log)
		}
		if !strings.Contains(err.Error(), "--device cuda") || !strings.Contains(err.Error(), "libcuda") ||
			!errors.Is(err, cuda.ErrNoDriver) {
			t.Fatalf("%v: error does not name --device and libcuda: %v", args, err)
		}
		if left := leftBehind(t, dir, "data.safetensors"); len(left) > 0 {
			t.Fatalf("%v: failed run left %v", args, left)
		}
	}
	// eval opens the device only once the model and data are known good.
	if _, err := run(t, "eval", "--model", filepath.Join(dir, "none.json"), "--data", data, "--device", "cuda"); err == nil {
		t.Fatal("eval of a missing model succeeded")
	}
}

// version prints a gpu line, short, and succeeds without a GPU.
func TestVersionPrintsGPULine(t *testing.T) {
	t.Setenv(cudaLibsEnv, filepath.Join(t.TempDir(), "no-such-dir"))
	out, err := run(t, "version")
	if err != nil {
		t.Fatalf("version: %v\n%s", err, out)
	}
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "gpu: ") {
			line = l
		}
	}
	if line == "" {
		t.Fatalf("no gpu line:\n%s", out)
	}
	if len(line) > 120 {
		t.Fatalf("gpu line has %d characters: %q", len(line), line)
	}
	if strings.HasPrefix(line, "gpu: none (") && (strings.Contains(line, "tried") || !strings.HasSuffix(line, ")")) {
		t.Fatalf("gpu line is not a short reason: %q", line)
	}
	t.Log(line)
}

func TestDeviceShortReason(t *testing.T) {
	for _, tc := range []struct{ err, want string }{
		{"cuda: CUDA driver (libcuda) not available: tried libcuda.so.1 (cannot open shared object file: No such file or directory); libcuda.so (x); no library directory given; install the NVIDIA driver",
			"CUDA driver (libcuda) not available"},
		{"cuda: CUDA driver (libcuda) not available: cuda: cuInit: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)",
			"CUDA driver (libcuda) not available: cuInit: CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)"},
		{"cuda: cuBLAS not available: tried libcublas.so.13 (x); set --cuda-libs", "cuBLAS not available"},
		{"first line\nsecond line", "first line"},
		{strings.Repeat("x", 300), strings.Repeat("x", 105) + "…"},
	} {
		if got := shortReason(errors.New(tc.err)); got != tc.want {
			t.Errorf("shortReason(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// Workers take the devices of a list in turn.
func TestDeviceAssignCyclic(t *testing.T) {
	for _, tc := range []struct {
		list string
		n    int
		want []string
		err  string
	}{
		{"cpu", 1, []string{"cpu"}, ""},
		{"", 2, []string{"cpu", "cpu"}, ""},
		{"cuda", 3, []string{"cuda", "cuda", "cuda"}, ""},
		{"cuda,cpu", 2, []string{"cuda", "cpu"}, ""},
		{"cuda,cpu", 5, []string{"cuda", "cpu", "cuda", "cpu", "cuda"}, ""},
		{" cuda:0 , cuda:1 ", 4, []string{"cuda:0", "cuda:1", "cuda:0", "cuda:1"}, ""},
		{"cuda:0,cuda:1,cpu", 3, []string{"cuda:0", "cuda:1", "cpu"}, ""},
		{"CUDA:1", 1, []string{"CUDA:1"}, ""},
		{"cuda,cpu", 1, nil, "2 devices for 1 workers"},
		{"cuda,gpu", 2, nil, `"gpu"`},
		{"cuda:-1", 2, nil, "cuda:-1"},
		{"cuda,", 2, nil, "empty entry"},
		{"cpu", 0, nil, "0 workers"},
	} {
		got, err := assignDevices(tc.list, tc.n)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "--device") {
				t.Errorf("assignDevices(%q, %d): error %v, want one naming --device and %q", tc.list, tc.n, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("assignDevices(%q, %d) = %v, %v; want %v", tc.list, tc.n, got, err, tc.want)
		}
	}
}

// A worker gets its device and the CUDA flags of its launcher.
func TestDeviceWorkerArgs(t *testing.T) {
	f := &deviceFlags{device: "cuda,cpu", cudaLibs: "/opt/cuda/lib64", tf32: true}
	devs, err := assignDevices(f.device, 3)
	if err != nil {
		t.Fatal(err)
	}
	wd := &workerDevices{flags: f, devs: devs}
	if got, want := wd.args(1), []string{"--device", "cpu", "--cuda-libs", "/opt/cuda/lib64", "--tf32"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("worker 1: %v, want %v", got, want)
	}
	if got, want := (&workerDevices{flags: &deviceFlags{}, devs: []string{"cuda:1"}}).args(0), []string{"--device", "cuda:1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("worker 0: %v, want %v", got, want)
	}
	if got := (*workerDevices)(nil).args(0); got != nil {
		t.Fatalf("no devices: %v", got)
	}
	for in, want := range map[string]string{"cpu": "cpu", "": "cpu", "cuda": "cuda:0", "CUDA:2": "cuda:2"} {
		if got := canonicalDevice(in); got != want {
			t.Errorf("canonicalDevice(%q) = %q, want %q", in, got, want)
		}
	}
}

package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/causalrm/causalrm/cuda"
	"github.com/causalrm/causalrm/gpu"
	"github.com/causalrm/causalrm/nn"
)

// cudaLibsEnv names the default of --cuda-libs.
const cudaLibsEnv = "CAUSALRM_CUDA_LIBS"

const deviceUsage = "where the model's passes run: cpu, cuda or cuda:N (a CUDA GPU, found at run time; exact mode gives the CPU's bits)"

// deviceFlags choose where a process runs the model's passes.
type deviceFlags struct {
	device   string // --device: cpu, cuda or cuda:N (a launcher: a comma-separated list)
	cudaLibs string // --cuda-libs
	tf32     bool   // --tf32
}

func (d *deviceFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&d.device, "device", "cpu", deviceUsage)
	fs.StringVar(&d.cudaLibs, "cuda-libs", os.Getenv(cudaLibsEnv),
		"directory searched for libcuda.so.1 and libcublas.so.N after the standard names (default $"+cudaLibsEnv+")")
	fs.BoolVar(&d.tf32, "tf32", false, "fast mode on a GPU: let cuBLAS use TF32 tensor cores (about 10 bits of mantissa); exact mode is unaffected")
}

// onGPU says whether --device names a GPU (it must parse).
func (d *deviceFlags) onGPU() bool {
	ord, err := gpu.ParseDevice(d.device)
	return err == nil && ord >= 0
}

// canonicalDevice spells a device that parses as "cpu" or "cuda:N" (as
// PyTorch takes it).
func canonicalDevice(s string) string {
	ord, err := gpu.ParseDevice(s)
	if err != nil || ord < 0 {
		return "cpu"
	}
	return fmt.Sprintf("cuda:%d", ord)
}

// open makes the runner factory of --device: nil for the CPU (the
// trainer's default), or the engines of the opened GPU. close releases the
// GPU (it is never nil on success); every error names the flag.
func (d *deviceFlags) open() (nn.RunnerFactory, func() error, error) {
	ord, err := gpu.ParseDevice(d.device)
	if err != nil {
		return nil, nil, fmt.Errorf("--device: %w", err)
	}
	if ord < 0 {
		return nil, func() error { return nil }, nil
	}
	dev, err := gpu.OpenCUDA(ord, d.cudaLibs)
	if err != nil {
		return nil, nil, fmt.Errorf("--device %s: %w", d.device, err)
	}
	if d.tf32 {
		if err := dev.SetTF32(true); err != nil {
			dev.Close()
			return nil, nil, fmt.Errorf("--tf32 on %s: %w", d.device, err)
		}
	}
	return dev.Runner, dev.Close, nil
}

// probe checks that every GPU of devs can be opened (cuda.Probe), so that
// a launcher fails before starting anything; it returns the description
// of each GPU, by device name.
func (d *deviceFlags) probe(devs []string) (map[string]string, error) {
	info := map[string]string{}
	seen := map[int]bool{}
	for _, s := range devs {
		ord, err := gpu.ParseDevice(s)
		if err != nil {
			return nil, fmt.Errorf("--device: %w", err)
		}
		if ord < 0 || seen[ord] {
			continue
		}
		seen[ord] = true
		i, err := cuda.Probe(ord, cuda.Options{LibDir: d.cudaLibs})
		if err != nil {
			return nil, fmt.Errorf("--device %s: %w", s, err)
		}
		info[s] = i.String()
	}
	return info, nil
}

// assignDevices gives each of n workers its device from a comma-separated
// list, in turn (worker i gets entry i mod len): "cuda" puts every worker
// on GPU 0, "cuda:0,cuda:1" alternates two GPUs, "cuda,cpu" gives worker 0
// the GPU and worker 1 the CPU. Every entry must parse (gpu.ParseDevice)
// and be used: a list longer than n is refused. An empty list is the CPU.
func assignDevices(list string, n int) ([]string, error) {
	if n < 1 {
		return nil, fmt.Errorf("--device: %d workers", n)
	}
	var devs []string
	if strings.TrimSpace(list) == "" {
		devs = []string{"cpu"}
	} else {
		for _, s := range strings.Split(list, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				return nil, fmt.Errorf("--device %q: empty entry in the list", list)
			}
			if _, err := gpu.ParseDevice(s); err != nil {
				return nil, fmt.Errorf("--device: %w", err)
			}
			devs = append(devs, s)
		}
	}
	if len(devs) > n {
		return nil, fmt.Errorf("--device %q: %d devices for %d workers (a list assigns one device per worker, in turn)", list, len(devs), n)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = devs[i%len(devs)]
	}
	return out, nil
}

// workerDevices are the devices of a launcher's workers (train --workers).
type workerDevices struct {
	flags *deviceFlags
	devs  []string // worker i's device
}

// args are worker i's device flags (none without devices).
func (w *workerDevices) args(i int) []string {
	if w == nil || len(w.devs) == 0 {
		return nil
	}
	return w.flags.workerArgs(w.devs[i%len(w.devs)])
}

// workerArgs are the device flags of a worker process started with dev.
func (d *deviceFlags) workerArgs(dev string) []string {
	args := []string{"--device", dev}
	if d.cudaLibs != "" {
		args = append(args, "--cuda-libs", d.cudaLibs)
	}
	if d.tf32 {
		args = append(args, "--tf32")
	}
	return args
}

// probeLine is `causalrm version`'s gpu line: GPU 0 and its libraries, or
// why there is none.
func probeLine(libDir string) string {
	info, err := cuda.Probe(0, cuda.Options{LibDir: libDir})
	if err != nil {
		return "gpu: none (" + shortReason(err) + ")"
	}
	return "gpu: " + info.String()
}

// shortReason is the gist of a CUDA error for one line: its first line,
// without the list of libraries tried or the advice after a semicolon,
// and at most 106 characters (the gpu line stays under 120).
func shortReason(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	for _, cut := range []string{": tried ", "; "} {
		if i := strings.Index(s, cut); i >= 0 {
			s = s[:i]
		}
	}
	s = strings.ReplaceAll(s, "cuda: ", "")
	if r := []rune(s); len(r) > 106 {
		s = string(r[:105]) + "…"
	}
	return strings.TrimSpace(s)
}

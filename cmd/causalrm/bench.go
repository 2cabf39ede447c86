package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/causalrm/causalrm/causal"
	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/collective/ringbench"
	"github.com/causalrm/causalrm/nn"
	"github.com/causalrm/causalrm/shard"
	"github.com/causalrm/causalrm/sim"
	"github.com/causalrm/causalrm/trainer"
)

func benchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks (bench train: Go against PyTorch on the paper's reward model)",
	}
	cmd.AddCommand(benchTrainCmd(), benchAllReduceCmd())
	return cmd
}

func benchAllReduceCmd() *cobra.Command {
	var opts ringbench.Options
	var codecs []string
	cmd := &cobra.Command{
		Use:   "allreduce",
		Short: "Ring all-reduce bandwidth on 127.0.0.1 against a raw TCP copy, and bytes on the wire per codec",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, c := range codecs {
				opts.Codecs = append(opts.Codecs, collective.Codec(c))
			}
			return ringbench.Run(cmd.Context(), cmd.OutOrStdout(), opts)
		},
	}
	fs := cmd.Flags()
	fs.IntSliceVar(&opts.Ranks, "ranks", []int{2, 4}, "ring sizes")
	fs.IntSliceVar(&opts.SizesMiB, "sizes", []int{1, 4, 16}, "vector sizes in MiB")
	fs.StringSliceVar(&codecs, "codecs", []string{"none", "s2", "zstd"}, "lossless codecs")
	fs.IntVar(&opts.Iters, "iters", 5, "timed calls per case")
	fs.IntVar(&opts.ChunkBytes, "chunk-bytes", 0, "segment size (0: the collective's default)")
	return cmd
}

type benchRow struct {
	Threads int
	Mode    string
	GoRows  float64
	Torch   float64
}

// benchTrain is `causalrm bench train`: its flags and its three parts
// (the data, the in-process rows, the worker processes' rows).
type benchTrain struct {
	rows, dim, steps, warmup int
	threadList               []int
	python, script, data     string
	ddpScript                string
	workers, batch           int
	dev                      deviceFlags
}

func benchTrainCmd() *cobra.Command {
	var b benchTrain
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train the paper's reward model (d=4096, 256, 64, batch 512) in Go and in PyTorch, print rows/s",
		Long: `Generates synthetic rows (or uses --data), then for each thread count times
reward-stage training steps (causalrm-ips loss, Adam) in Go in exact and fast
mode and in PyTorch (bench/torch_reward.py with Debian's python3-torch), and
prints rows/s and the ratio Go / PyTorch.

"all rows" runs every row of the batch through forward and backward passes,
the arithmetic of the masked PyTorch loss; "skip o=0" is what training does
for causalrm-ips: rows without feedback carry no loss and are skipped.
With --workers N, N worker processes (one thread each, the static ring) are
timed the same two ways against PyTorch DDP (gloo, N processes, every row).

With --device cuda (or cuda:N) both sides train on that GPU: the Go engine
through the CUDA driver and cuBLAS, PyTorch with its tensors on the device
(a CUDA build of torch). --threads still sets the Go host side's (and
PyTorch's CPU) threads.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return b.run(cmd) },
	}
	fs := cmd.Flags()
	fs.IntVar(&b.rows, "rows", 8192, "synthetic training rows")
	fs.IntVar(&b.dim, "dim", 4096, "embedding dimension")
	fs.IntVar(&b.steps, "steps", 30, "timed steps")
	fs.IntVar(&b.warmup, "warmup", 3, "untimed steps first")
	fs.IntSliceVar(&b.threadList, "threads", []int{1, 2}, "thread counts")
	fs.StringVar(&b.python, "python", "/usr/bin/python3", "python with torch (empty: skip PyTorch)")
	fs.StringVar(&b.script, "script", "bench/torch_reward.py", "PyTorch baseline script")
	fs.StringVar(&b.data, "data", "", "use this file instead of generating rows")
	fs.IntVar(&b.workers, "workers", 0, "also time N worker processes (1 thread each) against PyTorch DDP (gloo) with N processes")
	fs.StringVar(&b.ddpScript, "ddp-script", "bench/torch_ddp.py", "PyTorch DDP baseline script")
	fs.IntVar(&b.batch, "batch", 512, "rows per step (global batch with --workers)")
	b.dev.add(fs)
	fs.Lookup("device").Usage = "where both sides train: cpu, cuda or cuda:N (a CUDA GPU; PyTorch needs a CUDA build); --threads still sets the host threads"
	return cmd
}

func (b *benchTrain) run(cmd *cobra.Command) error {
	log := cmd.ErrOrStderr()
	// The device first: a missing GPU fails before the data is made.
	devName, err := benchDevice(&b.dev)
	if err != nil {
		return err
	}
	cleanup, err := b.ensureData(log)
	if err != nil {
		return err
	}
	defer cleanup()
	table, err := b.inProcess(cmd.Context(), log)
	if err != nil {
		return err
	}
	if b.workers > 0 {
		rows, err := b.cluster(cmd)
		if err != nil {
			return err
		}
		table = append(table, rows...)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "reward model %d-256-64-1, batch %d, blas %s, device %s\n", b.dim, b.batch, nn.Backend(), devName)
	return printBenchTable(cmd.OutOrStdout(), table)
}

// ensureData generates the synthetic rows unless --data names a file.
func (b *benchTrain) ensureData(log io.Writer) (cleanup func(), err error) {
	if b.data != "" {
		return func() {}, nil
	}
	dir, err := os.MkdirTemp("", "causalrm-bench-")
	if err != nil {
		return nil, err
	}
	cfg := sim.DefaultConfig()
	cfg.TrainRows, cfg.TestRows, cfg.Dim, cfg.Seed = b.rows, 16, b.dim, 1
	fmt.Fprintf(log, "generating %d rows at d=%d ...\n", b.rows, b.dim)
	ds, err := sim.Generate(cfg)
	if err == nil {
		b.data = filepath.Join(dir, "bench.safetensors")
		err = shard.WriteSafetensors(b.data, ds)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return func() { os.RemoveAll(dir) }, nil
}

// benchConfig is the timed job: causalrm-ips with given propensities and
// flip rates and the plain risk, the arithmetic of the PyTorch scripts.
func benchConfig(mode string, threads, batch int) trainer.Config {
	c := trainer.DefaultConfig()
	c.Reduce, c.Threads, c.Propensity, c.Batch, c.Risk = mode, threads, "given", batch, trainer.RiskPlain
	c.FlipRates = &causal.Rates{Rho01: 0.1, Rho10: 0.2}
	return c
}

// inProcess times Go in one process at each thread count, in both modes,
// every row and rows with feedback only, beside PyTorch at that count.
func (b *benchTrain) inProcess(ctx context.Context, log io.Writer) ([]benchRow, error) {
	var table []benchRow
	onGPU, torchDevice := b.dev.onGPU(), canonicalDevice(b.dev.device)
	for _, th := range b.threadList {
		torch := runTorch(b.python, b.script, b.data, th, b.steps, b.warmup, b.batch, torchDevice, onGPU, log)
		for _, mode := range []string{"exact", "fast"} {
			for _, skip := range []bool{false, true} {
				ds, err := shard.Load(shard.LoadSpec{Train: b.data})
				if err != nil {
					return nil, err
				}
				rps, err := benchInProcess(ctx, benchConfig(mode, th, b.batch), ds, &b.dev, b.warmup, b.steps, skip)
				if err != nil {
					return nil, err
				}
				label := mode + ", all rows"
				if skip {
					label = mode + ", skip o=0"
				}
				table = append(table, benchRow{Threads: th, Mode: label, GoRows: rps, Torch: torch})
				fmt.Fprintf(log, "threads %d %-16s %8.0f rows/s\n", th, label, rps)
			}
		}
	}
	return table, nil
}

// cluster times --workers worker processes against PyTorch DDP.
func (b *benchTrain) cluster(cmd *cobra.Command) ([]benchRow, error) {
	var table []benchRow
	torchDevice := canonicalDevice(b.dev.device)
	for _, mode := range []string{"exact", "fast"} {
		torch := runTorchDDP(b.python, b.ddpScript, b.data, b.workers, b.steps, b.batch, torchDevice, cmd.ErrOrStderr())
		for _, skip := range []bool{false, true} {
			rps, err := benchCluster(cmd, b.data, b.workers, mode, b.steps, b.batch, &b.dev, skip)
			if err != nil {
				return nil, err
			}
			label := fmt.Sprintf("%s, %d workers", mode, b.workers)
			if skip {
				label += ", skip o=0"
			}
			table = append(table, benchRow{Threads: b.workers, Mode: label, GoRows: rps, Torch: torch})
		}
	}
	return table, nil
}

func printBenchTable(out io.Writer, table []benchRow) error {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "threads\tmode\tGo rows/s\tPyTorch rows/s\tGo / PyTorch\t")
	for _, r := range table {
		ratio := "n/a"
		if r.Torch > 0 {
			ratio = fmt.Sprintf("%.2fx", r.GoRows/r.Torch)
		}
		fmt.Fprintf(w, "%d\t%s\t%.0f\t%.0f\t%s\t\n", r.Threads, r.Mode, r.GoRows, r.Torch, ratio)
	}
	return w.Flush()
}

// benchDevice checks --device (a GPU must open) and names it for the
// table: "cpu", or the GPU's description.
func benchDevice(dev *deviceFlags) (string, error) {
	if strings.Contains(dev.device, ",") {
		return "", fmt.Errorf("--device %q: bench train takes one device", dev.device)
	}
	info, err := dev.probe([]string{dev.device})
	if err != nil {
		return "", err
	}
	if s, ok := info[dev.device]; ok {
		if dev.tf32 {
			s += ", TF32 in fast mode"
		}
		return s, nil
	}
	return "cpu", nil
}

// benchInProcess times reward-stage steps in this process on --device.
// A GPU is opened for the one case and closed after it, so that the
// embeddings of one case do not stay on the device through the next.
func benchInProcess(ctx context.Context, c trainer.Config, ds *shard.Dataset, dev *deviceFlags, warmup, steps int, skip bool) (float64, error) {
	runners, closeDev, err := dev.open()
	if err != nil {
		return 0, err
	}
	defer closeDev()
	c.Runners = runners
	tr, err := trainer.New(c, ds, nil, nil)
	if err != nil {
		return 0, err
	}
	return tr.BenchReward(ctx, causal.CausalIPS, warmup, steps, skip)
}

// benchCluster times reward-stage steps with n worker processes (one
// thread each) over the ring; "threads" in its table row is the worker count.
func benchCluster(cmd *cobra.Command, data string, n int, mode string, steps, batch int, dev *deviceFlags, skip bool) (float64, error) {
	dir, err := os.MkdirTemp("", "causalrm-bench-cluster-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	job := &Job{Config: benchConfig(mode, 1, batch), Data: DataSpec{Train: data}, Out: filepath.Join(dir, "out"), Codec: "none"}
	args := []string{"--bench-steps", strconv.Itoa(steps)}
	if skip {
		args = append(args, "--bench-skip-unobserved")
	}
	devs, err := assignDevices(dev.device, n)
	if err != nil {
		return 0, err
	}
	wd := &workerDevices{flags: dev, devs: devs}
	if err := runCluster(cmd.Context(), job, n, wd, true, io.Discard, cmd.ErrOrStderr(), args...); err != nil {
		return 0, err
	}
	var r struct {
		RowsPerS float64 `json:"rows_per_s"`
	}
	raw, err := os.ReadFile(filepath.Join(job.Out, "bench.json"))
	if err == nil {
		err = json.Unmarshal(raw, &r)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%d workers %-5s skip o=0 %-5v %8.0f rows/s\n", n, mode, skip, r.RowsPerS)
	return r.RowsPerS, err
}

// runTorchDDP runs the PyTorch DDP (gloo) baseline with n processes on
// device.
func runTorchDDP(python, script, data string, n, steps, batch int, device string, log io.Writer) float64 {
	if python == "" {
		return 0
	}
	rps, err := runPythonBench(log, []string{"OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1"},
		python, script, "--data", data, "--workers", strconv.Itoa(n), "--threads", "1", "--steps", strconv.Itoa(steps),
		"--batch", strconv.Itoa(batch), "--device", device)
	if err != nil {
		return 0
	}
	fmt.Fprintf(log, "%d workers pytorch DDP gloo on %s %8.0f rows/s\n", n, device, rps)
	return rps
}

// runTorch runs the PyTorch baseline and returns its rows/s, or 0 (with a
// note on the log) when it cannot run. Debian's torch runs its GEMMs in
// OpenBLAS, whose own thread pool competes with torch's: with more than one
// thread we try OpenBLAS at 1 thread and at the same count and keep the
// faster, so the baseline is PyTorch at its best on this machine. On a GPU
// (onGPU) the GEMMs are cuBLAS's and one run is enough.
func runTorch(python, script, data string, threads, steps, warmup, batch int, device string, onGPU bool, log io.Writer) float64 {
	if python == "" {
		return 0
	}
	best := 0.0
	blasThreads := []int{threads}
	if threads > 1 && !onGPU {
		blasThreads = []int{1, threads}
	}
	for _, bt := range blasThreads {
		rps, err := runPythonBench(log, []string{"OMP_NUM_THREADS=" + strconv.Itoa(threads), "OPENBLAS_NUM_THREADS=" + strconv.Itoa(bt)},
			python, script, "--data", data, "--threads", strconv.Itoa(threads), "--steps", strconv.Itoa(steps), "--warmup", strconv.Itoa(warmup),
			"--batch", strconv.Itoa(batch), "--device", device)
		if err != nil {
			return 0
		}
		if onGPU {
			fmt.Fprintf(log, "threads %d pytorch on %s %8.0f rows/s\n", threads, device, rps)
		} else {
			fmt.Fprintf(log, "threads %d pytorch (openblas threads %d) %8.0f rows/s\n", threads, bt, rps)
		}
		best = max(best, rps)
	}
	return best
}

// runPythonBench runs a baseline script and reads rows_per_s from the JSON
// object on its last output line; failures are noted on the log.
func runPythonBench(log io.Writer, env []string, python string, args ...string) (float64, error) {
	c := exec.Command(python, args...)
	c.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		fmt.Fprintf(log, "%s failed (%v): %s\n", args[0], err, strings.TrimSpace(errb.String()))
		return 0, err
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var r struct {
		RowsPerS float64 `json:"rows_per_s"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		fmt.Fprintf(log, "%s: bad output %q\n", args[0], out.String())
		return 0, err
	}
	return r.RowsPerS, nil
}

// Command causalrm trains CausalRM reward models from observational user
// feedback. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if dir := os.Getenv("CAUSALRM_CPUPROFILE_DIR"); dir != "" {
		// Developer aid: a CPU profile per process (workers included).
		if f, err := os.Create(filepath.Join(dir, fmt.Sprintf("cpu-%d.pprof", os.Getpid()))); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	if dir := os.Getenv("CAUSALRM_TRACE_DIR"); dir != "" {
		// Developer aid: an execution trace per process (go tool trace).
		if f, err := os.Create(filepath.Join(dir, fmt.Sprintf("trace-%d.out", os.Getpid()))); err == nil {
			if trace.Start(f) == nil {
				defer trace.Stop()
			}
		}
	}
	err := newRoot().ExecuteContext(ctx)
	pprof.StopCPUProfile()
	trace.Stop()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "causalrm: interrupted; nothing was written")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "causalrm:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "causalrm",
		Short:         "Train reward models for RLHF from observational user feedback (CausalRM)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(trainCmd(), compareCmd(), evalCmd(), simulateCmd(), versionCmd(), benchCmd(), workerCmd(),
		coordinatorCmd(), submitCmd(), statusCmd())
	return root
}

package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/causalrm/causalrm/nn"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

// versionString is the version and, when the build recorded it, the
// commit: "dev (1984363...)".
func versionString() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return version + " (" + s.Value + ")"
			}
		}
	}
	return version
}

func versionCmd() *cobra.Command {
	var cudaLibs string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, Go toolchain, BLAS backend, SIMD kernels and GPU",
		Long: `Prints the version, the Go toolchain, the BLAS backend, the SIMD kernels,
and GPU 0 with the CUDA driver and cuBLAS found (or why there is none: the
binary runs on the CPU without them).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(cmd.OutOrStdout(), "causalrm %s\ngo: %s %s/%s\nblas: %s\nsimd: %s\n", versionString(),
				runtime.Version(), runtime.GOOS, runtime.GOARCH, nn.Backend(), nn.SIMD())
			fmt.Fprintln(cmd.OutOrStdout(), probeLine(cudaLibs))
			return nil
		},
	}
	cmd.Flags().StringVar(&cudaLibs, "cuda-libs", os.Getenv(cudaLibsEnv),
		"directory searched for libcuda.so.1 and libcublas.so.N after the standard names (default $"+cudaLibsEnv+")")
	return cmd
}

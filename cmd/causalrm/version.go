package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/causalrm/causalrm/nn"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, Go toolchain, BLAS backend and SIMD kernels",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rev := ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						rev = " (" + s.Value + ")"
					}
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "causalrm %s%s\ngo: %s %s/%s\nblas: %s\nsimd: %s\n", version, rev,
				runtime.Version(), runtime.GOOS, runtime.GOARCH, nn.Backend(), nn.SIMD())
			return nil
		},
	}
}

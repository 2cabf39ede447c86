// Command causalrm trains CausalRM reward models from observational user
// feedback. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
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
	root.AddCommand(trainCmd(), compareCmd(), evalCmd(), simulateCmd(), versionCmd(), benchCmd(), workerCmd())
	return root
}

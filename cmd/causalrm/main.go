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
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/causalrm/causalrm/internal/strictyaml"
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
		Version:       versionString(),
	}
	root.SetVersionTemplate("causalrm {{.Version}}\n")
	root.AddCommand(trainCmd(), compareCmd(), evalCmd(), simulateCmd(), versionCmd(), benchCmd(), workerCmd(),
		coordinatorCmd(), submitCmd(), statusCmd())
	root.AddCommand(chaosCmd())
	// An unknown command gets cobra's "Did you mean this?" (on by default;
	// set here so that it stays on); an unknown flag or a bad flag value
	// gets flagError's message.
	root.DisableSuggestions = false
	root.SuggestionsMinimumDistance = 2
	root.SetFlagErrorFunc(flagError)
	return root
}

// flagError rewrites the flag parser's errors for users: an unknown flag
// with the nearest known one, a bad value with what the flag takes (not
// the Go parser's "strconv.ParseInt: parsing ...").
func flagError(c *cobra.Command, err error) error {
	var ne *pflag.NotExistError
	if errors.As(err, &ne) && ne.GetSpecifiedShortnames() == "" {
		var names []string
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if !f.Hidden {
				names = append(names, f.Name)
			}
		})
		msg := fmt.Sprintf("unknown flag --%s for %s", ne.GetSpecifiedName(), c.CommandPath())
		if s := strictyaml.Suggest(ne.GetSpecifiedName(), names); s != "" {
			msg += fmt.Sprintf(" (did you mean --%s?)", s)
		}
		return fmt.Errorf("%s; see %s --help", msg, c.CommandPath())
	}
	var ie *pflag.InvalidValueError
	if errors.As(err, &ie) {
		fl := ie.GetFlag()
		return fmt.Errorf("--%s %q: %s", fl.Name, ie.GetValue(), flagWants(fl, ie.Unwrap()))
	}
	return err
}

// flagWants says what a flag of fl's type takes.
func flagWants(fl *pflag.Flag, cause error) string {
	switch fl.Value.Type() {
	case "int", "int8", "int16", "int32", "int64":
		return "want an integer"
	case "uint", "uint8", "uint16", "uint32", "uint64":
		return "want an integer >= 0"
	case "float32", "float64":
		return "want a number"
	case "bool":
		return "want true or false"
	case "duration":
		return "want a duration like 30s, 10m or 1h"
	case "intSlice", "int32Slice", "int64Slice", "uintSlice":
		return "want integers separated by commas, like 256,64"
	case "float64Slice", "float32Slice":
		return "want numbers separated by commas, like 0.1,0.2"
	}
	msg := "bad value"
	if cause != nil {
		msg = cause.Error()
		if _, after, ok := strings.Cut(msg, ": parsing "); ok && strings.HasPrefix(msg, "strconv.") {
			msg = "cannot parse " + after
		}
	}
	return msg
}

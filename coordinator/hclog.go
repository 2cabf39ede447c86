package coordinator

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter is an hclog.Logger that writes to a *slog.Logger, so that
// hashicorp/raft logs to the same sink as the rest of the process.
type hclogAdapter struct {
	l     *slog.Logger
	name  string
	args  []any
	level *slog.LevelVar
}

func newHclog(l *slog.Logger, name string) hclog.Logger {
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelDebug)
	return &hclogAdapter{l: l, name: name, level: lv}
}

func toSlog(l hclog.Level) slog.Level {
	switch {
	case l <= hclog.Debug:
		return slog.LevelDebug
	case l == hclog.Info:
		return slog.LevelInfo
	case l == hclog.Warn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	lv := toSlog(level)
	if lv < a.level.Level() || !a.l.Enabled(context.Background(), lv) {
		return
	}
	all := make([]any, 0, len(a.args)+len(args)+2)
	if a.name != "" {
		all = append(all, "component", a.name)
	}
	all = append(all, a.args...)
	all = append(all, args...)
	a.l.Log(context.Background(), lv, msg, all...)
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }
func (a *hclogAdapter) enabled(l hclog.Level) bool {
	lv := toSlog(l)
	return lv >= a.level.Level() && a.l.Enabled(context.Background(), lv)
}
func (a *hclogAdapter) IsTrace() bool          { return a.enabled(hclog.Trace) }
func (a *hclogAdapter) IsDebug() bool          { return a.enabled(hclog.Debug) }
func (a *hclogAdapter) IsInfo() bool           { return a.enabled(hclog.Info) }
func (a *hclogAdapter) IsWarn() bool           { return a.enabled(hclog.Warn) }
func (a *hclogAdapter) IsError() bool          { return a.enabled(hclog.Error) }
func (a *hclogAdapter) ImpliedArgs() []any     { return a.args }
func (a *hclogAdapter) Name() string           { return a.name }
func (a *hclogAdapter) SetLevel(l hclog.Level) { a.level.Set(toSlog(l)) }
func (a *hclogAdapter) GetLevel() hclog.Level {
	switch a.level.Level() {
	case slog.LevelDebug:
		return hclog.Debug
	case slog.LevelInfo:
		return hclog.Info
	case slog.LevelWarn:
		return hclog.Warn
	}
	return hclog.Error
}

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	c := *a
	c.args = append(append([]any(nil), a.args...), args...)
	return &c
}

func (a *hclogAdapter) Named(name string) hclog.Logger {
	c := *a
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *a
	c.name = name
	return &c
}

func (a *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		a.Info(strings.TrimSpace(string(p)))
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

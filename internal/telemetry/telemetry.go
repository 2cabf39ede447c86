// Package telemetry is the observability plumbing every causalrm process
// shares: a per-process Prometheus registry (with the Go and process
// collectors), the HTTP server of --metrics-addr (/metrics, /healthz,
// /readyz) and the slog handler chooser of --log-format.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every causalrm metric.
const Namespace = "causalrm"

// NewRegistry is a fresh registry (not the global default) holding the Go
// runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ReadyFunc reports whether the process is ready: nil, or the reason it
// is not (the body of /readyz's 503).
type ReadyFunc func() error

// Route is an extra page served beside /metrics (a ServeMux pattern and
// its handler), such as a coordinator's status page.
type Route struct {
	Pattern string
	Handler http.Handler
}

// Handler serves /metrics from g, /healthz (200 while the process serves)
// and /readyz (200 when ready reports nil, 503 with the reason otherwise;
// a nil ready is always ready), and the extra routes.
func Handler(g prometheus.Gatherer, ready ReadyFunc, extra ...Route) http.Handler {
	mux := http.NewServeMux()
	for _, r := range extra {
		mux.Handle(r.Pattern, r.Handler)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ready != nil {
			if err := ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}

// Server is a running --metrics-addr server.
type Server struct {
	srv  *http.Server
	lis  net.Listener
	done chan struct{}
	err  error
}

// Serve listens on addr (host:port; ":9090" binds every interface) and
// serves Handler(g, ready, extra...) until Close.
func Serve(addr string, g prometheus.Gatherer, ready ReadyFunc, log *slog.Logger, extra ...Route) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	s := &Server{lis: lis, done: make(chan struct{}),
		srv: &http.Server{Handler: Handler(g, ready, extra...), ReadHeaderTimeout: 10 * time.Second}}
	if log != nil {
		s.srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.err = err
		}
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Close shuts the server down (letting requests in flight finish for up to
// 5 seconds) and waits for its goroutine.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.srv.Close())
	}
	<-s.done
	return errors.Join(err, s.err)
}

// LogFormats are the values of --log-format.
var LogFormats = []string{"text", "json"}

// NewLogger is a logger writing format ("text" or "json"; "" is text) to
// w at info level.
func NewLogger(w io.Writer, format string) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q: want text or json", format)
}

// GenerationCauses are the cause labels of the generations the leader
// makes (coordinator/state's Cause.Label, "other" aside), initialised to 0
// so that they export.
var GenerationCauses = []string{"start", "join", "leave", "crash", "relink", "restart"}

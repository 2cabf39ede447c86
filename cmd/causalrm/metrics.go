package main

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/internal/telemetry"
	"github.com/causalrm/causalrm/trainer"
	"github.com/causalrm/causalrm/worker"
)

const (
	metricsAddrUsage = "serve Prometheus /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9090, or :9090 for every interface; empty: off)"
	logFormatUsage   = "log format: text or json"
)

// startWorkerMetrics serves a worker's --metrics-addr ("" serves nothing
// and gives nil metrics); stop shuts the server down.
func startWorkerMetrics(addr string, logger *slog.Logger) (m *worker.Metrics, stop func(), err error) {
	if addr == "" {
		return nil, func() {}, nil
	}
	reg := telemetry.NewRegistry()
	if m, err = worker.NewMetrics(reg); err != nil {
		return nil, nil, err
	}
	stop, err = serveMetrics(addr, reg, m.Ready, logger)
	return m, stop, err
}

// startCoordinatorMetrics serves a coordinator's --metrics-addr ("":
// nothing), its status page included; stop shuts the server down.
func startCoordinatorMetrics(addr string, node *coordinator.Node, logger *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	srv, stop, err := serveCoordinator(addr, node, logger) // with the status page (statuspage.go)
	if err != nil {
		return nil, err
	}
	logger.Info("serving metrics", "addr", srv.Addr(), "status_page", "http://"+srv.Addr()+"/status")
	return stop, nil
}

func serveMetrics(addr string, reg prometheus.Gatherer, ready telemetry.ReadyFunc, logger *slog.Logger) (func(), error) {
	srv, err := telemetry.Serve(addr, reg, ready, logger)
	if err != nil {
		return nil, err
	}
	logger.Info("serving metrics", "addr", srv.Addr())
	return func() {
		if err := srv.Close(); err != nil {
			logger.Warn("metrics server", "err", err)
		}
	}, nil
}

// runWarnings are a run's warnings for metrics.json and report.md: the
// data's (found before training) and each trained stage's.
func runWarnings(tr *trainer.Trainer, stages []*trainer.StageResult) []trainer.Warning {
	out := append([]trainer.Warning{}, tr.DataWarnings...)
	for _, s := range stages {
		out = append(out, trainer.StageWarnings(s)...)
	}
	return out
}

// stageWarnings are the warnings of the run's stages (after the data's).
func (o *outcome) stageWarnings() []trainer.Warning {
	return o.rm.Warnings[min(len(o.tr.DataWarnings), len(o.rm.Warnings)):]
}

// printWarnings writes one "warning:" line per warning (w nil: nothing).
func printWarnings(w io.Writer, ws []trainer.Warning) {
	if w == nil {
		return
	}
	for _, x := range ws {
		fmt.Fprintf(w, "warning (%s): %s\n", x.Kind, x.Message)
	}
}

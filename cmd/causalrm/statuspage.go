package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/coordinator/statuspage"
	"github.com/causalrm/causalrm/internal/telemetry"
)

// The live status page (coordinator/statuspage, docs/status-page.md) is
// served beside a coordinator's /metrics: on --metrics-addr by `causalrm
// coordinator`, on --status-addr by `train --workers N`.

const statusAddrUsage = "with --workers (exact reduction): serve the job's live status page at http://ADDR/status, " +
	"beside the embedded coordinator's /metrics, /healthz and /readyz (e.g. 127.0.0.1:8080; empty: off). " +
	"No authentication, like --metrics-addr: bind it to 127.0.0.1 or a trusted network"

// checkStatusAddr refuses --status-addr where there is no coordinator to
// show: without --workers, or with --reduce fast (a static ring).
func checkStatusAddr(addr string, workers int, reduce string) error {
	switch {
	case addr == "":
		return nil
	case workers <= 0:
		return fmt.Errorf("--status-addr %s: the status page is the one of train --workers N's coordinator: it needs --workers", addr)
	case reduce != "exact":
		return fmt.Errorf("--status-addr %s: needs --reduce exact (the elastic runtime, with its coordinator); --reduce %s trains a static ring without one", addr, reduce)
	}
	return nil
}

// serveCoordinator serves node's /metrics, /healthz, /readyz and status
// page (/status, /status.json) on addr; stop shuts them down.
func serveCoordinator(addr string, node *coordinator.Node, logger *slog.Logger) (srv *telemetry.Server, stop func(), err error) {
	reg := telemetry.NewRegistry()
	if err := node.RegisterMetrics(reg); err != nil {
		return nil, nil, err
	}
	page := statuspage.New(node)
	if srv, err = telemetry.Serve(addr, reg, node.Ready, logger, page.Routes()...); err != nil {
		page.Close()
		return nil, nil, err
	}
	return srv, func() {
		if err := srv.Close(); err != nil && logger != nil {
			logger.Warn("metrics server", "err", err)
		}
		page.Close()
	}, nil
}

// startStatusPage serves train --workers' --status-addr ("": nothing) and
// says where on log.
func startStatusPage(addr string, node *coordinator.Node, log io.Writer) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	srv, stop, err := serveCoordinator(addr, node, nil)
	if err != nil {
		if inner := errors.Unwrap(err); inner != nil {
			err = inner // telemetry names --metrics-addr
		}
		return nil, fmt.Errorf("--status-addr %s: %w", addr, err)
	}
	fmt.Fprintf(log, "status page: http://%s%s (metrics: http://%s/metrics)\n", srv.Addr(), statuspage.PathPage, srv.Addr())
	return stop, nil
}

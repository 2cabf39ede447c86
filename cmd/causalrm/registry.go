package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/causalrm/causalrm/coordinator"
)

// withRegistry makes the client read the leader's address from the etcd
// registry whenever every known coordinator address fails ("" = none).
func withRegistry(url string) func(*coordinator.ClientConfig) {
	return func(c *coordinator.ClientConfig) { c.Registry = url }
}

// attachWorker registers worker id with the coordinators and keeps it
// alive: with --registry by an etcd lease under its key (put before the
// registration, revoked by the returned detach), else by the heartbeat
// stream (closed by detach).
func attachWorker(ctx context.Context, f *elasticFlags, client *coordinator.Client, id, addr string, logger *slog.Logger) (detach func(), err error) {
	if reg := client.Registry(); reg != nil {
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		lease, err := reg.Hold(hctx, id, addr, f.leaseTTL, logger)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("--registry: %w", err)
		}
		if err := client.Register(ctx, id, addr); err != nil {
			lease.Release()
			return nil, err
		}
		logger.Info("registered; liveness by lease", "key", reg.WorkerKey(id), "ttl", f.leaseTTL)
		return lease.Release, nil
	}
	if err := client.Register(ctx, id, addr); err != nil {
		return nil, err
	}
	hbCtx, hbStop := context.WithCancel(ctx)
	hbDone := make(chan error, 1)
	go func() { hbDone <- client.Heartbeat(hbCtx, id) }()
	return func() { hbStop(); <-hbDone }, nil
}

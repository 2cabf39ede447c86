package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The etcd registry (docs/elastic.md, "Registry"): with Config.Registry set,
// worker liveness comes from etcd leases instead of heartbeats. Under the
// prefix /causalrm/<name>/ (<name> is the registry URL's path, "default"
// when it has none):
//
//	leader          the leading coordinator's gRPC address, under its lease
//	workers/<id>    a worker's collective address, under the worker's lease
//
// A worker key that disappears (its lease expired or was revoked) is a dead
// worker at once; a present key counts as a continuous beat.

// DefaultLeaseTTL is a worker's lease TTL when none is given.
const DefaultLeaseTTL = 2 * time.Second

// registryPrefixRoot is the root of every job's keys.
const registryPrefixRoot = "/causalrm/"

// ParseRegistry parses "etcd://host:port[,host:port...][/name]" into the
// etcd endpoints and the key prefix ("/causalrm/<name>/").
func ParseRegistry(raw string) (endpoints []string, prefix string, err error) {
	rest, ok := strings.CutPrefix(raw, "etcd://")
	if !ok {
		return nil, "", fmt.Errorf("registry %q: want etcd://host:port[,host:port][/name]", raw)
	}
	hosts, name, _ := strings.Cut(rest, "/")
	name = strings.Trim(name, "/")
	if name == "" {
		name = "default"
	}
	if strings.ContainsAny(name, "/?#") || name != url.PathEscape(name) {
		return nil, "", fmt.Errorf("registry %q: the name %q must be one plain path segment", raw, name)
	}
	for _, h := range strings.Split(hosts, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			return nil, "", fmt.Errorf("registry %q: %v", raw, err)
		}
		endpoints = append(endpoints, "http://"+h)
	}
	if len(endpoints) == 0 {
		return nil, "", fmt.Errorf("registry %q: no etcd endpoint", raw)
	}
	return endpoints, registryPrefixRoot + name + "/", nil
}

// Registry is a connection to the etcd registry of one job.
type Registry struct {
	cli    *clientv3.Client
	prefix string
}

// OpenRegistry connects to the registry at url (etcd://...). It does not
// wait for etcd to answer.
func OpenRegistry(rawURL string) (*Registry, error) {
	eps, prefix, err := ParseRegistry(rawURL)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            eps,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", rawURL, err)
	}
	return &Registry{cli: cli, prefix: prefix}, nil
}

// Close closes the connection.
func (r *Registry) Close() error { return r.cli.Close() }

// Prefix is the job's key prefix, "/causalrm/<name>/".
func (r *Registry) Prefix() string { return r.prefix }

// LeaderKey holds the leading coordinator's gRPC address.
func (r *Registry) LeaderKey() string { return r.prefix + "leader" }

// WorkerKey holds worker id's collective address.
func (r *Registry) WorkerKey(id string) string { return r.workersPrefix() + id }

func (r *Registry) workersPrefix() string { return r.prefix + "workers/" }

// Leader returns the gRPC address the current leader published; an error
// when none is published.
func (r *Registry) Leader(ctx context.Context) (string, error) {
	resp, err := r.cli.Get(ctx, r.LeaderKey())
	if err != nil {
		return "", fmt.Errorf("registry: %w", err)
	}
	if len(resp.Kvs) == 0 || len(resp.Kvs[0].Value) == 0 {
		return "", errors.New("registry: no leader published")
	}
	return string(resp.Kvs[0].Value), nil
}

// Resolve is a ClientConfig.Resolve that reads the leader key.
func (r *Registry) Resolve(ctx context.Context) ([]string, error) {
	a, err := r.Leader(ctx)
	if err != nil {
		return nil, err
	}
	return []string{a}, nil
}

func ttlSeconds(ttl time.Duration) int64 {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	return max(1, int64((ttl+time.Second-1)/time.Second))
}

// Lease is a worker's key held under a lease that is kept alive (and
// re-granted if it is lost) until Release.
type Lease struct {
	r       *Registry
	key     string
	val     string
	ttl     int64
	log     *slog.Logger
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	id      clientv3.LeaseID
	release sync.Once
}

// Hold grants a lease of ttl (rounded up to whole seconds, at least 1s;
// etcd may raise it to its minimum), puts the worker's key with addr under
// it and keeps it alive. It returns once the key is in etcd, so a worker
// registers with the coordinators only after its key exists.
func (r *Registry) Hold(ctx context.Context, workerID, addr string, ttl time.Duration, log *slog.Logger) (*Lease, error) {
	if workerID == "" || strings.Contains(workerID, "/") {
		return nil, fmt.Errorf("%w: registry: worker id %q", state.ErrInvalidArgument, workerID)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Lease{r: r, key: r.WorkerKey(workerID), val: addr, ttl: ttlSeconds(ttl), log: log, done: make(chan struct{})}
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ka, err := l.grant(ctx, kctx)
	if err != nil {
		cancel()
		return nil, err
	}
	l.cancel = cancel
	go l.keep(kctx, ka)
	return l, nil
}

// grant grants a fresh lease, puts the key under it and starts its
// keep-alive, which runs until kctx ends.
func (l *Lease) grant(ctx, kctx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	g, err := l.r.cli.Grant(ctx, l.ttl)
	if err != nil {
		return nil, fmt.Errorf("registry: grant: %w", err)
	}
	if _, err := l.r.cli.Put(ctx, l.key, l.val, clientv3.WithLease(g.ID)); err != nil {
		l.revoke(g.ID)
		return nil, fmt.Errorf("registry: put %s: %w", l.key, err)
	}
	l.mu.Lock()
	l.id = g.ID
	l.mu.Unlock()
	ka, err := l.r.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		l.revoke(g.ID)
		return nil, fmt.Errorf("registry: keep-alive: %w", err)
	}
	return ka, nil
}

func (l *Lease) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = l.r.cli.Revoke(ctx, id)
}

// keep drains the keep-alive responses; when the lease is lost (etcd
// unreachable for longer than the TTL) it grants a new one and puts the
// key again.
func (l *Lease) keep(ctx context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse) {
	defer close(l.done)
	backoff := 100 * time.Millisecond
	for {
		for ka != nil {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-ka:
				if !ok {
					ka = nil
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("registry: the worker's lease was lost; granting a new one", "key", l.key)
		for ka == nil {
			var err error
			gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			ka, err = l.grant(gctx, ctx)
			cancel()
			if err == nil {
				backoff = 100 * time.Millisecond
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}
}

// Release stops keeping the lease alive and revokes it, which deletes the
// key (a graceful exit).
func (l *Lease) Release() {
	l.release.Do(func() {
		l.cancel()
		<-l.done
		l.mu.Lock()
		id := l.id
		l.mu.Unlock()
		l.revoke(id)
	})
}

// advertised is the gRPC address clients dial for this node: its entry in
// Servers, else the listener's address.
func (n *Node) advertised() string {
	for _, s := range n.cfg.Servers {
		if s.ID == n.cfg.ID {
			return s.GRPCAddr
		}
	}
	return n.grpcAddr
}

// leadRegistry runs the registry side of one leadership term (until ctx
// ends) when a registry is configured; the returned channel is closed when
// it has stopped.
func (n *Node) leadRegistry(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if n.cfg.Registry == "" {
		close(done)
		return done
	}
	n.live.setUnsynced(true)
	go func() {
		defer close(done)
		reg, err := OpenRegistry(n.cfg.Registry)
		if err != nil {
			n.log.Error("registry", "err", err)
			return
		}
		defer reg.Close()
		backoff := 100 * time.Millisecond
		for ctx.Err() == nil {
			start := time.Now()
			err := n.registryTerm(ctx, reg)
			if ctx.Err() != nil {
				return
			}
			n.log.Warn("registry: re-reading the workers", "err", err)
			if time.Since(start) > 10*time.Second {
				backoff = 100 * time.Millisecond
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}()
	return done
}

// registryTerm publishes this leader's address under a lease it keeps
// alive, reads the worker keys and watches them from that revision: a
// present key is a beat, a deleted one a dead worker. It returns when ctx
// ends (revoking the leader lease) or on an etcd error.
func (n *Node) registryTerm(ctx context.Context, reg *Registry) error {
	addr := n.advertised()
	g, err := reg.cli.Grant(ctx, ttlSeconds(n.cfg.RegistryLeaderTTL))
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, _ = reg.cli.Revoke(rctx, g.ID)
		cancel()
	}()
	publish := func() error {
		_, err := reg.cli.Put(ctx, reg.LeaderKey(), addr, clientv3.WithLease(g.ID))
		return err
	}
	if err := publish(); err != nil {
		return fmt.Errorf("publish the leader: %w", err)
	}
	ka, err := reg.cli.KeepAlive(ctx, g.ID)
	if err != nil {
		return fmt.Errorf("keep-alive: %w", err)
	}
	n.log.Info("registry: published the leader", "key", reg.LeaderKey(), "addr", addr)

	// The workers registered before the read: whoever has no key then is
	// dead (a worker puts its key before it registers).
	var registered []string
	n.fsm.read(func(s *state.State) {
		for _, w := range s.Workers {
			if w.Status == state.WorkerPending || w.Status == state.WorkerActive {
				registered = append(registered, w.ID)
			}
		}
	})
	resp, err := reg.cli.Get(ctx, reg.workersPrefix(), clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read the workers: %w", err)
	}
	present := map[string]bool{}
	for _, kv := range resp.Kvs {
		id := strings.TrimPrefix(string(kv.Key), reg.workersPrefix())
		present[id] = true
		n.live.keyPut(id)
	}
	for _, id := range registered {
		if !present[id] {
			n.log.Info("registry: a registered worker has no key: dead", "worker", id)
			n.live.keyGone(id)
		}
	}
	n.live.setUnsynced(false)
	n.kickLoop()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := reg.cli.Watch(wctx, reg.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-ka:
			if !ok {
				return errors.New("the leader's lease was lost")
			}
		case wr, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("watch: %w", err)
			}
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				if key == reg.LeaderKey() {
					// Another (stale) leader wrote or removed the key: while
					// this node leads, the key names it.
					if ev.Type == clientv3.EventTypeDelete || string(ev.Kv.Value) != addr {
						if _, err := n.leading(); err == nil {
							if err := publish(); err != nil {
								return fmt.Errorf("publish the leader: %w", err)
							}
						}
					}
					continue
				}
				id, ok := strings.CutPrefix(key, reg.workersPrefix())
				if !ok || id == "" {
					continue
				}
				if ev.Type == clientv3.EventTypeDelete {
					n.log.Info("registry: a worker's key is gone: dead", "worker", id)
					n.live.keyGone(id)
					n.kickLoop()
				} else {
					n.live.keyPut(id)
				}
			}
		}
	}
}

// keyPut records that worker id's registry key exists: a beat that lasts
// while the key does.
func (l *liveness) keyPut(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.keys[id] = true
	l.beatLocked(id)
}

// setUnsynced: while true (a registry term that has not read the keys
// yet, etcd perhaps unreachable), no worker dies of silence.
func (l *liveness) setUnsynced(v bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.unsynced = v
}

// keyGone records that worker id's registry key was deleted: it is dead.
func (l *liveness) keyGone(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.keys, id)
	l.broken[id] = true
}

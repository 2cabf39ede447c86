package worker

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/causalrm/causalrm/collective"
	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/telemetry"
	"github.com/causalrm/causalrm/trainer"
)

// Metrics are an elastic worker's Prometheus metrics (--metrics-addr). The
// runtime feeds them through nil-safe hooks, so a worker without metrics
// passes a nil *Metrics; a scrape reads a consistent copy under mu.
type Metrics struct {
	mu sync.Mutex

	ready      bool // training in a generation's ring
	readyWhy   string
	globalStep uint64
	rowsPerSec float64
	loss       float64
	hasLoss    bool
	generation uint64
	changes    map[string]float64 // by cause label
	reconciled float64
	lastCkpt   time.Time
	batch      int

	// rows/s windows: the previous one's start and the current one's
	winStart, curStart time.Time
	winStep, curStep   uint64

	// ring traffic: the rings closed so far, summed, plus the current one
	codec string
	ring  *collective.Ring
	past  ringTotals
}

// ringTotals sums collective.Stats over rings.
type ringTotals struct {
	sent    map[string]float64 // by codec
	recv    map[string]float64 // by codec
	seconds map[string]float64 // by codec
	ops     float64
}

func newRingTotals() ringTotals {
	return ringTotals{sent: map[string]float64{}, recv: map[string]float64{}, seconds: map[string]float64{}}
}

func (t *ringTotals) add(s collective.Stats, codec string) {
	var split int64
	for c, cs := range s.ByCodec {
		t.sent[string(c)] += float64(cs.BytesSent)
		split += cs.BytesSent
	}
	if rest := s.BytesSent - split; rest > 0 {
		t.sent[codec] += float64(rest)
	}
	t.recv[codec] += float64(s.BytesRecv)
	t.seconds[codec] += s.Seconds
	t.ops += float64(s.Ops)
}

func (t *ringTotals) clone() ringTotals {
	c := newRingTotals()
	for k, v := range t.sent {
		c.sent[k] = v
	}
	for k, v := range t.recv {
		c.recv[k] = v
	}
	for k, v := range t.seconds {
		c.seconds[k] = v
	}
	c.ops = t.ops
	return c
}

var (
	mGlobalStep = desc("worker_global_step", "Training steps completed over the whole pipeline, as this worker's trainer counts them.")
	mRowsPerSec = desc("worker_rows_per_second", "Training rows per second of the job: the trainer's (global) batch size times the steps per second this worker sees, over the last second or so.")
	mLoss       = desc("worker_loss", "The running train loss of the current epoch (mean over its steps so far; at an epoch's first step, the last epoch's train loss).")
	mBytes      = desc("allreduce_bytes_total", "Bytes of all-reduce segment messages on this worker's ring streams, summed over every ring it has had; received bytes carry the ring's codec.", "direction", "codec")
	mSeconds    = desc("allreduce_seconds_total", "Wall time of this worker's collective calls, summed over every ring it has had, by the ring's codec.", "codec")
	mOps        = desc("allreduce_ops_total", "Collective calls (all-reduces) completed on this worker's rings.")
	mGeneration = desc("generation", "The coordinator generation of the ring this worker trains in (0 before its first).")
	mGenChanges = desc("generation_changes_total", "Rings this worker switched to, by the generation's cause.", "cause")
	mReconciled = desc("reconciliations_total", "Failed collective calls settled with the survivors of a crash (the elastic design's rollbacks: nothing is rolled back, docs/elastic.md).")
	mCkptAge    = desc("checkpoint_age_seconds", "Seconds since this worker last stored a checkpoint (absent until it stores one).")
	mReady      = desc("worker_ready", "1 while the worker trains in a generation's ring (what /readyz reports).")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(telemetry.Namespace+"_"+name, help, labels, nil)
}

// NewMetrics makes a worker's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{changes: map[string]float64{}, past: newRingTotals(), readyWhy: "no ring yet"}
	for _, c := range telemetry.GenerationCauses {
		m.changes[c] = 0
	}
	if reg != nil {
		if err := reg.Register(m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Ready is nil while the worker trains in a generation's ring (/readyz).
func (m *Metrics) Ready() error {
	if m == nil {
		return errors.New("no metrics")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.ready {
		return errors.New(m.readyWhy)
	}
	return nil
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mGlobalStep, mRowsPerSec, mLoss, mBytes, mSeconds, mOps, mGeneration,
		mGenChanges, mReconciled, mCkptAge, mReady} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	tot := m.past.clone()
	if m.ring != nil {
		tot.add(m.ring.Stats(), m.codec)
	}
	gs, rps, loss, hasLoss, gen, rec, ckpt := m.globalStep, m.rowsPerSec, m.loss, m.hasLoss, m.generation, m.reconciled, m.lastCkpt
	changes := make(map[string]float64, len(m.changes))
	for k, v := range m.changes {
		changes[k] = v
	}
	ready := 0.0
	if m.ready {
		ready = 1
	}
	m.mu.Unlock()

	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	gauge(mGlobalStep, float64(gs))
	gauge(mRowsPerSec, rps)
	if hasLoss {
		gauge(mLoss, loss)
	}
	codecs := map[string]bool{}
	for c := range tot.sent {
		codecs[c] = true
	}
	for c := range tot.recv {
		codecs[c] = true
	}
	for c := range codecs {
		counter(mBytes, tot.sent[c], "sent", c)
		counter(mBytes, tot.recv[c], "received", c)
	}
	for c, s := range tot.seconds {
		counter(mSeconds, s, c)
	}
	counter(mOps, tot.ops)
	gauge(mGeneration, float64(gen))
	for c, v := range changes {
		counter(mGenChanges, v, c)
	}
	counter(mReconciled, rec)
	if !ckpt.IsZero() {
		gauge(mCkptAge, time.Since(ckpt).Seconds())
	}
	gauge(mReady, ready)
}

// ringOpened: the worker now trains in ring r of generation g (the ring
// before it, if any, is closed: its traffic is final).
func (m *Metrics) ringOpened(r *collective.Ring, g state.Generation, codec collective.Codec) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.foldRing()
	m.ring, m.codec = r, string(codec)
	m.generation = g.Number
	m.changes[g.Cause.Label()]++
	m.ready = true
}

func (m *Metrics) foldRing() {
	if m.ring != nil {
		m.past.add(m.ring.Stats(), m.codec)
		m.ring = nil
	}
}

// stopped: the worker trains no more (it left, or its runtime closed).
func (m *Metrics) stopped(why string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ready, m.readyWhy = false, why
}

// step: a step boundary (the steps before it are done).
func (m *Metrics) step(b trainer.Boundary, tr *trainer.Trainer) {
	if m == nil {
		return
	}
	loss, hasLoss := 0.0, false
	batch := 0
	if tr != nil {
		loss, hasLoss = tr.RunningLoss()
		if m.batch == 0 { // only the trainer's goroutine writes batch
			batch = tr.Config().Batch
		}
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if batch > 0 {
		m.batch = batch
	}
	m.globalStep = b.GlobalStep
	if hasLoss {
		m.loss, m.hasLoss = loss, true
	}
	// The rate covers the previous window (rolled every second) and the
	// current one: 1 to 2 seconds of history once training has run that long.
	g := b.GlobalStep
	if m.winStart.IsZero() || g < m.curStep {
		m.winStart, m.winStep, m.curStart, m.curStep = now, g, now, g
		return
	}
	if now.Sub(m.curStart) >= time.Second {
		m.winStart, m.winStep, m.curStart, m.curStep = m.curStart, m.curStep, now, g
	}
	if d := now.Sub(m.winStart); d > 0 && g > m.winStep {
		m.rowsPerSec = float64(g-m.winStep) * float64(m.batch) / d.Seconds()
	}
}

// reconciledCall: a failed call was settled with the survivors.
func (m *Metrics) reconciledCall() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reconciled++
}

// checkpointStored: this worker stored a checkpoint.
func (m *Metrics) checkpointStored() {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastCkpt = time.Now()
}

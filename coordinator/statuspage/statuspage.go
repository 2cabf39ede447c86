// Package statuspage is a coordinator's live status page: a small HTML page
// (plain JavaScript, inline SVG charts, no external resource) served beside
// /metrics at /status, which polls /status.json every second.
//
// Everything it shows comes from the coordinator's replicated state
// (coordinator/state): the job and its status, the registered workers, the
// generations, the committed step log, the newest committed progress (the
// watermark), the last global step each worker reported and the
// checkpoints, and the epoch losses the workers reported (the loss curves
// per stage). The step rate and the rows/s over time come from the
// watermarks the page itself has sampled (once a second, from when it
// started), since the state keeps only the newest one.
package statuspage

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/telemetry"
)

// Source is what the page reads: a coordinator node (coordinator.Node).
type Source interface {
	// State is a copy of the replicated state.
	State() state.State
	// Leader is the known leader's id and gRPC address ("" if none).
	Leader() (id, grpcAddr string)
	// ID is this coordinator's id.
	ID() string
}

// Paths of the page's routes.
const (
	PathPage = "/status"
	PathJSON = "/status.json"
	PathJS   = "/status.js"
	PathCSS  = "/status.css"
)

// Limits of what one snapshot carries.
const (
	// MaxSamples is how many sampled watermarks are kept (about ten
	// minutes of a job that reports every second).
	MaxSamples = 600
	// MaxGenerations is how many of the newest generations a snapshot
	// lists (GenerationsTotal counts them all).
	MaxGenerations = 200
	// RateWindow is the window of the global step rate.
	RateWindow = 30 * time.Second
	// SampleEvery is the sampler's period.
	SampleEvery = time.Second
)

var (
	//go:embed status.html
	pageHTML []byte
	//go:embed status.js
	pageJS []byte
	//go:embed status.css
	pageCSS []byte
)

// Page serves the status page of one coordinator. New starts its sampler;
// Close stops it.
type Page struct {
	src     Source
	now     func() time.Time
	mu      sync.Mutex
	samples []Sample
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

// New is the page of src, with its sampler running (Close stops it).
func New(src Source) *Page {
	p := newPage(src, time.Now)
	go p.loop()
	return p
}

func newPage(src Source, now func() time.Time) *Page {
	return &Page{src: src, now: now, stop: make(chan struct{}), done: make(chan struct{})}
}

func (p *Page) loop() {
	defer close(p.done)
	t := time.NewTicker(SampleEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			st := p.src.State()
			p.sample(&st)
		}
	}
}

// Close stops the sampler and waits for it.
func (p *Page) Close() {
	p.once.Do(func() {
		close(p.stop)
		if p.done != nil {
			<-p.done
		}
	})
}

// Routes are the page's routes, for telemetry.Serve.
func (p *Page) Routes() []telemetry.Route {
	return []telemetry.Route{
		{Pattern: PathPage, Handler: static("text/html; charset=utf-8", pageHTML)},
		{Pattern: PathJS, Handler: static("text/javascript; charset=utf-8", pageJS)},
		{Pattern: PathCSS, Handler: static("text/css; charset=utf-8", pageCSS)},
		{Pattern: PathJSON, Handler: http.HandlerFunc(p.serveJSON)},
	}
}

// Handler serves the page's routes alone (tests, or a mux of one's own).
func (p *Page) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, r := range p.Routes() {
		mux.Handle(r.Pattern, r.Handler)
	}
	return mux
}

// csp allows the page's own script, style and data only: no external
// resource can load, and no inline script runs.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func headers(w http.ResponseWriter, contentType string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", csp)
}

func static(contentType string, body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		headers(w, contentType)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
}

func (p *Page) serveJSON(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	b, err := json.Marshal(p.Snapshot())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	headers(w, "application/json")
	w.Write(append(b, '\n'))
}

// sample records the state's watermark when it is new.
func (p *Page) sample(st *state.State) {
	wm := st.Watermark
	if wm.Time == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.samples); n > 0 {
		last := p.samples[n-1]
		if last.Time == ms(wm.Time) && last.GlobalStep == wm.GlobalStep {
			return
		}
	}
	p.samples = append(p.samples, Sample{Time: ms(wm.Time), GlobalStep: wm.GlobalStep, Stage: wm.Stage, Epoch: wm.Epoch,
		WorkerID: wm.WorkerID, RowsPerSec: wm.RowsPerSec})
	if n := len(p.samples) - MaxSamples; n > 0 {
		p.samples = append([]Sample(nil), p.samples[n:]...)
	}
}

// ms is unix nanoseconds as unix milliseconds (0 stays 0).
func ms(ns int64) int64 { return ns / int64(time.Millisecond) }

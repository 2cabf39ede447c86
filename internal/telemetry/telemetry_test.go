package telemetry

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHandlerCodes(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "test_total", Help: "a test counter"})
	reg.MustRegister(c)
	c.Add(3)
	var notReady error = errors.New("no ring yet")
	srv := httptest.NewServer(Handler(reg, func() error { return notReady }))
	defer srv.Close()

	if code, _ := get(t, srv.URL+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || !strings.Contains(body, "no ring yet") {
		t.Fatalf("/readyz not ready: %d %q", code, body)
	}
	notReady = nil
	if code, _ := get(t, srv.URL+"/readyz"); code != 200 {
		t.Fatalf("/readyz ready: %d", code)
	}
	if code, _ := get(t, srv.URL+"/nope"); code != 404 {
		t.Fatalf("/nope: %d", code)
	}
	code, body := get(t, srv.URL+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	if f := fams["causalrm_test_total"]; f == nil || f.GetMetric()[0].GetCounter().GetValue() != 3 {
		t.Fatalf("causalrm_test_total: %v", f)
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
}

func TestServeAndClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s, err := Serve("127.0.0.1:0", NewRegistry(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, "http://"+s.Addr()+"/readyz"); code != 200 {
		t.Fatalf("/readyz with no ready func: %d", code)
	}
	http.DefaultClient.CloseIdleConnections()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil {
		t.Fatal("server still answers after Close")
	}
	if _, err := Serve("256.0.0.1:1", NewRegistry(), nil, nil); err == nil {
		t.Fatal("bad address accepted")
	}
}

func TestLoggerFormats(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("ring", "generation", 3, "cause", "join:w2")
	log.With("worker", "w1").Warn("collective call failed", "err", errors.New("boom"))
	log.Debug("not at info level")
	sc := bufio.NewScanner(&buf)
	lines := 0
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		if m["msg"] == nil || m["level"] == nil || m["time"] == nil {
			t.Fatalf("line %q lacks msg, level or time", sc.Text())
		}
		lines++
	}
	if lines != 2 {
		t.Fatalf("%d JSON lines, want 2", lines)
	}
	buf.Reset()
	if log, err = NewLogger(&buf, "text"); err != nil {
		t.Fatal(err)
	}
	log.Info("hello", "k", 1)
	if s := buf.String(); !strings.Contains(s, "msg=hello k=1") || json.Valid([]byte(s)) {
		t.Fatalf("text line %q", s)
	}
	if _, err := NewLogger(&buf, "xml"); err == nil {
		t.Fatal("--log-format xml accepted")
	}
}

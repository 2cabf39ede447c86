package main

import (
	"net"
	"strings"
	"testing"
	"time"
)

// causalrm --version prints the version, as causalrm version does.
func TestVersionFlag(t *testing.T) {
	out, err := run(t, "--version")
	if err != nil || !strings.HasPrefix(out, "causalrm "+version) {
		t.Fatalf("--version: %q, %v", out, err)
	}
}

// status and submit against an address where no coordinator listens fail
// within their --timeout and say what to check.
func TestControlWithoutCoordinatorFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	for _, args := range [][]string{
		{"status", "--coordinators", addr, "--timeout", "1s"},
		{"submit", "--coordinators", addr, "--timeout", "1s", "--data", "d.safetensors"},
	} {
		start := time.Now()
		_, err := run(t, args...)
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "no coordinator answered at "+addr+" within 1s") ||
			!strings.Contains(err.Error(), "causalrm coordinator") {
			t.Errorf("%v: %v", args, err)
		}
		if took > 5*time.Second {
			t.Errorf("%v: took %v with --timeout 1s", args, took)
		}
	}
}

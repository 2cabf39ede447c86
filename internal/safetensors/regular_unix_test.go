//go:build unix

package safetensors

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A FIFO given as a file must be refused, not opened (opening one for
// reading blocks until a writer comes).
func TestFIFORefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.safetensors")
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	done := make(chan error, 2)
	go func() { _, err := Open(p); done <- err }()
	go func() { _, _, err := Read(p); done <- err }()
	for range 2 {
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "named pipe") || !strings.Contains(err.Error(), p) {
				t.Fatalf("got %v, want an error naming %s as a named pipe", err, p)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("reading a FIFO hangs")
		}
	}
}

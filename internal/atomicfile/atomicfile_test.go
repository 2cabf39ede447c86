package atomicfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// A failure half-way through leaves neither a partial file nor a temp file.
func TestFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, "y.safetensors")
	err := Write(q, func(w io.Writer) error {
		w.Write([]byte("partial"))
		return errors.New("boom")
	})
	if err == nil {
		t.Fatal("error lost")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("leftover files: %v", entries)
	}
}

// A failed write leaves the existing file as it was.
func TestFailureKeepsOldFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	if err := Write(p, func(w io.Writer) error { _, err := w.Write([]byte("old")); return err }); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, func(w io.Writer) error {
		w.Write([]byte("new"))
		return errors.New("boom")
	}); err == nil {
		t.Fatal("error lost")
	}
	if b, err := os.ReadFile(p); err != nil || string(b) != "old" {
		t.Fatalf("after a failed write: %q, %v; want \"old\"", b, err)
	}
}

// Small writes are buffered, large ones pass through, in order.
func TestContent(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	var want bytes.Buffer
	sizes := []int{1, 100, 1 << 16, 3, 1<<16 - 1, 1<<16 + 1, 7, 200 << 10}
	if err := Write(p, func(w io.Writer) error {
		for i, n := range sizes {
			b := bytes.Repeat([]byte{byte('a' + i)}, n)
			want.Write(b)
			if k, err := w.Write(b); err != nil {
				return err
			} else if k != n {
				return fmt.Errorf("wrote %d of %d bytes", k, n)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("file of %d bytes differs from the %d written", len(got), want.Len())
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(filepath.Dir(p)); len(entries) != 1 {
		t.Fatalf("leftover files: %v", entries)
	}
}

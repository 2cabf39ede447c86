package syncio

import (
	"strings"
	"sync"
	"testing"
)

// Concurrent writers lose nothing (and -race sees no race).
func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var sb strings.Builder
	w := NewWriter(&sb)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				b.Write([]byte("0123456789"))
				w.Write([]byte("ab"))
			}
		}()
	}
	wg.Wait()
	if n := len(b.String()); n != 8000 {
		t.Fatalf("buffer holds %d bytes, want 8000", n)
	}
	if n := sb.Len(); n != 1600 {
		t.Fatalf("writer passed %d bytes, want 1600", n)
	}
}

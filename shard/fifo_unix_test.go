//go:build unix

package shard

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A FIFO given as a data file is refused before it is opened: opening one
// for reading blocks until a writer comes, forever.
func TestFIFOIsNotAFile(t *testing.T) {
	for _, ext := range []string{".safetensors", ".parquet", ".jsonl", ".jsonl.gz"} {
		p := filepath.Join(t.TempDir(), "x"+ext)
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Skip("mkfifo:", err)
		}
		err, _ := loadBounded(t, LoadSpec{Train: p})
		wantRowErr(t, err, p, -1, false, "", ErrFormat, p+": is a named pipe (FIFO), not a regular file")
	}
}

// A device (here /dev/zero, which never ends) or a socket is refused too.
func TestDeviceAndSocketAreNotFiles(t *testing.T) {
	dir := t.TempDir()
	dev := filepath.Join(dir, "zero.jsonl")
	if err := os.Symlink("/dev/zero", dev); err != nil {
		t.Fatal(err)
	}
	err, _ := loadBounded(t, LoadSpec{Train: dev})
	wantRowErr(t, err, dev, -1, false, "", ErrFormat, dev+": is a device, not a regular file")

	sock := filepath.Join(dir, "s.parquet")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Skip("unix socket:", err)
	}
	defer l.Close()
	err, _ = loadBounded(t, LoadSpec{Train: sock})
	wantRowErr(t, err, sock, -1, false, "", ErrFormat, sock+": is a socket, not a regular file")
}

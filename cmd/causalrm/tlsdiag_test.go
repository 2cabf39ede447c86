package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TLS mistakes fail fast and say what to check: a client trusting another
// CA than the server's names the certificate problem and --tls-ca, a
// plaintext client of a TLS server suggests the TLS flags, and a client
// whose certificate the server does not trust is told so.
func TestTLSMistakesAreClear(t *testing.T) {
	pki := t.TempDir()
	ca, caKey := writeCert(t, pki, "ca", nil, nil)
	writeCert(t, pki, "server", ca, caKey)
	other, otherKey := writeCert(t, pki, "otherca", nil, nil)
	writeCert(t, pki, "client", other, otherKey)
	server := tlsFlags{cert: filepath.Join(pki, "server.pem"), key: filepath.Join(pki, "server.key"), ca: filepath.Join(pki, "ca.pem")}
	serverTLS, _, err := server.configs()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)))
	go srv.Serve(lis)
	defer srv.Stop()
	addr := lis.Addr().String()

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"another CA", []string{"--tls-cert", filepath.Join(pki, "client.pem"), "--tls-key", filepath.Join(pki, "client.key"),
			"--tls-ca", filepath.Join(pki, "otherca.pem")},
			"TLS handshake with " + addr + " failed: x509: certificate signed by unknown authority (check --tls-ca)"},
		{"no TLS", nil, "the server may require TLS (--tls-ca/--tls-cert/--tls-key)"},
		{"a client certificate the server does not trust", []string{"--tls-cert", filepath.Join(pki, "client.pem"),
			"--tls-key", filepath.Join(pki, "client.key"), "--tls-ca", filepath.Join(pki, "ca.pem")},
			"TLS handshake with " + addr + " failed: the server refused it: remote error: tls: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			log, err := run(t, append([]string{"status", "--coordinators", addr}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q\n%s", err, tc.want, log)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("took %v", took)
			}
		})
	}
}

package coordinator

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/causalrm/causalrm/internal/testcert"
)

// testCert makes a certificate for 127.0.0.1 signed by ca (self-signed, a
// CA, when ca is nil).
func testCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, tls.Certificate) {
	t.Helper()
	cert, key, der := testcert.Issue(t, "test", ca, caKey)
	return cert, key, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// grpcServer serves gRPC (no service: a call that gets through answers
// Unimplemented) on 127.0.0.1, with mutual TLS when serverTLS is set.
func grpcServer(t *testing.T, serverTLS *tls.Config) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if serverTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(serverTLS)))
	}
	srv := grpc.NewServer(opts...)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// A TLS mismatch between a client and a coordinator fails Dial within
// seconds (not the 30 s call timeout) with a message that names the
// problem and what to check; a matching client gets through.
func TestDialTLSMismatchFailsFast(t *testing.T) {
	ca, caKey, _ := testCert(t, nil, nil)
	_, _, serverPair := testCert(t, ca, caKey)
	_, _, clientPair := testCert(t, ca, caKey)
	other, otherKey, _ := testCert(t, nil, nil) // another job's CA
	_, _, otherPair := testCert(t, other, otherKey)
	pool, otherPool := x509.NewCertPool(), x509.NewCertPool()
	pool.AddCert(ca)
	otherPool.AddCert(other)
	tlsAddr := grpcServer(t, &tls.Config{Certificates: []tls.Certificate{serverPair}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13})
	plainAddr := grpcServer(t, nil)

	for _, tc := range []struct {
		name string
		addr string
		tls  *tls.Config
		want string // "" : no TLS problem
	}{
		{"wrong CA", tlsAddr, &tls.Config{RootCAs: otherPool, Certificates: []tls.Certificate{otherPair}, MinVersion: tls.VersionTLS13},
			"TLS handshake with " + tlsAddr + " failed: x509: certificate signed by unknown authority (check --tls-ca)"},
		{"plaintext client, TLS server", tlsAddr, nil,
			"the server may require TLS (--tls-ca/--tls-cert/--tls-key)"},
		{"no client certificate", tlsAddr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13},
			"TLS handshake with " + tlsAddr + " failed: the server refused it: remote error: tls: certificate required (check --tls-cert and --tls-key"},
		{"TLS client, plaintext server", plainAddr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{clientPair}, MinVersion: tls.VersionTLS13},
			"TLS handshake with " + plainAddr + " failed: the server does not speak TLS"},
		{"matching TLS", tlsAddr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{clientPair}, MinVersion: tls.VersionTLS13}, ""},
		{"matching plaintext", plainAddr, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			c, err := Dial(context.Background(), ClientConfig{Addrs: []string{tc.addr}, TLS: tc.tls, Timeout: 30 * time.Second})
			took := time.Since(start)
			if c != nil {
				c.Close()
			}
			if err == nil {
				t.Fatal("Dial succeeded against a server without the coordinator service")
			}
			if took > 5*time.Second {
				t.Errorf("Dial took %v: %v", took, err)
			}
			var te *TLSError
			if tc.want == "" {
				if errors.As(err, &te) || !strings.Contains(err.Error(), "Unimplemented") {
					t.Fatalf("want the call to get through (Unimplemented), got %v", err)
				}
				return
			}
			if !errors.As(err, &te) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant a *TLSError with %q", err, tc.want)
			}
		})
	}
}

// Only a failure after reaching the server is probed: a refused
// connection is retried until the timeout, as before.
func TestHandshakeFailureGate(t *testing.T) {
	addr := freeAddr(t) // nothing listens there
	start := time.Now()
	_, err := Dial(context.Background(), ClientConfig{Addrs: []string{addr}, Timeout: 500 * time.Millisecond})
	var te *TLSError
	if err == nil || errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the timeout, got %v", err)
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Fatalf("gave up after %v, before the timeout", took)
	}
}

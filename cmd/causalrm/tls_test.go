package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/causalrm/causalrm/coordinator"
	"github.com/causalrm/causalrm/internal/testcert"
)

// writeCert writes a PEM certificate and key signed by ca (self-signed when
// ca is nil) valid for 127.0.0.1, for servers and clients alike.
func writeCert(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	cert, key, der := testcert.Issue(t, name, ca, caKey)
	kb, _ := x509.MarshalECPrivateKey(key)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	must(os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return cert, key
}

// A job with mutual TLS on every connection (raft, the coordinators' API,
// the workers' rings and state transfer) trains the one-process model; a
// client without a certificate is refused.
func TestElasticMutualTLS(t *testing.T) {
	dir := t.TempDir()
	data, ref := elasticReference(t, dir)
	pki := t.TempDir()
	ca, caKey := writeCert(t, pki, "ca", nil, nil)
	writeCert(t, pki, "node", ca, caKey)
	f := tlsFlags{cert: filepath.Join(pki, "node.pem"), key: filepath.Join(pki, "node.key"), ca: filepath.Join(pki, "ca.pem")}
	_, clientTLS, err := f.configs()
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, dir: t.TempDir(), token: "s3cret-job-token", workers: map[string]*proc{},
		env: []string{stepDelayEnv + "=10ms"}, clientTLS: clientTLS,
		procArgs: []string{"--tls-cert", f.cert, "--tls-key", f.key, "--tls-ca", f.ca}}
	c.startGroup(3, false)
	out := filepath.Join(dir, "out")
	c.submit(data, out, "--min-workers", "2", "--report-every", "5")
	c.startWorker("w1")
	c.startWorker("w2")
	c.waitStatus("step 20", time.Minute, atLeast(20))
	c.startWorker("w3") // a join: state transfer over mTLS
	c.waitStatus("3 members", time.Minute, members(3))
	c.finish(out, ref)

	refused := func(what string, cfg coordinator.ClientConfig) {
		cl, err := coordinator.Dial(context.Background(), cfg)
		if err == nil {
			defer cl.Close()
			_, err = cl.Status(context.Background())
		}
		if err == nil {
			t.Fatalf("%s was served", what)
		}
	}
	refused("a plaintext client", coordinator.ClientConfig{Addrs: c.adv, Token: c.token, Timeout: 2 * time.Second})
	refused("a client without a certificate", coordinator.ClientConfig{Addrs: c.adv, Token: c.token, Timeout: 2 * time.Second,
		TLS: &tls.Config{RootCAs: clientTLS.RootCAs, MinVersion: tls.VersionTLS13}})
	st, err := c.client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("generation %d over mTLS: %d members", st.Generation.Number, len(st.Generation.Members))
}

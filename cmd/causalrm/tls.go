package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"
)

// tlsFlags give the optional mutual TLS of every connection of a job:
// coordinators, workers and clients each present a certificate signed by
// the job's CA and accept only peers that do.
type tlsFlags struct{ cert, key, ca string }

func (f *tlsFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.cert, "tls-cert", "", "mTLS: this process's certificate (PEM); with --tls-key and --tls-ca")
	fs.StringVar(&f.key, "tls-key", "", "mTLS: the certificate's private key (PEM)")
	fs.StringVar(&f.ca, "tls-ca", "", "mTLS: the CA (PEM) every peer's certificate must chain to")
}

// configs returns the server and client TLS configs, or nils when no flag
// is given.
func (f *tlsFlags) configs() (server, client *tls.Config, err error) {
	if f.cert == "" && f.key == "" && f.ca == "" {
		return nil, nil, nil
	}
	if f.cert == "" || f.key == "" || f.ca == "" {
		return nil, nil, errors.New("mTLS needs all of --tls-cert, --tls-key and --tls-ca")
	}
	pair, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	pem, err := os.ReadFile(f.ca)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("--tls-ca %s: no PEM certificate", f.ca)
	}
	server = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	client = &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS13}
	return server, client, nil
}

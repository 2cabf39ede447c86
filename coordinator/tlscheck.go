package coordinator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TLSError is a TLS mismatch between this client and a coordinator, which
// retrying cannot fix: the server's certificate is not trusted, the server
// refuses the client's, or only one side uses TLS.
type TLSError struct {
	Addr      string
	Plaintext bool   // the client dialled without TLS
	Reason    string // what failed
	Hint      string // what to check
}

func (e *TLSError) Error() string {
	if e.Plaintext {
		return fmt.Sprintf("connecting to %s without TLS failed (%s): %s", e.Addr, e.Reason, e.Hint)
	}
	return fmt.Sprintf("TLS handshake with %s failed: %s (%s)", e.Addr, e.Reason, e.Hint)
}

// tlsProbeTimeout bounds tlsCheck's own connection.
const tlsProbeTimeout = 3 * time.Second

// handshakeFailure reports whether a call failed in a way a TLS mismatch
// can cause: the connection failed after reaching the server (the
// handshake, the HTTP/2 preface, a reset or broken pipe; gRPC's text for
// these varies with the timing). An address that does not answer at all
// (refused, unreachable, timed out) and a server's own answer ("not
// leader") are not probed.
func handshakeFailure(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	msg := st.Message()
	if strings.HasPrefix(msg, "not leader") {
		return false
	}
	for _, s := range []string{"connection refused", "no route to host", "network is unreachable", "no such host",
		"i/o timeout", "deadline exceeded", "produced zero addresses"} {
		if strings.Contains(msg, s) {
			return false
		}
	}
	return true
}

// tlsCheck diagnoses a connection failure to addr (callErr, gRPC's report
// of it) by dialling addr itself, within tlsProbeTimeout, the way the
// client's connections do: gRPC gives the handshake's error only as text,
// the probe gets it typed. It returns a *TLSError for a mismatch and nil
// when it finds none (the server may be starting, stopping or away), so
// that the caller retries as before.
func (c *Client) tlsCheck(ctx context.Context, addr string, callErr error) error {
	ctx, cancel := context.WithTimeout(ctx, tlsProbeTimeout)
	defer cancel()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	if c.cfg.TLS == nil {
		// Does the server speak TLS? A plaintext gRPC server answers a
		// ClientHello with HTTP/2 frames or by closing the connection.
		cfg := &tls.Config{ServerName: host, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12,
			InsecureSkipVerify: true} //nolint:gosec // a probe: it only learns whether the server speaks TLS, and sends nothing
		conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
		} else if !remoteAlert(err) {
			return nil
		}
		reason := "the server closed the connection"
		if st, ok := status.FromError(callErr); ok {
			reason = strings.TrimPrefix(st.Message(), "connection error: desc = ")
			reason = strings.Trim(reason, `"`)
		}
		return &TLSError{Addr: addr, Plaintext: true, Reason: reason,
			Hint: "the server may require TLS (--tls-ca/--tls-cert/--tls-key)"}
	}
	cfg := c.cfg.TLS.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = []string{"h2"}
	}
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err == nil {
		// In TLS 1.3 the server judges the client's certificate after the
		// client's side of the handshake: its verdict is the first thing
		// the client reads (an alert, or the server's HTTP/2 settings).
		deadline := time.Now().Add(time.Second)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		_ = conn.SetReadDeadline(deadline)
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
		if err == nil || !remoteAlert(err) {
			return nil
		}
	}
	e := &TLSError{Addr: addr}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		notTLS    tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknownCA):
		// Not unknownCA.Error(): its "(possibly because of ...)" suffix
		// names a candidate CA, which confuses more than it helps.
		e.Reason, e.Hint = "x509: certificate signed by unknown authority", "check --tls-ca"
	case errors.As(err, &hostname):
		e.Reason, e.Hint = hostname.Error(), "check the address, or the names in the server's certificate"
	case errors.As(err, &invalid):
		e.Reason, e.Hint = invalid.Error(), "check the server's certificate"
	case errors.As(err, &notTLS):
		e.Reason, e.Hint = "the server does not speak TLS", "the server may run without TLS: start it with --tls-cert/--tls-key/--tls-ca, or dial without them"
	case remoteAlert(err):
		e.Reason = "the server refused it: " + err.Error()
		e.Hint = "check --tls-cert and --tls-key: the server accepts only certificates signed by its CA"
		if !strings.Contains(err.Error(), "certificate") {
			e.Hint = "check the TLS settings of both sides"
		}
	default:
		return nil // EOF, reset, timeout: nothing certain
	}
	return e
}

// remoteAlert reports whether err is a TLS alert sent by the server.
func remoteAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

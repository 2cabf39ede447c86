package collective

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// overWire is err as a peer receives it over gRPC: the status proto
// marshalled and parsed again.
func overWire(t *testing.T, err error) error {
	t.Helper()
	b, merr := proto.Marshal(status.Convert(err).Proto())
	if merr != nil {
		t.Fatal(merr)
	}
	var p spb.Status
	if uerr := proto.Unmarshal(b, &p); uerr != nil {
		t.Fatal(uerr)
	}
	return status.FromProto(&p).Err()
}

// TestStatusRoundTrip: every sentinel survives toStatus, the wire and
// fromStatus; the ErrorInfo, not the text, names it; a status with only
// a code and a text (a raw transport reply) maps by the text as before.
func TestStatusRoundTrip(t *testing.T) {
	reasons := map[string]bool{}
	for _, m := range statusCodes {
		if reasons[m.reason] || m.reason == "" {
			t.Fatalf("reason %q of %v is empty or not unique", m.reason, m.err)
		}
		reasons[m.reason] = true
		err := fmt.Errorf("%w: ring %q", m.err, "r1")
		sent := overWire(t, toStatus(err))
		if st := status.Convert(sent); st.Code() != m.code || st.Message() != err.Error() {
			t.Errorf("%v: status %v %q", m.err, st.Code(), st.Message())
		}
		if back := fromStatus(sent); !errors.Is(back, m.err) || back.Error() != "peer: "+err.Error() {
			t.Errorf("%v: back as %v", m.err, back)
		}
		// A message that names no sentinel, or another one.
		for _, msg := range []string{"opaque", ErrChecksum.Error(), ErrStaleGeneration.Error()} {
			st, derr := status.New(m.code, msg).WithDetails(&errdetails.ErrorInfo{Reason: m.reason, Domain: errorDomain})
			if derr != nil {
				t.Fatal(derr)
			}
			if back := fromStatus(overWire(t, st.Err())); !errors.Is(back, m.err) {
				t.Errorf("%v with message %q: back as %v", m.err, msg, back)
			}
		}
		// Without the detail: by the text.
		if back := fromStatus(status.Error(codes.Unknown, err.Error())); !errors.Is(back, m.err) {
			t.Errorf("%v without a detail: back as %v", m.err, back)
		}
	}
	// Another domain's reason is not read; unplaced errors are ErrPeer.
	st, err := status.New(codes.Internal, "opaque").WithDetails(&errdetails.ErrorInfo{Reason: "CHECKSUM", Domain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if back := fromStatus(st.Err()); errors.Is(back, ErrChecksum) || !errors.Is(back, ErrPeer) {
		t.Fatalf("another domain: %v", back)
	}
	if back := fromStatus(toStatus(errors.New("boom"))); !errors.Is(back, ErrPeer) || back.Error() != "peer: Internal: boom" {
		t.Fatalf("internal: %v", back)
	}
}

func TestIsWireError(t *testing.T) {
	err := fmt.Errorf("%w: field 3", errWire)
	if !isWireError(err) || !isWireError(fmt.Errorf("recv: %w", err)) {
		t.Fatal("errWire in the chain")
	}
	// gRPC quotes a codec's error in a status's text.
	if !isWireError(status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)) {
		t.Fatal("errWire in a status's text")
	}
	if isWireError(status.Error(codes.Unavailable, "connection reset")) {
		t.Fatal("another error")
	}
}

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/rpcstatus"
)

// overWire is err as a client receives it: the status proto (which the
// grpc-status-details-bin trailer carries) marshalled and parsed again.
func overWire(t *testing.T, err error) error {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%v is not a status error", err)
	}
	b, merr := proto.Marshal(st.Proto())
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
// fromStatus, with its code, its text for humans and its ErrorInfo.
func TestStatusRoundTrip(t *testing.T) {
	reasons := map[string]bool{reasonNotLeader: true}
	for _, s := range sentinels {
		if reasons[s.reason] || s.reason == "" {
			t.Fatalf("reason %q of %v is empty or not unique", s.reason, s.err)
		}
		reasons[s.reason] = true
		err := fmt.Errorf("%w: worker %q", s.err, "w1")
		sent := overWire(t, toStatus(err))
		st, _ := status.FromError(sent)
		if st.Code() != s.code || st.Message() != err.Error() {
			t.Errorf("%v: status %v %q, want %v %q", s.err, st.Code(), st.Message(), s.code, err.Error())
		}
		info := rpcstatus.Info(st, errorDomain)
		if info == nil || info.GetReason() != s.reason || info.GetDomain() != errorDomain {
			t.Errorf("%v: ErrorInfo %v", s.err, info)
		}
		back := fromStatus(sent)
		if !errors.Is(back, s.err) || back.Error() != err.Error() || status.Code(back) != s.code {
			t.Errorf("%v: back as %v (%v)", s.err, back, status.Code(back))
		}
		// The detail, not the text, carries the sentinel: a message that
		// does not name it (or names another one) maps by the Reason.
		for _, msg := range []string{"opaque", "a different job is already submitted", "not leader; leader is x:1"} {
			back := fromStatus(overWire(t, rpcstatus.Error(s.code, msg, errorDomain, s.reason, nil)))
			if !errors.Is(back, s.err) || back.Error() != msg {
				t.Errorf("%v with message %q: back as %v", s.err, msg, back)
			}
			if _, ok := leaderHint(back); ok {
				t.Errorf("%v with message %q: a leader hint", s.err, msg)
			}
		}
		// The error the client returns keeps the detail.
		if st, _ := status.FromError(back); rpcstatus.Info(st, errorDomain).GetReason() != s.reason {
			t.Errorf("%v: the remote error lost its ErrorInfo", s.err)
		}
	}
}

func TestNotLeaderStatus(t *testing.T) {
	sent := overWire(t, toStatus(fmt.Errorf("apply: %w", &notLeaderError{addr: "10.0.0.2:7000"})))
	if status.Code(sent) != codes.FailedPrecondition || status.Convert(sent).Message() != "not leader; leader is 10.0.0.2:7000" {
		t.Fatalf("not leader: %v", sent)
	}
	if addr, ok := leaderHint(sent); !ok || addr != "10.0.0.2:7000" {
		t.Fatalf("leader hint %q %v", addr, ok)
	}
	if !errors.Is(fromStatus(sent), ErrNotLeader) || !retryable(sent) {
		t.Fatalf("fromStatus %v, retryable %v", fromStatus(sent), retryable(sent))
	}
	// The address travels in the detail: a message without it still
	// redirects.
	sent = overWire(t, rpcstatus.Error(codes.FailedPrecondition, "elsewhere", errorDomain, reasonNotLeader, map[string]string{leaderKey: "10.0.0.3:7000"}))
	if addr, ok := leaderHint(sent); !ok || addr != "10.0.0.3:7000" || !errors.Is(fromStatus(sent), ErrNotLeader) {
		t.Fatalf("detail-only not leader: %q %v %v", addr, ok, fromStatus(sent))
	}
	// No leader known: unavailable, no hint, still ErrNotLeader.
	sent = overWire(t, toStatus(&notLeaderError{}))
	if status.Code(sent) != codes.Unavailable || status.Convert(sent).Message() != "not leader; no leader known" {
		t.Fatalf("no leader: %v", sent)
	}
	if _, ok := leaderHint(sent); ok || !retryable(sent) || !errors.Is(fromStatus(sent), ErrNotLeader) {
		t.Fatalf("no leader: hint %v, retryable %v, %v", ok, retryable(sent), fromStatus(sent))
	}
	// A message that reads like a redirect but carries another reason is
	// not one.
	sent = overWire(t, rpcstatus.Error(codes.FailedPrecondition, notLeaderPrefix+"x:1", errorDomain, "JOB_DONE", nil))
	if _, ok := leaderHint(sent); ok || errors.Is(fromStatus(sent), ErrNotLeader) {
		t.Fatalf("JOB_DONE read as not leader: %v", fromStatus(sent))
	}
}

// TestStatusWithoutDetails: a status without an ErrorInfo of this domain
// (a coordinator of a version before the details) maps by code and text
// as it did; another domain's reason is not read.
func TestStatusWithoutDetails(t *testing.T) {
	if err := fromStatus(status.Error(codes.NotFound, "no job submitted")); !errors.Is(err, state.ErrNoJob) {
		t.Fatalf("legacy no job: %v", err)
	}
	if err := fromStatus(status.Error(codes.Aborted, "no job submitted")); errors.Is(err, state.ErrNoJob) {
		t.Fatalf("legacy text with another code: %v", err)
	}
	legacy := status.Error(codes.FailedPrecondition, "not leader; leader is 10.0.0.4:7000")
	if addr, ok := leaderHint(legacy); !ok || addr != "10.0.0.4:7000" || !errors.Is(fromStatus(legacy), ErrNotLeader) {
		t.Fatalf("legacy not leader: %q %v", addr, ok)
	}
	st, err := status.New(codes.NotFound, "opaque").WithDetails(&errdetails.ErrorInfo{Reason: "NO_JOB", Domain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if got := fromStatus(st.Err()); errors.Is(got, state.ErrNoJob) {
		t.Fatalf("another domain's reason read: %v", got)
	}
	// Context errors map by code.
	if err := fromStatus(toStatus(context.Canceled)); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
	if err := fromStatus(toStatus(fmt.Errorf("x: %w", context.DeadlineExceeded))); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	if err := toStatus(errors.New("boom")); status.Code(err) != codes.Internal || fromStatus(err) != err {
		t.Fatalf("internal: %v", err)
	}
}

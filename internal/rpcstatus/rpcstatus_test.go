package rpcstatus

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The detail survives the status error and is found by its domain only.
func TestRoundTrip(t *testing.T) {
	err := Error(codes.FailedPrecondition, "not leader; leader is x:1", "d", "NOT_LEADER", map[string]string{"leader": "x:1"})
	st, _ := status.FromError(err)
	if st.Code() != codes.FailedPrecondition || st.Message() != "not leader; leader is x:1" {
		t.Fatalf("status %v", st)
	}
	info := Info(st, "d")
	if info == nil || info.GetReason() != "NOT_LEADER" || info.GetMetadata()["leader"] != "x:1" {
		t.Fatalf("info %v", info)
	}
	if Info(st, "other") != nil {
		t.Fatal("found under another domain")
	}
	if Info(status.New(codes.Internal, "plain"), "d") != nil {
		t.Fatal("found in a status without details")
	}
}

// Package rpcstatus carries an error's identity across gRPC as a status
// detail (an errdetails.ErrorInfo of a domain and a stable reason), not as
// message text to match: the coordinator's and the collective's services
// both map their sentinel errors this way.
package rpcstatus

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a status error of code and msg carrying an ErrorInfo of domain
// with reason and metadata md (the status alone if the detail cannot be
// attached).
func Error(code codes.Code, msg, domain, reason string, md map[string]string) error {
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: domain, Metadata: md}); err == nil {
		st = d
	}
	return st.Err()
}

// Info is the ErrorInfo of domain that st carries, nil if none.
func Info(st *status.Status, domain string) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == domain {
			return info
		}
	}
	return nil
}

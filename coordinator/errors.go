package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/causalrm/causalrm/coordinator/state"
	"github.com/causalrm/causalrm/internal/rpcstatus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors of this package.
var (
	// ErrNotLeader: the node is not the raft leader. The error's text names
	// the leader's gRPC address when one is known.
	ErrNotLeader = errors.New("not leader")
	// ErrClosed: the node or client is closed.
	ErrClosed = errors.New("closed")
)

const notLeaderPrefix = "not leader; leader is "

type notLeaderError struct{ addr string }

func (e *notLeaderError) Error() string {
	if e.addr == "" {
		return "not leader; no leader known"
	}
	return notLeaderPrefix + e.addr
}

func (e *notLeaderError) Unwrap() error { return ErrNotLeader }

// A status error of this package carries an errdetails.ErrorInfo of
// errorDomain whose Reason names the sentinel (and, for a not-leader error,
// whose Metadata[leaderKey] is the leader's address): the client maps it
// back by Reason, not by the message text, which is for humans.
const (
	errorDomain     = "causalrm"
	reasonNotLeader = "NOT_LEADER"
	leaderKey       = "leader"
)

// sentinel codes and reasons: the one mapping between errors and gRPC
// codes and ErrorInfo reasons.
var sentinels = []struct {
	err    error
	code   codes.Code
	reason string
}{
	{state.ErrInvalidSpec, codes.InvalidArgument, "INVALID_SPEC"},
	{state.ErrInvalidArgument, codes.InvalidArgument, "INVALID_ARGUMENT"},
	{state.ErrNoJob, codes.NotFound, "NO_JOB"},
	{state.ErrNoCheckpoint, codes.NotFound, "NO_CHECKPOINT"},
	{state.ErrUnknownWorker, codes.NotFound, "UNKNOWN_WORKER"},
	{state.ErrJobExists, codes.AlreadyExists, "JOB_EXISTS"},
	{state.ErrConflict, codes.AlreadyExists, "CONFLICT"},
	{state.ErrStaleGeneration, codes.Aborted, "STALE_GENERATION"},
	{state.ErrJobFailed, codes.Aborted, "JOB_FAILED"},
	{state.ErrJobDone, codes.Aborted, "JOB_DONE"},
	{state.ErrChecksumMismatch, codes.DataLoss, "CHECKSUM_MISMATCH"},
}

// toStatus maps an error to a gRPC status error, at the service edge.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var nl *notLeaderError
	if errors.As(err, &nl) {
		if nl.addr == "" {
			return rpcstatus.Error(codes.Unavailable, nl.Error(), errorDomain, reasonNotLeader, nil)
		}
		return rpcstatus.Error(codes.FailedPrecondition, nl.Error(), errorDomain, reasonNotLeader, map[string]string{leaderKey: nl.addr})
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return rpcstatus.Error(s.code, err.Error(), errorDomain, s.reason, nil)
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// remoteError is an error received from a coordinator: its status with the
// sentinel it maps back to.
type remoteError struct {
	st       *status.Status
	sentinel error
}

func (e *remoteError) Error() string { return e.st.Message() }
func (e *remoteError) Unwrap() error { return e.sentinel }

// GRPCStatus keeps the code (and the details) visible to status.Code and
// status.FromError.
func (e *remoteError) GRPCStatus() *status.Status { return e.st }

// fromStatus maps a gRPC error back to this package's and state's sentinels,
// by the Reason of its ErrorInfo.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var sentinel error
	if info := rpcstatus.Info(st, errorDomain); info != nil {
		sentinel = sentinelOf(info.GetReason())
	} else {
		sentinel = legacySentinel(st)
	}
	if sentinel != nil {
		return &remoteError{st, sentinel}
	}
	switch st.Code() {
	case codes.Canceled:
		return fmt.Errorf("%s: %w", st.Message(), context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %w", st.Message(), context.DeadlineExceeded)
	}
	return err
}

// sentinelOf is the sentinel an ErrorInfo reason names, nil if none.
func sentinelOf(reason string) error {
	if reason == reasonNotLeader {
		return ErrNotLeader
	}
	for _, s := range sentinels {
		if s.reason == reason {
			return s.err
		}
	}
	return nil
}

// legacySentinel places a status without an ErrorInfo, as a coordinator
// of a version before the details sends it, by its code and text.
func legacySentinel(st *status.Status) error {
	msg := st.Message()
	if strings.HasPrefix(msg, "not leader") {
		return ErrNotLeader
	}
	for _, s := range sentinels {
		if st.Code() == s.code && strings.Contains(msg, s.err.Error()) {
			return s.err
		}
	}
	return nil
}

// leaderHint returns the leader address a not-leader error names.
func leaderHint(err error) (string, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return "", false
	}
	if info := rpcstatus.Info(st, errorDomain); info != nil {
		addr := info.GetMetadata()[leaderKey]
		return addr, info.GetReason() == reasonNotLeader && addr != ""
	}
	// A coordinator of a version before the details.
	if st.Code() != codes.FailedPrecondition || !strings.HasPrefix(st.Message(), notLeaderPrefix) {
		return "", false
	}
	return strings.TrimPrefix(st.Message(), notLeaderPrefix), true
}

// retryable reports whether err means "try again, maybe elsewhere".
func retryable(err error) bool {
	if _, ok := leaderHint(err); ok {
		return true
	}
	return status.Code(err) == codes.Unavailable
}

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/causalrm/causalrm/coordinator/state"
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

// sentinel codes: the one mapping between errors and gRPC codes.
var sentinels = []struct {
	err  error
	code codes.Code
}{
	{state.ErrInvalidSpec, codes.InvalidArgument},
	{state.ErrInvalidArgument, codes.InvalidArgument},
	{state.ErrNoJob, codes.NotFound},
	{state.ErrNoCheckpoint, codes.NotFound},
	{state.ErrUnknownWorker, codes.NotFound},
	{state.ErrJobExists, codes.AlreadyExists},
	{state.ErrConflict, codes.AlreadyExists},
	{state.ErrStaleGeneration, codes.Aborted},
	{state.ErrJobFailed, codes.Aborted},
	{state.ErrJobDone, codes.Aborted},
	{state.ErrChecksumMismatch, codes.DataLoss},
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
			return status.Error(codes.Unavailable, nl.Error())
		}
		return status.Error(codes.FailedPrecondition, nl.Error())
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return status.Error(s.code, err.Error())
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

// remoteError is an error received from a coordinator: its message with the
// sentinel it maps back to.
type remoteError struct {
	code     codes.Code
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// GRPCStatus keeps the code visible to status.Code.
func (e *remoteError) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }

// fromStatus maps a gRPC error back to this package's and state's sentinels.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	if strings.HasPrefix(msg, "not leader") {
		return &remoteError{st.Code(), msg, ErrNotLeader}
	}
	for _, s := range sentinels {
		if st.Code() == s.code && strings.Contains(msg, s.err.Error()) {
			return &remoteError{st.Code(), msg, s.err}
		}
	}
	switch st.Code() {
	case codes.Canceled:
		return fmt.Errorf("%s: %w", msg, context.Canceled)
	case codes.DeadlineExceeded:
		return fmt.Errorf("%s: %w", msg, context.DeadlineExceeded)
	}
	return err
}

// leaderHint returns the leader address a not-leader error names.
func leaderHint(err error) (string, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition || !strings.HasPrefix(st.Message(), notLeaderPrefix) {
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

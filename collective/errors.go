package collective

import (
	"errors"
	"strings"

	"github.com/causalrm/causalrm/internal/rpcstatus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors. Every error a Ring returns wraps one of them with %w, so
// callers test with errors.Is. A collective call that fails on a rank leaves
// the Ring broken (ErrBroken on every later call): the worker reports it and
// a new generation makes a new Ring.
var (
	// ErrStaleGeneration: a message from another ring, another generation
	// or a rank that is not this rank's predecessor (fencing).
	ErrStaleGeneration = errors.New("collective: stale generation")
	// ErrWrongStep: a segment of another op sequence number, phase or
	// ring step than the op running, or a duplicate.
	ErrWrongStep = errors.New("collective: wrong op sequence or step")
	// ErrChecksum: a payload whose CRC-32C does not match, or a state
	// snapshot whose sha256 does not.
	ErrChecksum = errors.New("collective: checksum mismatch")
	// ErrOversized: a message or payload larger than the limit for it.
	ErrOversized = errors.New("collective: oversized message")
	// ErrNonFinite: a NaN or infinity in a floating-point segment.
	ErrNonFinite = errors.New("collective: non-finite value")
	// ErrShape: element type, codec, vector length, element count or
	// decoded size that does not match what the op expects.
	ErrShape = errors.New("collective: shape mismatch")
	// ErrPeer: a peer aborted its op or the stream to it failed.
	ErrPeer = errors.New("collective: peer failed")
	// ErrBroken: an earlier call on this Ring failed.
	ErrBroken = errors.New("collective: ring broken by an earlier failure")
	// ErrClosed: the Ring is closed.
	ErrClosed = errors.New("collective: ring closed")
	// ErrNoState: no state snapshot (of the wanted step) is published.
	ErrNoState = errors.New("collective: no state snapshot")
	// ErrConfig: an invalid Config.
	ErrConfig = errors.New("collective: invalid config")
)

// A status error of this package carries an errdetails.ErrorInfo of
// errorDomain whose Reason names the sentinel; a peer maps it back by
// Reason. The message text is for humans, and for the raw transport's
// replies, which carry only a code and the text.
const errorDomain = "collective.causalrm"

// statusCodes is the one mapping of the sentinels to gRPC codes and
// ErrorInfo reasons, used at the service edge (Barrier, StateTransfer,
// stream termination).
var statusCodes = []struct {
	err    error
	code   codes.Code
	reason string
}{
	{ErrStaleGeneration, codes.FailedPrecondition, "STALE_GENERATION"},
	{ErrWrongStep, codes.OutOfRange, "WRONG_STEP"},
	{ErrChecksum, codes.DataLoss, "CHECKSUM"},
	{ErrOversized, codes.ResourceExhausted, "OVERSIZED"},
	{ErrNonFinite, codes.InvalidArgument, "NON_FINITE"},
	{ErrShape, codes.InvalidArgument, "SHAPE"},
	{ErrNoState, codes.NotFound, "NO_STATE"},
	{ErrClosed, codes.Unavailable, "CLOSED"},
	{ErrBroken, codes.Aborted, "BROKEN"},
	{ErrPeer, codes.Aborted, "PEER"},
}

// toStatus turns an error of this package into a gRPC status error.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	for _, m := range statusCodes {
		if errors.Is(err, m.err) {
			return rpcstatus.Error(m.code, err.Error(), errorDomain, m.reason, nil)
		}
	}
	return status.Error(codes.Internal, err.Error())
}

// fromStatus turns a gRPC status error from a peer back into the sentinel
// its ErrorInfo names; without one (a raw transport reply, or a peer of a
// version before the details) into the sentinel its message names (the
// sentinel texts are unique), else by code; errors it cannot place wrap
// ErrPeer.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if info := rpcstatus.Info(st, errorDomain); info != nil {
		for _, m := range statusCodes {
			if info.GetReason() == m.reason {
				return &remoteError{sentinel: m.err, msg: st.Message()}
			}
		}
	} else {
		for _, m := range statusCodes {
			if strings.Contains(st.Message(), m.err.Error()) {
				return &remoteError{sentinel: m.err, msg: st.Message()}
			}
		}
	}
	switch st.Code() {
	case codes.ResourceExhausted:
		return &remoteError{sentinel: ErrOversized, msg: st.Message()}
	case codes.Canceled:
		return err
	case codes.DeadlineExceeded:
		return err
	}
	return &remoteError{sentinel: ErrPeer, msg: st.Code().String() + ": " + st.Message()}
}

// isWireError reports whether err, from a gRPC stream's RecvMsg, is a
// malformed segment (errWire). gRPC reports a codec's error as a status
// whose message quotes it with %v (rpc_util.go: "grpc: failed to
// unmarshal the received message: ..."), so the chain is gone and only the
// text can tell; errors.Is covers the errors that keep it.
func isWireError(err error) bool {
	return errors.Is(err, errWire) || strings.Contains(err.Error(), errWire.Error())
}

// remoteError is a sentinel reported by a peer, with the peer's message.
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return "peer: " + e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

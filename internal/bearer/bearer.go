// Package bearer is the job token of every gRPC service of a job: servers
// accept a call only with exactly one "authorization: Bearer <token>"
// value equal to theirs (compared in constant time), clients send it.
package bearer

import (
	"context"
	"crypto/subtle"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Check returns codes.Unauthenticated unless ctx carries exactly one
// authorization value, "Bearer " followed by token.
func Check(ctx context.Context, token string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("authorization")
	if len(v) != 1 || subtle.ConstantTimeCompare([]byte(v[0]), []byte("Bearer "+token)) != 1 {
		return status.Error(codes.Unauthenticated, "missing or wrong job token")
	}
	return nil
}

// ServerOptions are the interceptors that check every call but those of
// methods whose full name starts with one of the exempt prefixes (the
// health service, say). An empty token checks nothing.
func ServerOptions(token string, exempt ...string) []grpc.ServerOption {
	if token == "" {
		return nil
	}
	skip := func(method string) bool {
		for _, p := range exempt {
			if strings.HasPrefix(method, p) {
				return true
			}
		}
		return false
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			if !skip(info.FullMethod) {
				if err := Check(ctx, token); err != nil {
					return nil, err
				}
			}
			return next(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, next grpc.StreamHandler) error {
			if !skip(info.FullMethod) {
				if err := Check(ss.Context(), token); err != nil {
					return err
				}
			}
			return next(srv, ss)
		}),
	}
}

// Creds sends the token on every call of a client connection.
type Creds struct {
	Token  string
	Secure bool // require TLS (set when the connection uses it)
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c Creds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + c.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (c Creds) RequireTransportSecurity() bool { return c.Secure }

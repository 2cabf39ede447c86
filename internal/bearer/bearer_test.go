package bearer

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestCheck(t *testing.T) {
	ctx := func(vals ...string) context.Context {
		md := metadata.MD{}
		for _, v := range vals {
			md.Append("authorization", v)
		}
		return metadata.NewIncomingContext(context.Background(), md)
	}
	if err := Check(ctx("Bearer s3cret"), "s3cret"); err != nil {
		t.Fatalf("the right token: %v", err)
	}
	for name, c := range map[string]context.Context{
		"none":       context.Background(),
		"wrong":      ctx("Bearer s3cre7"),
		"no scheme":  ctx("s3cret"),
		"prefix":     ctx("Bearer s3c"),
		"longer":     ctx("Bearer s3cret!"),
		"two values": ctx("Bearer s3cret", "Bearer s3cret"),
	} {
		if err := Check(c, "s3cret"); status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: want Unauthenticated, got %v", name, err)
		}
	}
	md, _ := Creds{Token: "s3cret"}.GetRequestMetadata(context.Background())
	if err := Check(ctx(md["authorization"]), "s3cret"); err != nil {
		t.Fatalf("what Creds sends is refused: %v", err)
	}
}

// The worker's side of the Client: membership, heartbeats, the
// generation watch and progress reports.

package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/causalrm/causalrm/coordinator/state"
	pb "github.com/causalrm/causalrm/proto/coordinatorpb"
)

// Register registers worker id with its collective address.
func (c *Client) Register(ctx context.Context, id, addr string) error {
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.Register(ctx, &pb.RegisterRequest{Worker: &pb.Member{Id: id, Addr: addr}})
		return err
	})
}

// Leave asks for a generation without worker id (graceful leave).
func (c *Client) Leave(ctx context.Context, id string) error {
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.Leave(ctx, &pb.LeaveRequest{WorkerId: id})
		return err
	})
}

// Activated tells the coordinators that worker id now trains in the ring of
// generation gen, so it holds the job's state.
func (c *Client) Activated(ctx context.Context, id string, gen uint64) error {
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.Activate(ctx, &pb.ActivateRequest{WorkerId: id, Generation: gen})
		return err
	})
}

// LinkFailed tells the coordinators that a data-plane link of worker id's
// ring in generation gen failed while it is alive (why says how); the
// leader relinks the members with a new generation unless a crash
// generation comes first.
func (c *Client) LinkFailed(ctx context.Context, id string, gen uint64, why string) error {
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.ReportLinkFailure(ctx, &pb.LinkFailureRequest{WorkerId: id, Generation: gen, Message: why})
		return err
	})
}

// Heartbeat keeps worker id's heartbeat stream to the leader open, re-opening
// it after a failover, until ctx ends (it returns ctx.Err()) or the group
// refuses the worker for good (unauthenticated, removed, job failed or done).
func (c *Client) Heartbeat(ctx context.Context, id string) error {
	return c.reconnect(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := cl.Heartbeat(ctx)
		if err != nil {
			return err
		}
		recv := make(chan error, 1)
		go func() {
			for {
				if _, err := stream.Recv(); err != nil {
					recv <- err
					return
				}
			}
		}()
		t := time.NewTicker(c.cfg.HeartbeatInterval)
		defer t.Stop()
		for {
			if err := stream.Send(&pb.Beat{WorkerId: id}); err != nil {
				cancel()
				return <-recv // the stream's real status
			}
			select {
			case err := <-recv:
				return err
			case <-t.C:
			}
		}
	})
}

// WatchGenerations delivers every generation newer than after (after = 0:
// starting with the current one), in order and once, across failovers. The
// error channel gets a permanent error (job failed, unauthenticated) or
// ctx's error; both channels are closed when the watch ends (also when the
// job is done).
func (c *Client) WatchGenerations(ctx context.Context, after uint64) (<-chan state.Generation, <-chan error) {
	gens := make(chan state.Generation, 16)
	errc := make(chan error, 1)
	go func() {
		defer close(gens)
		defer close(errc)
		last := after
		errDone := errors.New("done")
		err := c.reconnect(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
			stream, err := cl.WatchGenerations(ctx, &pb.WatchRequest{After: last})
			if err != nil {
				return err
			}
			for {
				ev, err := stream.Recv()
				if err != nil {
					return err
				}
				switch e := ev.Event.(type) {
				case *pb.WatchEvent_Generation:
					g, err := genFromPB(e.Generation)
					if err != nil {
						return toStatus(err)
					}
					if g.Number <= last && last != 0 {
						continue
					}
					select {
					case gens <- g:
						last = g.Number
					case <-ctx.Done():
						return ctx.Err()
					}
				case *pb.WatchEvent_Status:
					st := statusFromPB(e.Status)
					switch st.Phase {
					case state.JobFailed:
						return toStatus(fmt.Errorf("%w: %s", state.ErrJobFailed, st.Message))
					case state.JobDone:
						return errDone
					}
				}
			}
		})
		if err != nil && !errors.Is(err, errDone) {
			errc <- err
		}
	}()
	return gens, errc
}

// ReportProgress reports progress; an error wraps state.ErrJobFailed when
// the job has failed (with its message).
func (c *Client) ReportProgress(ctx context.Context, p state.Progress) error {
	if p.Time == 0 {
		p.Time = time.Now().UnixNano()
	}
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.ReportProgress(ctx, progressToPB(p))
		return err
	})
}

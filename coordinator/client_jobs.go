// The job's side of the Client: submit, look up, finish, fail, status.

package coordinator

import (
	"context"
	"encoding/json"

	"github.com/causalrm/causalrm/coordinator/state"
	pb "github.com/causalrm/causalrm/proto/coordinatorpb"
)

// SubmitJob submits the job (idempotent for the same spec). A malformed spec
// is refused with an error naming the field.
func (c *Client) SubmitJob(ctx context.Context, spec state.JobSpec) error {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return err
	}
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.SubmitJob(ctx, &pb.SubmitJobRequest{Job: specToPB(spec)})
		return err
	})
}

// Job returns the submitted job, ErrNoJob if none.
func (c *Client) Job(ctx context.Context) (*state.JobSpec, error) {
	var j *state.JobSpec
	err := c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		r, err := cl.GetJob(ctx, &pb.GetJobRequest{})
		if err == nil {
			s := specFromPB(r.Job)
			j = &s
		}
		return err
	})
	return j, err
}

// Finish marks the job done with the reward model's sha256.
func (c *Client) Finish(ctx context.Context, rewardSHA string) error {
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.FinishJob(ctx, &pb.FinishJobRequest{RewardSha256: rewardSHA})
		return err
	})
}

// Fail marks the job failed with msg.
func (c *Client) Fail(ctx context.Context, msg string) error {
	return c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		_, err := cl.FailJob(ctx, &pb.FailJobRequest{Message: msg})
		return err
	})
}

// Status returns the group's and the job's status from the leader.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, func(ctx context.Context, cl pb.CoordinatorClient) error {
		r, err := cl.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			return err
		}
		st = Status{}
		return json.Unmarshal(r.StatusJson, &st)
	})
	return st, err
}
